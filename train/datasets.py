"""Dataset readers: what a clip is and where its media and labels are.

- a generic manifest (CSV or JSONL) — how users bring their own data;
- CMU-MOSI / CMU-MOSEI raw in the MMSA layout (``label.csv`` + ``Raw/<video_id>/<clip_id>.mp4``), with
  MOSEI's six emotion intensities joined from the CMU-MultimodalSDK ``CMU_MOSEI_Labels.csd`` (HDF5);
- MELD (``{train,dev,test}_sent_emo.csv``; videos ``dia{D}_utt{U}.mp4`` when present).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from merclip.errors import MerClipError

MOSEI_EMOTIONS = ("happy", "sad", "angry", "surprise", "disgust", "fear")
MELD_EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
MELD_SENTIMENTS = ("neutral", "positive", "negative")
# Published split sizes, checked when the full data is present.
EXPECTED_SPLITS = {"mosi": (1284, 229, 686), "mosei": (16326, 1871, 4659)}
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Clip:
    clip_id: str
    split: str  # train | valid | test
    text: str
    media: str = ""  # video with audio track ("" = none: text only)
    start_s: float | None = None
    end_s: float | None = None
    sentiment: float = math.nan  # -3..3; 0 = neutral; nan = unknown
    emotions: dict[str, float] = field(default_factory=dict)  # intensity per label; present if > 0
    emotion_class: str = ""  # single-label datasets (MELD)

    def to_json(self) -> dict:
        return {"clip_id": self.clip_id, "split": self.split, "text": self.text, "media": self.media,
                "start_s": self.start_s, "end_s": self.end_s, "sentiment": self.sentiment,
                "emotions": self.emotions, "emotion_class": self.emotion_class}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Clip:
        return cls(**data)


def _float(value, default=math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _split(name: str) -> str:
    name = name.strip().lower()
    return {"dev": "valid", "val": "valid", "validation": "valid"}.get(name, name)


def read_manifest(path: str | Path, emotion_labels=MOSEI_EMOTIONS) -> list[Clip]:
    """CSV or JSONL with columns: id, split, media, start_s, end_s, text, sentiment, emotion_<label>…
    (or a single ``emotion`` column for single-label data). Media paths are relative to the manifest."""
    path = Path(path)
    if not path.is_file():
        raise MerClipError(f"manifest not found: {path}")
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    clips = []
    for i, row in enumerate(rows):
        if "text" not in row or "split" not in row:
            raise MerClipError(f"{path}: row {i + 1} needs at least 'split' and 'text' columns")
        media = str(row.get("media") or "")
        clips.append(Clip(
            clip_id=str(row.get("id") or i), split=_split(str(row["split"])), text=str(row["text"]),
            media=str((path.parent / media).resolve()) if media else "",
            start_s=_float(row.get("start_s"), None), end_s=_float(row.get("end_s"), None),
            sentiment=_float(row.get("sentiment")),
            emotions={e: _float(row.get(f"emotion_{e}"), 0.0) for e in emotion_labels if f"emotion_{e}" in row},
            emotion_class=str(row.get("emotion") or ""),
        ))  # fmt: skip
    return clips


def read_mmsa(root: str | Path, dataset: str, emotion_csd: str | Path | None = None) -> list[Clip]:
    """CMU-MOSI/MOSEI raw in the MMSA layout; MOSEI emotions from the SDK's label file when given or
    found at ``<root>/CMU_MOSEI_Labels.csd``."""
    root = Path(root)
    label_csv = root / "label.csv"
    if not label_csv.is_file():
        raise MerClipError(
            f"{root} is not an MMSA {dataset.upper()} folder: no label.csv (see README, Train on CMU-MOSEI)"
        )
    emotions = {}
    if dataset == "mosei":
        csd = Path(emotion_csd) if emotion_csd else root / "CMU_MOSEI_Labels.csd"
        if csd.is_file():
            emotions = read_mosei_emotion_csd(csd)
    clips = []
    with open(label_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            video, clip = row["video_id"], row["clip_id"]
            clips.append(Clip(
                clip_id=f"{video}_{clip}", split=_split(row["mode"]), text=row["text"],
                media=str(root / "Raw" / video / f"{clip}.mp4"), sentiment=_float(row["label"]),
                emotions=emotions.get((video, int(clip)), {}),
            ))  # fmt: skip
    return clips


def read_mosei_emotion_csd(path: str | Path) -> dict[tuple[str, int], dict[str, float]]:
    """``CMU_MOSEI_Labels.csd`` (HDF5): per video, intervals and [sentiment, happy, sad, angry, surprise,
    disgust, fear]. MMSA numbers a video's segments in interval order, so segment k <-> clip_id k."""
    try:
        import h5py
    except ImportError:
        raise MerClipError("reading CMU_MOSEI_Labels.csd needs h5py: pip install h5py") from None
    out = {}
    with h5py.File(path, "r") as f:
        top = f[next(iter(f.keys()))]["data"]
        for video in top:
            features = top[video]["features"][()]
            intervals = top[video]["intervals"][()]
            order = sorted(range(len(intervals)), key=lambda i: tuple(intervals[i]))
            for k, i in enumerate(order):
                out[(video, k)] = {e: float(v) for e, v in zip(MOSEI_EMOTIONS, features[i][1:7], strict=True)}
    return out


def read_meld(root: str | Path, splits=("train", "dev", "test")) -> list[Clip]:
    """MELD's ``<split>_sent_emo.csv`` files (any present); videos are used when found next to them in
    ``<root>/<split>/dia{D}_utt{U}.mp4`` (or MELD's ``*_splits*`` folders)."""
    root = Path(root)
    clips = []
    found = False
    for split in splits:
        csv_path = root / f"{split}_sent_emo.csv"
        if not csv_path.is_file():
            continue
        found = True
        video_dirs = [d for d in root.iterdir() if d.is_dir() and d.name.lower().startswith(split)]
        with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.DictReader(f):
                name = f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4"
                media = next((str(d / name) for d in video_dirs if (d / name).is_file()), "")
                sentiment = {"positive": 1.0, "negative": -1.0}.get(row["Sentiment"].strip().lower(), 0.0)
                clips.append(Clip(
                    clip_id=f"{split}_dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}", split=_split(split),
                    text=row["Utterance"], media=media, sentiment=sentiment,
                    emotion_class=row["Emotion"].strip().lower(),
                ))  # fmt: skip
    if not found:
        raise MerClipError(f"no MELD CSVs (train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv) in {root}")
    return clips


def load_clips(dataset: str, data_root: str | Path, emotion_labels=MOSEI_EMOTIONS) -> list[Clip]:
    if not data_root:
        raise MerClipError(f"dataset {dataset} needs --data-root")
    if dataset == "manifest":
        return read_manifest(data_root, emotion_labels)
    if dataset in ("mosi", "mosei"):
        clips = read_mmsa(data_root, dataset)
        check_split_sizes(clips, dataset)
        return clips
    if dataset == "meld":
        return read_meld(data_root)
    raise MerClipError(f"unknown dataset {dataset!r}")


def check_split_sizes(clips: list[Clip], dataset: str) -> dict[str, int]:
    """Count clips per split; with the full data present the published sizes must match."""
    counts = {s: sum(c.split == s for c in clips) for s in SPLITS}
    expected = dict(zip(SPLITS, EXPECTED_SPLITS[dataset], strict=True))
    if sum(counts.values()) >= sum(expected.values()) and counts != expected:
        raise MerClipError(f"{dataset} split sizes {counts} differ from the standard {expected}")
    return counts
