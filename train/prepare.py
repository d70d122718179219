"""`merclip prepare`: a dataset decoded once into the compact training cache (or the synthetic set generated),
clips with media cut into the monitor's windows and their words timed by Whisper."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from merclip.config import Config, load_config, override
from merclip.errors import MerClipError

from .datasets import SPLITS, load_dataset
from .splits import _cache_dir, _cache_reading

console = Console(stderr=True, soft_wrap=True)


def cmd_prepare(args) -> int:
    from merclip.model.face import face_setting

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
