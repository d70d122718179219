"""The configured dataset's splits as `merclip prepare`, `train`, `eval`, `calibrate` and `ablate` read them:
the defaults that differ by dataset, where the prepared cache is, the splits loaded from it (or from the
label files for text alone), and the checks that refuse what the data cannot support."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from merclip.config import Config, override
from merclip.errors import MerClipError

from .datasets import MELD_EMOTIONS, MELD_SENTIMENTS, JoinReport, load_dataset, split_shortfall

# Defaults that differ by dataset, applied where the user set nothing: the synthetic set trains a randomly
# initialised tiny model from scratch (the paper's 8e-6 is for fine-tuning pretrained CLIP), MOSI uses the
# paper's own lr and batch, MELD is single-label over 7 emotions and 3 sentiments.
DATASET_DEFAULTS = {
    # the generator's labels are exact: nothing to smooth (train.label_smoothing is for human labels)
    "synthetic": {"train": {"lr": 1e-3, "epochs": 6, "frames": 2, "label_smoothing": 0.0}},
    "mosi": {"train": {"lr": 2.2e-5, "batch_size": 8}},
    "meld": {"labels": {"emotion": MELD_EMOTIONS, "sentiment": MELD_SENTIMENTS},
             "model": {"emotion_mode": "single_label"}},
}  # fmt: skip
SYNTHETIC_CLIPS = 400
console = Console(stderr=True, soft_wrap=True)


def _with_dataset_defaults(cfg: Config, dataset: str) -> Config:
    """Apply DATASET_DEFAULTS for keys neither the config file nor a flag asked for (a value written out
    is asked for even where it equals the packaged default)."""
    changes = {}
    for section, values in DATASET_DEFAULTS.get(dataset, {}).items():
        asked = cfg.asked(section)
        keep = {k: v for k, v in values.items() if k not in asked}
        if keep:
            changes[section] = keep
    return override(cfg, **changes) if changes else cfg


def _cache_dir(cfg: Config) -> Path:
    if cfg.train.cache_dir:
        return Path(cfg.train.cache_dir).expanduser()
    if cfg.train.dataset == "synthetic":
        return Path(cfg.train.data_root or Path(cfg.train.out) / "synthetic-cache").expanduser()
    return Path(cfg.train.data_root).expanduser() / ".merclip-cache"


def _cache_reading(cfg: Config):
    """How `prepare` cuts clips with media into the monitor's windows: capture.window_s, hop_s and
    frames_per_window (the context is chosen when training; the cache holds every word's time)."""
    from merclip.model.reading import ReadingSetting

    cap = cfg.capture
    return ReadingSetting("window", cap.window_s, cap.hop_s, cap.frames_per_window)


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
        from merclip.model.face import face_setting

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
