"""`merclip prepare`, `merclip train`, `merclip eval` (and `torchrun -m merclip.train`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np
from merclip.model.config import model_config
from merclip.model.face import face_setting
from rich.console import Console
from rich.table import Table

from merclip.config import Config, load_config, override, weights_flag
from merclip.errors import MerClipError

from .datasets import MELD_EMOTIONS, MELD_SENTIMENTS, SPLITS, JoinReport, load_dataset, split_shortfall

# Defaults that differ by dataset, applied where the user set nothing: the synthetic set trains a randomly
# initialised tiny model from scratch (the paper's 8e-6 is for fine-tuning pretrained CLIP), MOSI uses the
# paper's own lr and batch, MELD is single-label over 7 emotions and 3 sentiments.
DATASET_DEFAULTS = {
    "synthetic": {"train": {"lr": 1e-3, "epochs": 6, "frames": 2}},
    "mosi": {"train": {"lr": 2.2e-5, "batch_size": 8}},
    "meld": {"labels": {"emotion": MELD_EMOTIONS, "sentiment": MELD_SENTIMENTS},
             "model": {"emotion_mode": "single_label"}},
}  # fmt: skip
SYNTHETIC_CLIPS = 400
RANDOM_INIT_LR = 5e-4
console = Console(stderr=True, soft_wrap=True)


def _with_dataset_defaults(cfg: Config, dataset: str, explicit: dict) -> Config:
    """Apply DATASET_DEFAULTS for keys still at their packaged default and not given on the command line."""
    changes = {}
    for section, values in DATASET_DEFAULTS.get(dataset, {}).items():
        current = getattr(cfg, section)
        default = type(current)()
        keep = {k: v for k, v in values.items() if getattr(current, k) == getattr(default, k) and k not in explicit}
        if keep:
            changes[section] = keep
    return override(cfg, **changes) if changes else cfg


def _check_output_file(path: str | None, flag: str, replaceable=None, what: str = "") -> None:
    """Refuse an output file that cannot be written, before the work that fills it. With ``replaceable``
    (a test of the file already there), an existing file is only replaced when it is ``what`` (something
    this command wrote), never a user's other file."""
    if not path:
        return
    target = Path(path).expanduser()
    try:
        if target.is_dir():
            raise MerClipError(f"{flag} {target} is a folder: give a file name, e.g. {target / 'metrics.json'}")
        if target.exists() and not target.is_file():
            raise MerClipError(f"{flag} {target} is not a regular file")
        if replaceable is not None and target.exists() and not replaceable(target):
            raise MerClipError(f"{flag} {target} exists and is not {what}: not overwritten (choose another name)")
        if not target.parent.is_dir():
            what = "does not exist" if not target.parent.exists() else "is not a folder"
            raise MerClipError(f"{flag} {target}: {target.parent} {what}")
        if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
            raise MerClipError(f"{flag} {target} is not writable (permission denied)")
    except OSError as err:
        raise MerClipError(f"{flag} {_short(path)} is unusable: {err.strerror}") from None


def _is_metrics_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and any(k in data for k in ("accuracy", "emotion_accuracy", "sentiment_accuracy"))


def _is_checkpoint(path: Path) -> bool:
    from merclip.model.checkpoint import read_checkpoint_config

    try:
        read_checkpoint_config(path)
    except MerClipError:
        return False
    return True


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _write_json(path: str, metrics: dict) -> None:
    try:
        Path(path).expanduser().write_text(json.dumps(metrics, indent=2))
    except OSError as err:
        raise MerClipError(f"cannot write --json {_short(path)}: {err.strerror}") from None


def _cache_dir(cfg: Config) -> Path:
    if cfg.train.cache_dir:
        return Path(cfg.train.cache_dir).expanduser()
    if cfg.train.dataset == "synthetic":
        return Path(cfg.train.data_root or Path(cfg.train.out) / "synthetic-cache").expanduser()
    return Path(cfg.train.data_root).expanduser() / ".merclip-cache"


def cmd_prepare(args) -> int:
    from .cache import prepare
    from .synthetic import generate

    cfg = override(load_config(args.config), train={"dataset": args.dataset, "data_root": args.data_root,
                                                    "cache_dir": args.cache_dir, "frames": args.frames})  # fmt: skip
    if args.synthetic:
        cache = Path(args.cache_dir or args.data_root or "synthetic-cache")
        face = face_setting(cfg, auto="off")  # "auto": the synthetic frames hold no face
        n = generate(cache, args.synthetic, informative=args.informative, frames=args.frames or 2, face=face,
                     seconds=args.seconds, reading=_cache_reading(cfg))  # fmt: skip
        console.print(f"wrote {n} synthetic {args.seconds:g}-s clips ({args.informative} informative) to {cache}")
        return 0
    if cfg.train.dataset == "synthetic":
        raise MerClipError("use `merclip prepare --synthetic N --cache-dir DIR` for the synthetic set")
    clips, join = load_dataset(cfg.train.dataset, cfg.train.data_root, cfg.labels.emotion)
    if join is not None:
        console.print(join.summary())
    face = face_setting(cfg)
    reading, recognizer = _cut_for_windows(cfg, clips)
    report = prepare(clips, _cache_dir(cfg), frames=cfg.train.frames, face=face, reading=reading,
                     recognizer=recognizer)  # fmt: skip
    # what the label file had and what prepare lost, per split: train/eval check and report them
    lost = {c for c, _ in report.skipped}
    info = {
        "dataset": cfg.train.dataset,
        "labelled": {s: sum(c.split == s for c in clips) for s in SPLITS},
        "lost": {s: sum(c.split == s and c.clip_id in lost for c in clips) for s in SPLITS},
        "join": join.to_json() if join is not None else None,
    }
    (_cache_dir(cfg) / "dataset.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    console.print(f"prepared {report.written} clips ({face.describe()}) into {_cache_dir(cfg)}; "
                  f"{len(report.skipped)} skipped (listed in {report.report_path})")  # fmt: skip
    return 0


def _cache_reading(cfg: Config):
    """How `prepare` cuts clips with media into the monitor's windows: capture.window_s, hop_s and
    frames_per_window (the context is chosen when training; the cache holds every word's time)."""
    from merclip.model.reading import ReadingSetting

    cap = cfg.capture
    return ReadingSetting("window", cap.window_s, cap.hop_s, cap.frames_per_window)


def _cut_for_windows(cfg: Config, clips):
    """(how `prepare` cuts clips with media into windows, the Whisper that times their words: asr.model;
    None with asr.enabled = false)."""
    reading = _cache_reading(cfg)
    if not cfg.asr.enabled or not any(c.media and c.text.strip() for c in clips):
        return reading, None
    from merclip.stream.transcriber import WhisperOptions, WhisperRecognizer

    recognizer = WhisperRecognizer(WhisperOptions.from_config(cfg.asr, reading.window_s))
    if recognizer.notice:
        console.print(recognizer.notice)
    console.print(f"word times: Whisper {recognizer.source}, on each clip's audio")
    return reading, recognizer


def _dataset_info(cfg: Config) -> dict:
    """What `merclip prepare` recorded (label-file counts, clips lost, the emotion join), else {}."""
    path = _cache_dir(cfg) / "dataset.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _check_task_data(cfg: Config, task: str, info: dict) -> None:
    """Refuse an emotion task the data cannot support, in one line that says why."""
    if task == "sentiment":
        return
    if cfg.train.dataset == "mosi":
        raise MerClipError(f"CMU-MOSI has no emotion labels: --task {task} is impossible (use --task sentiment)")
    if cfg.train.dataset == "mosei":
        join = info.get("join")
        if join is None:
            raise MerClipError(
                "the emotion task on CMU-MOSEI needs a cache prepared by this version (it verifies the "
                "CMU_MOSEI_Labels.csd join): run `merclip prepare` again, or train with --task sentiment"
            )
        JoinReport(**join).require()


def _check_splits(cfg: Config, splits, info: dict) -> str:
    """Refuse a MOSI/MOSEI split smaller than the published one unless allowed; returns "" or "partial"."""
    counts = {ds.split: len(ds) for ds in splits}
    short = split_shortfall(counts, cfg.train.dataset)
    if not short:
        return ""
    lost = info.get("lost", {})
    where = ", ".join(f"{s} {counts[s]} ({n} short, {lost.get(s, 0)} lost in prepare)" for s, n in short.items())
    if not cfg.train.allow_partial:
        raise MerClipError(
            f"{cfg.train.dataset} splits are incomplete: {where}; numbers would not compare with the paper's "
            "(pass --allow-partial to run anyway)"
        )
    console.print(f"partial {cfg.train.dataset} splits: {where}")
    return "partial"


def _datasets(cfg: Config, split_names: tuple[str, ...]):
    from .cache import read_index
    from .data import ClipDataset, clip_entries

    cache = _cache_dir(cfg)
    if cfg.train.dataset == "synthetic" and not (cache / "index.jsonl").is_file():
        from .synthetic import generate

        console.print(f"generating the synthetic set ({SYNTHETIC_CLIPS} clips) in {cache}")
        generate(cache, SYNTHETIC_CLIPS, frames=cfg.train.frames, face=face_setting(cfg, auto="off"),
                 reading=_cache_reading(cfg))  # fmt: skip
    if (cache / "index.jsonl").is_file():
        entries, cache_dir = read_index(cache), cache
        info = _dataset_info(cfg)
    else:
        clips, join = load_dataset(cfg.train.dataset, cfg.train.data_root, cfg.labels.emotion)
        info = {"join": join.to_json() if join is not None else None}
        if set(cfg.model.modalities) != {"L"} and any(c.media for c in clips):
            raise MerClipError(
                f"no prepared cache in {cache}: run `merclip prepare --dataset {cfg.train.dataset} "
                f"--data-root {cfg.train.data_root}` first (or train on text with --modalities L)"
            )
        entries, cache_dir = clip_entries(clips), None
    kw = {
        "modalities": cfg.model.modalities,
        "emotion_labels": list(cfg.labels.emotion),
        "sentiment_labels": list(cfg.labels.sentiment),
        "emotion_mode": cfg.model.emotion_mode,
    }
    datasets = [ClipDataset(entries, cache_dir, split, **kw) for split in split_names]
    for ds in datasets:
        ds.info = info  # what the label file had, what prepare lost, the emotion join
    return datasets


# The paper's recipe (supp. Alg. 1, §4.3) beside ours: what `--recipe paper` pins in the model and data.
PAPER_RECIPE = {"model": {"attend": "pooled"}, "labels": {"prompt_context": 8}, "train": {"frames": 12}}


def train_config(args) -> Config:
    cfg = load_config(args.config)
    explicit = {k: v for k, v in {"lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size,
                                  "frames": args.frames}.items() if v is not None}  # fmt: skip
    weights = weights_flag(args.model, args.weights)
    cfg = override(
        cfg,
        model={"arch": args.model, "weights": weights, "variant": args.variant, "modalities": args.modalities},
        labels={"emotion": args.emotion_labels},
        train={"dataset": args.dataset, "data_root": args.data_root, "task": args.task, "seed": args.seed,
               "out": args.out, "recipe": getattr(args, "recipe", None),
               "allow_partial": True if getattr(args, "allow_partial", False) else None, **explicit},
    )  # fmt: skip
    cfg = _with_dataset_defaults(cfg, cfg.train.dataset, explicit)
    if cfg.train.recipe == "paper":
        if "frames" in explicit and explicit["frames"] != 12:
            raise MerClipError("--recipe paper samples 12 frames per clip (§4.3): leave --frames out")
        cfg = override(cfg, **PAPER_RECIPE)
    if cfg.model.weights == "random" and "lr" not in explicit and cfg.train.lr == type(cfg.train)().lr:
        # 8e-6 is the paper's lr for fine-tuning pretrained CLIP; from scratch it would barely move.
        cfg = override(cfg, train={"lr": RANDOM_INIT_LR})
    return cfg


def _trained_face(mcfg, cfg: Config):
    """The model records the face crop of the pictures it trains on: the prepared cache's, whatever
    ``capture.face`` says now (a difference is noted)."""
    from dataclasses import replace

    from .cache import read_face

    cache = _cache_dir(cfg)
    if not (cache / "index.jsonl").is_file():  # text only: no pictures; the configured setting is recorded
        return mcfg
    face = read_face(cache)
    asked = cfg.capture.face
    if asked != "auto" and asked != face.mode:
        console.print(f"notice: capture.face = {asked!r}, but {cache} was prepared with {face.describe()}; "
                      "training on the cache as prepared (run `merclip prepare` again to change it)")  # fmt: skip
    return replace(mcfg, face=face.mode, face_margin=face.margin)


def cmd_train(args) -> int:
    cfg = train_config(args)
    out = Path(cfg.train.out).expanduser()
    if out.exists() and not out.is_dir():
        raise MerClipError(f"--out {out} is a file: training writes a folder of checkpoints and metrics")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 owns the folder
        if not args.resume and any((out / name).exists() for name in RUN_FILES):
            raise MerClipError(f"{out} already holds a training run: pass --resume to continue it, "
                               "or choose another --out")  # fmt: skip
        with _run_lock(out):
            return _train(args, cfg, out)
    return _train(args, cfg, out)


# A folder holding any of these is a training run: a new run there would replace its model.
RUN_FILES = ("best.safetensors", "last.safetensors", "metrics.json")
LOCK_NAME = ".train.lock"


@contextlib.contextmanager
def _run_lock(out: Path):
    """One ``merclip train`` per --out folder: a lock file holding the owner's pid (a dead owner's lock is
    taken over, so a killed run never blocks the folder)."""
    from merclip.stream.cache import pid_alive

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MerClipError(f"--out {_short(str(out))} cannot be created: {err.strerror}") from None
    lock = out / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and pid_alive(owner):
                raise MerClipError(f"another merclip train (pid {owner}) is writing to {out}: wait for it, "
                                   "or choose another --out") from None  # fmt: skip
            lock.unlink(missing_ok=True)  # left by a run that was killed
        except OSError as err:
            raise MerClipError(f"--out {_short(str(out))} is not writable: {err.strerror}") from None
    else:
        raise MerClipError(f"cannot lock {out} for training (another run started at the same moment?)")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _train(args, cfg: Config, out: Path) -> int:
    from dataclasses import replace

    import torch
    from merclip.model import build_model

    from .loop import RunOptions, resolve_task, train
    from .windows import use_samples

    task = resolve_task(cfg.train.task, cfg.train.dataset)
    train_ds, valid_ds = _datasets(cfg, ("train", "valid"))
    if len(valid_ds) == 0:
        raise MerClipError("the dataset has no validation split")
    _check_task_data(cfg, task, train_ds.info)
    _check_splits(cfg, (train_ds, valid_ds), train_ds.info)
    clips = (len(train_ds), len(valid_ds))
    setting, samples = use_samples(cfg, train_ds, valid_ds)
    torch.manual_seed(cfg.train.seed)
    mcfg = replace(_trained_face(model_config(cfg), cfg), reading=setting)
    model = build_model(mcfg, weights=cfg.model.weights)
    t = cfg.train
    opts = RunOptions(out=t.out, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                      grad_clip=t.grad_clip, amp=t.amp, seed=t.seed, task=task, recipe=t.recipe,
                      num_workers=t.num_workers,
                      threshold=cfg.labels.emotion_threshold, resume=args.resume)  # fmt: skip
    console.print(
        f"training {cfg.model.arch} ({cfg.model.variant}, {cfg.model.modalities}, task {task}, recipe {t.recipe}) "
        f"on {t.dataset}: {clips[0]} train / {clips[1]} valid clips as {samples} ({len(train_ds)} / "
        f"{len(valid_ds)} samples), read as {setting.describe()}; lr {t.lr}, {t.epochs} epochs -> {t.out}"
    )
    summary = train(model, train_ds, valid_ds, opts)
    if summary:
        console.print(
            f"best validation {summary['selected_by']} {summary['best'][summary['selected_by']]:.4f} at epoch "
            f"{summary['best_epoch']}; "
            f"{Path(t.out) / 'metrics.json'}"
        )
    return 0


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
    half = getattr(args, "half", None)
    if half:  # alternate clips in file order: half 1 = 1st, 3rd, ...; half 2 = 2nd, 4th, ...
        split.entries = split.entries[half - 1 :: 2]
    clips = len(split)
    protocol, setting = scoring_protocol(args, mcfg)
    if protocol == "windows":
        from .windows import window_entries

        split.entries = window_entries(split.entries, setting)
    counted = f"{len(split)} windows of {clips} clips" if protocol == "windows" else f"{clips} clips"
    read = f" ({setting.describe()})" if protocol == "windows" else ""
    console.print(f"scoring {counted}{read} of the {args.split} split" + (f" (half {half})" if half else "")
                  + (f"; {lost} lost in prepare" if lost is not None else ""))  # fmt: skip
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
    metrics["n"] = len(split)
    metrics["protocol"] = protocol
    metrics["clips"] = clips
    if protocol == "windows":
        metrics["reading"] = setting.to_json()
    if half:
        metrics["half"] = half
    if lost is not None:
        metrics["lost_in_prepare"] = lost
    metrics["partial"] = bool(partial)
    where = f"half {half} of " if half else ""
    title = f"{cfg.train.dataset} {where}{args.split} ({counted}{', partial' if partial else ''})"
    return metrics, outputs, title


def scoring_protocol(args, mcfg):
    """(protocol, reading setting) for eval and calibrate: the monitor's windows by default for a model that
    records how it reads them (trained by this version), whole clips for older ones; ``--context`` reads the
    windows another way, to measure the choice."""
    from dataclasses import replace

    from merclip.model.reading import ReadingSetting

    protocol = getattr(args, "protocol", None) or ("windows" if mcfg.reading is not None else "clips")
    setting = mcfg.reading or ReadingSetting()
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


def cmd_calibrate(args) -> int:
    """Fit temperature (single-label heads) / Platt scaling (multi-label emotion) on a split; store it."""
    from merclip.model import load_checkpoint, save_checkpoint
    from merclip.model.merclip import Calibration

    from .calibration import fit_platt, fit_temperature

    out = Path(args.out or args.checkpoint).expanduser()
    if out.is_dir():
        raise MerClipError(f"--out {out} is a folder: give a checkpoint file name")
    # before the scoring: a folder that cannot take it, or a user's other file in the way, is said now
    _check_output_file(str(out), "--out", _is_checkpoint, "a MER-CLIP checkpoint")
    model, extra = load_checkpoint(args.checkpoint)
    model.calibration = Calibration()  # fit on the raw logits
    _, outputs, title = _score_checkpoint(args, model)
    values = Calibration().to_dict()
    if len(outputs["emotion_targets"]):
        if outputs["multi_label"]:
            values["emotion_scale"], values["emotion_bias"] = fit_platt(outputs["emotion_logits"],
                                                                        outputs["emotion_targets"])  # fmt: skip
        else:
            values["emotion_scale"] = fit_temperature(outputs["emotion_logits"], outputs["emotion_targets"])
    if len(outputs["sentiment_targets"]):
        values["sentiment_scale"] = fit_temperature(outputs["sentiment_logits"], outputs["sentiment_targets"])
    cal = Calibration.from_dict(values)
    extra = dict(extra, calibration={**cal.to_dict(), "fitted_on": title})
    model.calibration = cal
    try:
        save_checkpoint(model, out, extra=extra)
    except Exception as err:  # OSError, or safetensors' own error for a full or read-only disk
        raise MerClipError(f"cannot write --out {_short(str(out))}: {str(err).splitlines()[0]}") from None
    temps = f"emotion T {1 / cal.emotion_scale:.3f}" + (
        f" bias {cal.emotion_bias:+.3f}" if outputs["multi_label"] else ""
    )
    console.print(f"calibrated on {title}: {temps}, sentiment T {1 / cal.sentiment_scale:.3f} -> {out}")
    if outputs["multi_label"]:
        threshold = load_config(args.config).labels.emotion_threshold
        console.print(
            f"emotion threshold {threshold} on the raw sigmoid = {cal.map_threshold(threshold):.3f} calibrated"
        )
    return 0


def _eval_baseline(args) -> int:
    from .baselines import predict
    from .metrics import single_label_metrics

    cfg = override(load_config(args.config), train={"dataset": args.dataset, "data_root": args.data_root,
                                                    "allow_partial": True if args.allow_partial else None},
                   model={"modalities": "L"})  # fmt: skip
    cfg = _with_dataset_defaults(cfg, cfg.train.dataset, {})
    if cfg.model.emotion_mode != "single_label":
        raise MerClipError("baselines are for single-label text datasets such as MELD")
    train_ds, split = _datasets(cfg, ("train", args.split))
    metrics: dict = {"n": len(split)}
    train_texts = [e["text"] for e in train_ds.entries]
    texts = [e["text"] for e in split.entries]
    for task, target in (("", split.emotion_target), ("sentiment_", None)):
        if target is not None:
            y_train, y = [train_ds.emotion_target(e) for e in train_ds.entries], [target(e) for e in split.entries]
        else:
            y_train = [train_ds.sentiment_target(e.get("sentiment")) for e in train_ds.entries]
            y = [split.sentiment_target(e.get("sentiment")) for e in split.entries]
        pred = predict(args.baseline, train_texts, y_train, texts)
        metrics.update({f"{task}{k}": v for k, v in single_label_metrics(np.asarray(y), pred).items()})
    print_tables(metrics, f"{args.baseline} baseline, {cfg.train.dataset} {args.split} ({len(split)} clips)")
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
