"""`merclip eval`: a checkpoint (or a reference predictor) scored on a split of the configured dataset, as the
monitor reads it (its windows) or as whole clips; the paper's tables printed, the metrics and a reliability
diagram written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from merclip.model.reading import ReadingSetting, ignored_asks
from rich.console import Console
from rich.table import Table

from merclip.config import load_config, override
from merclip.errors import MerClipError

from .outputs import _check_output_file, _is_metrics_json, _write_json
from .splits import _cache_dir, _check_splits, _datasets, _with_dataset_defaults

console = Console(stderr=True, soft_wrap=True)


def _score_checkpoint(args, model) -> tuple[dict, dict, str]:
    """Evaluate a loaded checkpoint on ``args.split`` (one half of it with ``--half``): (metrics, outputs, title)."""
    import torch

    from .loop import evaluate

    mcfg = model.cfg
    cfg = override(load_config(args.config), train={"dataset": args.dataset, "data_root": args.data_root,
                                                    "allow_partial": True if args.allow_partial else None},
                   model={"modalities": mcfg.modalities, "emotion_mode": mcfg.emotion_mode},
                   labels={"emotion": mcfg.emotion_labels, "sentiment": mcfg.sentiment_labels})  # fmt: skip
    (split,) = _datasets(cfg, (args.split,))
    if len(split) == 0:
        raise MerClipError(f"no {args.split} clips in {cfg.train.data_root or _cache_dir(cfg)}")
    partial = _check_splits(cfg, (split,), split.info)
    lost = split.info.get("lost", {}).get(args.split)
    protocol, setting = scoring_protocol(args, mcfg.reading, cfg.capture)
    if protocol == "windows" and mcfg.reading is not None:  # scored as the monitor reads it, whatever the config
        skip = ("context",) if getattr(args, "context", None) else ()
        for notice in ignored_asks(cfg.asked("capture"), setting, "the checkpoint", skip):
            console.print(notice, markup=False, highlight=False)
    counted, scope = _cut(split, args, protocol, setting, lost)
    from merclip.model.tokenizer import ClipTokenizer
    from torch.utils.data import DataLoader

    from .data import Collate

    tokenizer = ClipTokenizer.default(mcfg.text_context_length)
    from merclip.model import build_prompts

    prompts = build_prompts(mcfg, tokenizer) if mcfg.uses_label_encoder else None
    loader = DataLoader(split, batch_size=32, collate_fn=Collate(tokenizer, model.arch.image_mean,
                                                                 model.arch.image_std,
                                                                 mcfg.emotion_mode == "single_label"))  # fmt: skip
    from .loop import resolve_task

    task = resolve_task(cfg.train.task, cfg.train.dataset)
    outputs: dict = {}
    metrics = evaluate(model, loader, prompts, torch.device("cpu"), task, cfg.labels.emotion_threshold, outputs)
    metrics.update(scope)
    metrics["partial"] = bool(partial)
    half = scope.get("half")
    where = f"half {half} of " if half else ""
    title = f"{cfg.train.dataset} {where}{args.split} ({counted}{', partial' if partial else ''})"
    return metrics, outputs, title


def _cut(split, args, protocol: str, setting: ReadingSetting, lost) -> tuple[str, dict]:
    """Turn ``split`` into what is scored (one half of it with ``--half``; with the windows protocol, each
    clip's windows) and say so: (what is counted, for the title; the metrics that say what was scored)."""
    half = getattr(args, "half", None)
    if half:  # alternate clips in file order: half 1 = 1st, 3rd, ...; half 2 = 2nd, 4th, ...
        split.entries = split.entries[half - 1 :: 2]
    clips, unread = len(split), 0
    if protocol == "windows":
        from .windows import window_entries

        split.entries = window_entries(split.entries, setting)
        # A clip shorter than the monitor's shortest window (MELD has spans of 0.1 s) gives no window: said,
        # not hidden in the count of clips.
        unread = clips - len({e["clip_id"] for e in split.entries})
    counted = f"{len(split)} windows of {clips} clips" if protocol == "windows" else f"{clips} clips"
    read = f" ({setting.describe()})" if protocol == "windows" else ""
    console.print(f"scoring {counted}{read} of the {args.split} split" + (f" (half {half})" if half else "")
                  + (f"; {lost} lost in prepare" if lost is not None else "")
                  + (f"; not scored: {unread} clip(s) too short for a window" if unread else ""))  # fmt: skip
    scope: dict = {"n": len(split), "protocol": protocol, "clips": clips}
    if protocol == "windows":
        scope.update(reading=setting.to_json(), clips_without_windows=unread)
    if half:
        scope["half"] = half
    if lost is not None:
        scope["lost_in_prepare"] = lost
    return counted, scope


def scoring_protocol(args, reading: ReadingSetting | None, capture) -> tuple[str, ReadingSetting]:
    """(protocol, reading setting) for eval and calibrate: the monitor's windows by default for a model that
    records how it reads them (``reading``: trained by this version), whole clips for older ones and for the
    reference predictors, whose windows (asked with ``--protocol windows``) are read as an untrained model's
    bundle reads them: as ``capture`` (the config) says. ``--context`` reads the windows another way, to
    measure the choice."""
    from dataclasses import replace

    protocol = getattr(args, "protocol", None) or ("windows" if reading is not None else "clips")
    setting = reading or ReadingSetting.for_untrained(capture.context, capture.window_s, capture.hop_s,
                                                      capture.frames_per_window)  # fmt: skip
    if getattr(args, "context", None):
        if protocol != "windows":
            raise MerClipError("--context reads the monitor's windows: use it with --protocol windows")
        setting = replace(setting, context=args.context)
    return protocol, setting


def reliability_path(json_path: str | Path) -> Path:
    """The reliability diagram written beside a metrics JSON: metrics.json -> metrics.reliability.png."""
    path = Path(json_path).expanduser()
    return path.with_name(f"{path.stem}.reliability.png")


def _reliability_panels(model, outputs: dict) -> list:
    from .calibration import calibrated

    cal, panels = model.calibration, []
    settings = [("raw", type(cal)())] + ([] if cal.identity else [("calibrated", cal)])
    for task in ("emotion", "sentiment"):
        logits, targets = outputs[f"{task}_logits"], outputs[f"{task}_targets"]
        if not len(targets):
            continue
        multi = task == "emotion" and outputs["multi_label"]
        for name, c in settings:
            scale = c.emotion_scale if task == "emotion" else c.sentiment_scale
            p = calibrated(logits, multi, scale, c.emotion_bias if multi else 0.0)
            if multi:
                panels.append((f"{task} ({name}, every label)", p.ravel(), (targets > 0).ravel()))
            else:
                panels.append((f"{task} ({name}, top class)", p.max(1), p.argmax(1) == targets))
    return panels


def cmd_eval(args) -> int:
    from merclip.model import load_checkpoint

    _check_output_file(args.json, "--json", _is_metrics_json, "a metrics file of merclip eval")
    if args.baseline:
        return _eval_baseline(args)
    model, _ = load_checkpoint(args.checkpoint)
    metrics, outputs, title = _score_checkpoint(args, model)
    print_tables(metrics, title)
    if args.json:
        _write_json(args.json, metrics)
        from .calibration import plot_reliability

        panels = _reliability_panels(model, outputs)
        if panels:
            plot_reliability(panels, reliability_path(args.json))
            console.print(f"reliability diagram: {reliability_path(args.json)}")
    return 0


def _eval_baseline(args) -> int:
    from .baselines import predict
    from .metrics import single_label_metrics

    cfg = override(load_config(args.config), train={"dataset": args.dataset, "data_root": args.data_root,
                                                    "allow_partial": True if args.allow_partial else None},
                   model={"modalities": "L"})  # fmt: skip
    cfg = _with_dataset_defaults(cfg, cfg.train.dataset)
    if cfg.model.emotion_mode != "single_label":
        raise MerClipError("baselines are for single-label text datasets such as MELD")
    train_ds, split = _datasets(cfg, ("train", args.split))
    # fit on the train split's whole clips; scored on whole clips or, with --protocol windows, on the readings
    # the monitor would make (each window's text by the config's reading context, as an untrained bundle reads)
    train_texts = [e["text"] for e in train_ds.entries]
    y_train = {"": [train_ds.emotion_target(e) for e in train_ds.entries],
               "sentiment_": [train_ds.sentiment_target(e.get("sentiment")) for e in train_ds.entries]}  # fmt: skip
    protocol, setting = scoring_protocol(args, None, cfg.capture)
    counted, metrics = _cut(split, args, protocol, setting, None)
    texts = [e["text"] for e in split.entries]
    for task in ("", "sentiment_"):
        y = [split.emotion_target(e) if not task else split.sentiment_target(e.get("sentiment")) for e in split.entries]
        pred = predict(args.baseline, train_texts, y_train[task], texts)
        metrics.update({f"{task}{k}": v for k, v in single_label_metrics(np.asarray(y), pred).items()})
    print_tables(metrics, f"{args.baseline} baseline, {cfg.train.dataset} {args.split} ({counted})")
    if args.json:
        _write_json(args.json, metrics)
    return 0


def print_tables(metrics: dict, title: str) -> None:
    """The paper's layout: Table 1 (emotion) and Table 2 (sentiment), in percent."""
    out = Console()

    def pct(key):
        value = metrics.get(key)
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"

    if "micro_f1" in metrics:
        table = Table(title=f"Emotion — {title}")
        for col in ("Accuracy(%)", "Precision(%)", "Recall(%)", "Micro-F1(%)"):
            table.add_column(col, justify="right")
        table.add_row(pct("accuracy"), pct("precision"), pct("recall"), pct("micro_f1"))
        out.print(table)
    if "weighted_f1" in metrics:
        table = Table(title=f"Emotion (single-label) — {title}")
        table.add_column("Accuracy(%)", justify="right")
        table.add_column("Weighted-F1(%)", justify="right")
        table.add_row(pct("accuracy"), pct("weighted_f1"))
        out.print(table)
    table = Table(title=f"Sentiment — {title}")
    if "acc2" in metrics:
        table.add_column("ACC2(%)", justify="right")
        table.add_column("F1(%)", justify="right")
        table.add_row(pct("acc2"), pct("f1"))
    else:
        table.add_column("Accuracy(%)", justify="right")
        table.add_column("Weighted-F1(%)", justify="right")
        table.add_row(pct("sentiment_accuracy"), pct("sentiment_weighted_f1"))
    out.print(table)
    if any(k.endswith("_ece") for k in metrics):
        table = Table(title=f"Calibration — {title} (ECE: 15 bins)")
        for col in ("task", "probabilities", "ECE", "Brier", "NLL", "mean confidence"):
            table.add_column(col, justify="left" if col in ("task", "probabilities") else "right")
        for task in ("emotion", "sentiment"):
            for suffix, name in (("_uncalibrated", "raw"), ("", "as output")):
                if f"{task}_ece{suffix}" in metrics:
                    table.add_row(task, name, *(f"{metrics[f'{task}_{k}{suffix}']:.3f}"
                                                for k in ("ece", "brier", "nll", "confidence")))  # fmt: skip
        out.print(table)
