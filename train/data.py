"""Training batches from a prepared cache (or, for text-only runs, straight from the label files)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from merclip.model.preprocess import normalize_frames
from merclip.model.tokenizer import trim_padding
from torch.utils.data import Dataset

from .cache import SAMPLE_RATE, read_clip, read_index, read_window
from .datasets import MELD_EMOTIONS, Clip

IGNORE = -100
# With train.samples = "views": the share of epochs in which a clip is read whole, the rest one of its windows
# (drawn anew each epoch). Measured on MELD (RESULTS.md, "Reading what the monitor reads"): a clip drawn as
# just one more view among its windows (a share of about 1/3) cost 4 points of whole-utterance wF1; against
# shares of 0, 0.75 and 1, a half reads windows best.
VIEWS_CLIP_SHARE = 0.5


def clip_entries(clips: list[Clip]) -> list[dict]:
    """Index entries for text-only use, without a cache."""
    return [c.to_json() | {"has_video": False, "has_audio": False} for c in clips]


class ClipDataset(Dataset):
    def __init__(
        self,
        entries: list[dict],
        cache_dir: str | Path | None,
        split: str,
        modalities: str,
        emotion_labels: list[str],
        sentiment_labels: list[str],
        emotion_mode: str,
    ):
        self.split = split
        self.entries = [e for e in entries if e["split"] == split]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.modalities = modalities
        self.emotion_labels, self.sentiment_labels = list(emotion_labels), list(sentiment_labels)
        self.emotion_mode = emotion_mode
        self.frames_per_sample: int | None = None  # set when windows and clips train together (same shape)
        self.seed, self.epoch = 0, 0

    @classmethod
    def from_cache(cls, cache_dir, split, **kw) -> ClipDataset:
        return cls(read_index(cache_dir), cache_dir, split, **kw)

    def __len__(self) -> int:
        return len(self.entries)

    def emotion_target(self, entry: dict):
        if self.emotion_mode == "single_label":
            name = entry.get("emotion_class", "")
            # dataset class names map positionally onto the configured label texts (which may be sentences)
            if name in self.emotion_labels:
                return self.emotion_labels.index(name)
            return MELD_EMOTIONS.index(name) if name in MELD_EMOTIONS else IGNORE
        values = list(entry.get("emotions", {}).values())
        target = np.zeros(len(self.emotion_labels), np.float32)
        target[: len(values)] = np.asarray(values[: len(self.emotion_labels)], np.float32) > 0
        return target

    def has_emotion(self, entry: dict) -> bool:
        """Whether the clip is annotated for emotion at all (CMU-MOSI is not; nor is a MOSEI clip whose
        CSD row could not be verified): an unannotated clip must not be trained towards "no emotion"."""
        if self.emotion_mode == "single_label":
            return self.emotion_target(entry) != IGNORE
        return bool(entry.get("emotions"))

    def sentiment_target(self, score: float) -> int:
        if score is None or math.isnan(score):
            return IGNORE
        names = self.sentiment_labels
        if "neutral" in names and score == 0:
            return names.index("neutral")
        if score == 0:
            return IGNORE  # binary sentiment leaves neutral samples out (paper §4.1)
        key = "positive" if score > 0 else "negative"
        return names.index(key) if key in names else (0 if score > 0 else 1)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Which view of each clip an epoch draws (entries with ``views``: train/windows.py)."""
        self.epoch, self.seed = epoch, seed

    def __getitem__(self, i: int) -> dict:
        entry = self.entries[i]
        # ``index`` names a sample only where it is the same every epoch (not one of a clip's views drawn anew)
        named = {} if "views" in entry else {"index": i}
        if "views" in entry:  # one of the clip's views, drawn anew each epoch (repeatably: seed, epoch, i)
            rng = np.random.default_rng([self.seed, self.epoch, i])
            if entry["views"] and not (entry["whole"] and rng.random() < VIEWS_CLIP_SHARE):
                entry = entry["views"][int(rng.integers(len(entry["views"])))]
        frames = audio = None
        if self.cache_dir is not None and ("V" in self.modalities or "A" in self.modalities):
            if "window" in entry and "windows" in entry:  # one of the monitor's windows (train/windows.py)
                samples = int(round((entry["t_end_s"] - entry["t_start_s"]) * SAMPLE_RATE))
                frames, audio = read_window(self.cache_dir, entry, samples)
            else:
                frames, audio = read_clip(self.cache_dir, entry)
            if frames is not None and self.frames_per_sample and len(frames) != self.frames_per_sample:
                # whole clips trained beside windows: as many frames as a window, evenly over the clip
                frames = frames[np.linspace(0, len(frames) - 1, self.frames_per_sample).round().astype(int)]
        return named | {
            "frames": frames if "V" in self.modalities else None,
            "audio": audio if "A" in self.modalities else None,
            "text": entry["text"] if "L" in self.modalities else None,
            "emotion": self.emotion_target(entry),
            "has_emotion": self.has_emotion(entry),
            "sentiment": self.sentiment_target(entry.get("sentiment", math.nan)),
            "score": float(entry.get("sentiment", math.nan) if entry.get("sentiment") is not None else math.nan),
        }


class Collate:
    """Stack a batch: normalised frames, zero-padded audio with each clip's length, token ids, targets. A
    modality missing from any sample of the batch is zero-filled there (the present mask is the batch's)."""

    def __init__(self, tokenizer, image_mean, image_std, single_label: bool, trim: bool = False):
        self.tokenizer = tokenizer
        self.trim = trim
        self.mean, self.std = image_mean, image_std
        self.single_label = single_label

    def __call__(self, items: list[dict]) -> dict:
        batch: dict = {"frames": None, "audio": None, "audio_lengths": None, "text": None}
        frames = [it["frames"] for it in items]
        if any(f is not None for f in frames):
            shape = next(f.shape for f in frames if f is not None)
            stacked = np.stack([f if f is not None else np.zeros(shape, np.uint8) for f in frames])
            flat = normalize_frames(stacked.reshape(-1, *shape[1:]), self.mean, self.std)
            batch["frames"] = torch.from_numpy(flat).reshape(len(items), shape[0], *flat.shape[1:])
        audio = [it["audio"] for it in items]
        if any(a is not None for a in audio):
            length = max(len(a) for a in audio if a is not None)
            padded = np.zeros((len(items), length), np.float32)
            for row, a in enumerate(audio):
                if a is not None:
                    padded[row, : len(a)] = a
            batch["audio"] = torch.from_numpy(padded)
            # each clip's own length: the model masks the padding segments (attention and mean)
            batch["audio_lengths"] = torch.tensor([len(a) if a is not None else 0 for a in audio], dtype=torch.long)
        if any(it["text"] is not None for it in items):
            ids = self.tokenizer([it["text"] or "" for it in items])
            batch["text"] = torch.from_numpy(trim_padding(ids) if self.trim else ids)
        if self.single_label:
            batch["emotion"] = torch.tensor([it["emotion"] for it in items], dtype=torch.long)
        else:
            batch["emotion"] = torch.from_numpy(np.stack([it["emotion"] for it in items]))
        batch["has_emotion"] = torch.tensor([bool(it.get("has_emotion", True)) for it in items], dtype=torch.bool)
        batch["sentiment"] = torch.tensor([it["sentiment"] for it in items], dtype=torch.long)
        batch["score"] = torch.tensor([it["score"] for it in items], dtype=torch.float32)
        if all("index" in it for it in items):
            batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
        return batch
