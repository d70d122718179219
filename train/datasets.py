"""Dataset readers: what a clip is and where its media and labels are.

- a generic manifest (CSV or JSONL) — how users bring their own data;
- CMU-MOSI / CMU-MOSEI raw in the MMSA layout (``label.csv`` + ``Raw/<video_id>/<clip_id>.mp4``), with
  MOSEI's six emotion intensities joined from the CMU-MultimodalSDK ``CMU_MOSEI_Labels.csd`` (HDF5);
- MELD (``{train,dev,test}_sent_emo.csv``; videos ``dia{D}_utt{U}.mp4`` when present).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    # how long the utterance lasted (MELD's EndTime - StartTime; a manifest's end_s - start_s): where only text
    # exists, its words are spread over this span to cut the clip into the monitor's windows (train/windows.py)
    duration_s: float | None = None

    def to_json(self) -> dict:
        return {"clip_id": self.clip_id, "split": self.split, "text": self.text, "media": self.media,
                "start_s": self.start_s, "end_s": self.end_s, "sentiment": self.sentiment,
                "emotions": self.emotions, "emotion_class": self.emotion_class,
                "duration_s": self.duration_s}  # fmt: skip

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


def _show(value) -> str:
    text = str(value)
    return repr(text if len(text) <= 30 else text[:27] + "...")


def _read_text(path: Path, what: str, errors: str = "strict") -> str:
    """A dataset file's text; one line naming the file when it is not a readable UTF-8 text file."""
    try:
        if path.is_dir():
            raise MerClipError(f"{what} {path} is a folder, not a file")
        raw = path.read_bytes()
    except OSError as err:
        raise MerClipError(f"cannot read {what} {path}: {err.strerror}") from None
    if b"\0" in raw:
        raise MerClipError(f"{what} {path} is a binary file, not text")
    try:
        return raw.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as err:
        raise MerClipError(f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None


def _csv_rows(path: Path, what: str, required: tuple[str, ...], errors: str = "strict") -> list[tuple[int, dict]]:
    """(line number, row) for every row of a CSV whose header has the ``required`` columns."""
    reader = csv.DictReader(io.StringIO(_read_text(path, what, errors), newline=""))
    try:
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            found = ", ".join(_show(h)[1:-1] for h in header[:12]) or "nothing"
            raise MerClipError(
                f"{what} {path} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} (found: {found})"
            )
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                cells = len(header) + len(row.get(None) or []) - sum(v is None for k, v in row.items() if k is not None)
                raise MerClipError(f"{what} {path} line {reader.line_num} has {cells} cells, the header {len(header)}")
            rows.append((reader.line_num, row))
    except csv.Error as err:
        raise MerClipError(f"{what} {path} line {reader.line_num} is not valid CSV: {err}") from None
    return rows


def _number(path: Path, line: int, row: dict, column: str, default: float | None) -> float | None:
    """A numeric cell: empty or absent gives ``default``; anything else must be a finite number."""
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        value = math.nan
    x = _float(value)
    if not math.isfinite(x):
        raise MerClipError(f"{path} line {line}: {column} must be a number, got {_show(value)}")
    return x


def _split_of(path: Path, line: int, value) -> str:
    split = _split(str(value))
    if split not in SPLITS:
        raise MerClipError(f"{path} line {line}: split must be train, valid (dev) or test, got {_show(value)}")
    return split


def _media_path(manifest: Path, line: int, media: str) -> str:
    """A media cell, relative to the manifest's folder; "" = no media (text only)."""
    if not media:
        return ""
    try:
        return str((manifest.parent / media).resolve())
    except (OSError, RuntimeError, ValueError) as err:  # RuntimeError: a symbolic link loop
        raise MerClipError(f"{manifest} line {line}: media {_show(media)} is not a usable path ({err})") from None


def read_manifest(path: str | Path, emotion_labels=MOSEI_EMOTIONS) -> list[Clip]:
    """CSV or JSONL with columns: id, split, media, start_s, end_s, text, sentiment, emotion_<label>…
    (or a single ``emotion`` column for single-label data). Media paths are relative to the manifest."""
    path = Path(path)
    if path.is_dir():
        raise MerClipError(f"manifest {path} is a folder: --data-root for --dataset manifest is the CSV/JSONL file")
    if not path.is_file():
        raise MerClipError(f"manifest not found: {path}")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for line, text in enumerate(_read_text(path, "manifest").splitlines(), 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                raise MerClipError(f"manifest {path} line {line} is not valid JSON") from None
            if not isinstance(row, dict):
                raise MerClipError(f"manifest {path} line {line} must be a JSON object, got {type(row).__name__}")
            missing = [c for c in ("split", "text") if c not in row]
            if missing:
                raise MerClipError(f"manifest {path} line {line} lacks {' and '.join(repr(c) for c in missing)}")
            rows.append((line, row))
    else:
        rows = _csv_rows(path, "manifest", ("split", "text"))
    if not rows:
        raise MerClipError(f"manifest {path} has no clips (header only?)")
    clips = []
    for i, (line, row) in enumerate(rows):
        if not isinstance(row["text"], str):
            raise MerClipError(f"{path} line {line}: text must be a string, got {_show(row['text'])}")
        media = row.get("media") or ""
        if not isinstance(media, str):
            raise MerClipError(f"{path} line {line}: media must be a file path, got {_show(media)}")
        start, end = _number(path, line, row, "start_s", None), _number(path, line, row, "end_s", None)
        if start is not None and end is not None and not 0 <= start < end:
            raise MerClipError(f"{path} line {line}: start_s {start} must be >= 0 and before end_s {end}")
        clips.append(Clip(
            clip_id=str(row.get("id") or i), split=_split_of(path, line, row["split"]), text=row["text"],
            media=_media_path(path, line, media), start_s=start, end_s=end,
            sentiment=_number(path, line, row, "sentiment", math.nan),
            emotions={e: _number(path, line, row, f"emotion_{e}", 0.0) for e in emotion_labels
                      if f"emotion_{e}" in row},
            emotion_class=str(row.get("emotion") or ""),
            duration_s=end - start if start is not None and end is not None else None,
        ))  # fmt: skip
    return clips


MMSA_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")


# A joined clip's CSD sentiment must equal label.csv's score within this (MMSA rounds to 4 decimals), and
# at most this share of the clips may fail the check before the emotion task is refused.
JOIN_TOLERANCE = 0.01
JOIN_MAX_UNVERIFIED = 0.01


@dataclass(frozen=True)
class JoinReport:
    """How MOSEI's emotion intensities (CMU_MOSEI_Labels.csd) joined the MMSA clips of label.csv."""

    csd: str  # the file looked for
    found: bool
    matched: int = 0  # CSD sentiment == label.csv score: emotions attached
    mismatched: int = 0  # a CSD row at that position, but another sentiment: no emotions attached
    missing: int = 0  # no CSD row for the clip (video absent or fewer segments)

    @property
    def total(self) -> int:
        return self.matched + self.mismatched + self.missing

    def summary(self) -> str:
        if not self.found:
            return f"no emotion labels: {self.csd} not found"
        share = 100 * self.matched / max(1, self.total)
        return (f"emotion labels joined from {Path(self.csd).name}: {self.matched} of {self.total} clips matched "
                f"({share:.1f} %), {self.mismatched} mismatched, {self.missing} missing")  # fmt: skip

    def require(self) -> None:
        """Refuse the emotion task unless the join is verified: CSD present, <= 1 % of clips unverified."""
        if not self.found:
            raise MerClipError(
                f"the emotion task needs CMU-MOSEI's emotion labels: {self.csd} not found (put "
                "CMU_MOSEI_Labels.csd there, or train with --task sentiment)"
            )
        bad = self.mismatched + self.missing
        if bad > JOIN_MAX_UNVERIFIED * self.total:
            raise MerClipError(
                f"refusing the emotion task: {bad} of {self.total} clips ({100 * bad / max(1, self.total):.1f} %) "
                f"did not join {Path(self.csd).name} ({self.mismatched} with another sentiment, {self.missing} "
                "missing): the CSD does not belong to this label.csv or its segments are in another order"
            )

    def to_json(self) -> dict:
        return {"csd": self.csd, "found": self.found, "matched": self.matched, "mismatched": self.mismatched,
                "missing": self.missing}  # fmt: skip


def read_mmsa(root: str | Path, dataset: str, emotion_csd: str | Path | None = None) -> list[Clip]:
    """CMU-MOSI/MOSEI raw in the MMSA layout (see ``read_mmsa_joined``)."""
    return read_mmsa_joined(root, dataset, emotion_csd)[0]


def read_mmsa_joined(
    root: str | Path, dataset: str, emotion_csd: str | Path | None = None
) -> tuple[list[Clip], JoinReport | None]:
    """CMU-MOSI/MOSEI raw in the MMSA layout; MOSEI emotions from the SDK's label file when given or found
    at ``<root>/CMU_MOSEI_Labels.csd``. A video's clips (in clip_id order) are paired with its CSD segments
    (in interval order), and each pair is verified: the CSD's sentiment column must equal label.csv's score,
    or the clip gets no emotions. The report counts matched, mismatched and missing clips."""
    root = Path(root)
    label_csv = root / "label.csv"
    if not label_csv.is_file():
        raise MerClipError(
            f"{root} is not an MMSA {dataset.upper()} folder: no label.csv (see README, Train on CMU-MOSEI)"
        )
    segments: dict[str, list[tuple[float, dict[str, float]]]] = {}
    csd = Path(emotion_csd) if emotion_csd else root / "CMU_MOSEI_Labels.csd"
    if dataset == "mosei" and csd.is_file():
        segments = read_mosei_emotion_csd(csd)
    rows = []
    for line, row in _csv_rows(label_csv, "MMSA label file", MMSA_COLUMNS):
        sentiment = _number(label_csv, line, row, "label", None)
        if sentiment is None:
            raise MerClipError(f"{label_csv} line {line}: label is empty (a sentiment score -3..3 is needed)")
        rows.append((line, row, sentiment))
    # each video's clips in clip_id order: the k-th clip is paired with the k-th CSD segment
    position: dict[tuple[str, str], int] = {}
    if segments:
        by_video: dict[str, list[tuple[int, str]]] = {}
        for line, row, _ in rows:
            try:
                number = int(row["clip_id"])
            except ValueError:
                raise MerClipError(
                    f"{label_csv} line {line}: clip_id must be an integer, got {_show(row['clip_id'])}"
                ) from None
            by_video.setdefault(row["video_id"], []).append((number, row["clip_id"]))
        for video, ids in by_video.items():
            for k, (_, clip) in enumerate(sorted(ids)):
                position[(video, clip)] = k
    counts = {"matched": 0, "mismatched": 0, "missing": 0}
    clips = []
    for line, row, sentiment in rows:
        video, clip = row["video_id"], row["clip_id"]
        emotions: dict[str, float] = {}
        if segments:
            found = segments.get(video, [])
            k = position[(video, clip)]
            if k >= len(found):
                counts["missing"] += 1
            elif abs(found[k][0] - sentiment) > JOIN_TOLERANCE:
                counts["mismatched"] += 1
            else:
                counts["matched"] += 1
                emotions = found[k][1]
        clips.append(Clip(
            clip_id=f"{video}_{clip}", split=_split_of(label_csv, line, row["mode"]), text=row["text"],
            media=str(root / "Raw" / video / f"{clip}.mp4"), sentiment=sentiment, emotions=emotions,
        ))  # fmt: skip
    report = None
    if dataset == "mosei":
        report = JoinReport(str(csd), bool(segments) or csd.is_file(), **counts)
    return clips, report


def read_mosei_emotion_csd(path: str | Path) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """``CMU_MOSEI_Labels.csd`` (HDF5, ``<name>/data/<video>/{features,intervals}``): per video, its
    segments in interval order, each (sentiment, {emotion: intensity}) from the 7 feature columns
    [sentiment, happy, sad, angry, surprise, disgust, fear]."""
    try:
        import h5py
    except ImportError:
        raise MerClipError("reading CMU_MOSEI_Labels.csd needs h5py: pip install h5py") from None
    out = {}
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise MerClipError(f"{path} is not an HDF5 file (expected CMU-MultimodalSDK's CMU_MOSEI_Labels.csd)") from None
    with f:
        try:
            top = f[next(iter(f.keys()))]["data"]
            for video in top:
                features = np.asarray(top[video]["features"][()], dtype=float)
                intervals = np.asarray(top[video]["intervals"][()], dtype=float)
                if features.ndim != 2 or features.shape[1] < 7 or len(intervals) != len(features):
                    raise ValueError(video)
                order = sorted(range(len(intervals)), key=lambda i: tuple(intervals[i]))
                out[video] = [
                    (float(features[i][0]),
                     {e: float(v) for e, v in zip(MOSEI_EMOTIONS, features[i][1:7], strict=True)})
                    for i in order
                ]  # fmt: skip
        except (KeyError, StopIteration, TypeError, ValueError, AttributeError, OSError) as err:
            raise MerClipError(
                f"{path} is not a CMU-MultimodalSDK label file (<name>/data/<video>/features with 7 columns and "
                f"intervals): {str(err)[:60] or type(err).__name__}"
            ) from None
    return out


MELD_COLUMNS = ("Dialogue_ID", "Utterance_ID", "Utterance", "Emotion", "Sentiment")


def _meld_seconds(stamp: str | None) -> float | None:
    """MELD's "0:00:16,059" (hours:minutes:seconds,milliseconds) in seconds; None when absent or malformed."""
    try:
        hours, minutes, rest = str(stamp).strip().split(":")
        seconds, millis = rest.split(",")
        return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000
    except (AttributeError, ValueError):
        return None


def _meld_duration(start: str | None, end: str | None) -> float | None:
    a, b = _meld_seconds(start), _meld_seconds(end)
    return b - a if a is not None and b is not None and b > a else None


def read_meld(root: str | Path, splits=("train", "dev", "test")) -> list[Clip]:
    """MELD's ``<split>_sent_emo.csv`` files (any present); videos are used when found next to them in
    ``<root>/<split>/dia{D}_utt{U}.mp4`` (or MELD's ``*_splits*`` folders)."""
    root = Path(root)
    if not root.is_dir():
        raise MerClipError(f"MELD --data-root {root} is not a folder (it holds train_sent_emo.csv, ...)")
    clips = []
    found = False
    for split in splits:
        csv_path = root / f"{split}_sent_emo.csv"
        if not csv_path.exists():
            continue
        found = True
        video_dirs = [d for d in root.iterdir() if d.is_dir() and d.name.lower().startswith(split)]
        # MELD's own CSVs hold a few non-UTF-8 bytes: replaced, not refused
        for line, row in _csv_rows(csv_path, "MELD file", MELD_COLUMNS, errors="replace"):
            dia, utt = row["Dialogue_ID"].strip(), row["Utterance_ID"].strip()
            if not (dia.isdigit() and utt.isdigit()):
                raise MerClipError(
                    f"{csv_path} line {line}: Dialogue_ID and Utterance_ID must be integers, got {_show(dia)}, "
                    f"{_show(utt)}"
                )
            name = f"dia{dia}_utt{utt}.mp4"
            media = next((str(d / name) for d in video_dirs if (d / name).is_file()), "")
            sentiment = {"positive": 1.0, "negative": -1.0}.get(row["Sentiment"].strip().lower(), 0.0)
            clips.append(Clip(
                clip_id=f"{split}_dia{dia}_utt{utt}", split=_split(split), text=row["Utterance"], media=media,
                sentiment=sentiment, emotion_class=row["Emotion"].strip().lower(),
                duration_s=_meld_duration(row.get("StartTime"), row.get("EndTime")),
            ))  # fmt: skip
    if not found:
        raise MerClipError(f"no MELD CSVs (train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv) in {root}")
    return clips


def load_clips(dataset: str, data_root: str | Path, emotion_labels=MOSEI_EMOTIONS) -> list[Clip]:
    return load_dataset(dataset, data_root, emotion_labels)[0]


def load_dataset(
    dataset: str, data_root: str | Path, emotion_labels=MOSEI_EMOTIONS
) -> tuple[list[Clip], JoinReport | None]:
    """The clips of a dataset, and (MOSEI) how its emotion labels joined."""
    if not data_root:
        raise MerClipError(f"dataset {dataset} needs --data-root")
    data_root = Path(data_root).expanduser()
    if dataset == "manifest":
        return read_manifest(data_root, emotion_labels), None
    if not data_root.exists():
        raise MerClipError(f"--data-root {data_root} does not exist")
    if not data_root.is_dir():
        raise MerClipError(f"--data-root {data_root} is a file; dataset {dataset} needs its folder")
    if dataset in ("mosi", "mosei"):
        clips, report = read_mmsa_joined(data_root, dataset)
        check_split_sizes(clips, dataset)
        return clips, report
    if dataset == "meld":
        return read_meld(data_root), None
    raise MerClipError(f"unknown dataset {dataset!r}")


def check_split_sizes(clips: list[Clip], dataset: str) -> dict[str, int]:
    """Count clips per split; with the full data present the published sizes must match."""
    counts = {s: sum(c.split == s for c in clips) for s in SPLITS}
    expected = dict(zip(SPLITS, EXPECTED_SPLITS[dataset], strict=True))
    if sum(counts.values()) >= sum(expected.values()) and counts != expected:
        raise MerClipError(f"{dataset} split sizes {counts} differ from the standard {expected}")
    return counts


def split_shortfall(counts: dict[str, int], dataset: str) -> dict[str, int]:
    """Clips each split in ``counts`` lacks against its published size (MOSI/MOSEI; {} = complete)."""
    if dataset not in EXPECTED_SPLITS:
        return {}
    expected = dict(zip(SPLITS, EXPECTED_SPLITS[dataset], strict=True))
    return {s: expected[s] - n for s, n in counts.items() if n < expected[s]}
