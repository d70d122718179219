"""Engine: one window (+ its transcript) -> probabilities, through a bundle's ONNX graphs.

``Engine`` is the narrow interface the pipeline needs; ``BundleEngine`` runs an exported bundle and
tests may pass a fake. A modality that is missing from the window is simply not given to the model.
``prepare`` (optional) encodes a window's frames and audio before its words are known, so the pipeline
can run the encoders while Whisper transcribes; ``run`` then reuses them, and so does a second ``run`` of
the same window with its final words (only the text encoder and the fusion run again). ``prepare_frames``
(optional) encodes frames while their window is still open: the window's own frames are then found ready.

``read_encoded`` is the one place where encoded modalities become an ``EngineResult`` (the fusion, and the
fusion once per modality for the agreement). It takes many windows at once and runs the fusion graph once
per set of modalities present, so the local engine (one window) and the served deployment (a batch of
windows from many streams, ``stream/served.py``) share it and give the same numbers.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from .readout import agreement
from .records import Window


@dataclass(frozen=True)
class EngineResult:
    emotions: dict[str, float]
    sentiment: dict[str, float]
    modalities: str
    ms: float
    agreement: float = float("nan")  # of the modalities used (stream.readout.agreement); nan: fewer than two
    # why there is no reading (e.g. "server unreachable — retrying"); shown in the UI and marks the CSV row
    note: str = ""


class WindowLost(Exception):
    """This window could not be read (a served replica died with it in flight, a request timed out): the
    pipeline counts it as dropped, like a window dropped under load, and the session goes on."""


class Engine(Protocol):
    emotion_labels: list[str]
    sentiment_labels: list[str]

    def run(self, window: Window, transcript: str) -> EngineResult: ...


# Below this RMS a window counts as silence: no audio modality (a muted or absent microphone).
SILENCE_RMS = 1e-4
# Encoded windows kept for their final reading (up to two windows later) and for windows prepared ahead.
FEATURE_CACHE_WINDOWS = 8
# Frames encoded while their window is still open (a few windows' worth).
FRAME_CACHE = 64


class BundleEngine:
    def __init__(self, bundle, use_audio: bool = True):
        self.bundle = bundle
        # Zero-shot CLIP has no meaning for spectrograms: skip the audio encoder's work there.
        self.use_audio = use_audio and bundle.mode != "zero-shot"
        self.emotion_labels = bundle.emotion_labels
        self.sentiment_labels = bundle.sentiment_labels
        self._features: OrderedDict[int, tuple] = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict[int, threading.Event] = {}
        self._frames: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # id -> (rgb, feature)

    @staticmethod
    def _key(window: Window) -> int:
        # the cache holds the window itself too, so its id cannot be reused while the entry lives
        return id(window)

    def prepare_frames(self, frames) -> dict[int, np.ndarray]:
        """Encode frames ahead of their window (one call for all of them); cached by frame object.
        Returns every given frame's features by ``id``."""
        with self._lock:
            found = {id(f): self._frames[id(f)][1] for f in frames if id(f) in self._frames}
        todo = [f for f in frames if id(f) not in found]
        if todo:
            b = self.bundle
            features = b.encode_frames(b.preprocess_frames(todo))
            with self._lock:
                for rgb, feature in zip(todo, features, strict=True):
                    self._frames[id(rgb)] = (rgb, feature)  # the frame is held, so its id is not reused
                    found[id(rgb)] = feature
                while len(self._frames) > FRAME_CACHE:
                    self._frames.popitem(last=False)
        return found

    def _vision(self, frames) -> np.ndarray:
        # from what prepare_frames returns, not the cache: encoding the missing frames may evict the others
        found = self.prepare_frames(frames)
        return np.stack([found[id(f)] for f in frames])[None]

    def prepare(self, window: Window) -> tuple:
        """(vision, audio) features of a window, computed once; the ms spent are in the third slot."""
        key = self._key(window)
        with self._lock:
            if key in self._features:
                return self._features[key][1]
            busy = self._busy.get(key)
            if busy is None:
                self._busy[key] = threading.Event()
        if busy is not None:  # another thread is encoding this window: wait for it
            busy.wait()
            with self._lock:
                if key in self._features:
                    return self._features[key][1]
            return self.prepare(window)
        try:
            start = time.perf_counter()
            b = self.bundle
            vision = self._vision(window.frames) if window.frames else None
            audio = b.encode_audio(window.audio) if audible(window) and self.use_audio else None
            features = (vision, audio, (time.perf_counter() - start) * 1000)
            with self._lock:
                self._features[key] = (window, features)
                while len(self._features) > FEATURE_CACHE_WINDOWS:
                    self._features.popitem(last=False)
            return features
        finally:
            with self._lock:
                self._busy.pop(key).set()

    def run(self, window: Window, transcript: str) -> EngineResult:
        b = self.bundle
        vision, audio, encode_ms = self.prepare(window)
        start = time.perf_counter()  # model_ms below: the encoders' time (whenever they ran) + text + fusion
        text = b.encode_text([transcript]) if transcript.strip() else None
        result = read_encoded(b, [Encoded(vision, audio, text)])[0]
        return replace(result, ms=encode_ms + (time.perf_counter() - start) * 1000)


def audible(window: Window) -> bool:
    """Whether a window has a voice channel worth encoding (a muted or absent microphone has none)."""
    return window.has_audio and float(np.sqrt(np.mean(window.audio**2))) > SILENCE_RMS


@dataclass(frozen=True)
class Encoded:
    """One window's encoded modalities, each with a batch axis of 1; None = absent."""

    vision: np.ndarray | None  # (1, frames, D)
    audio: np.ndarray | None  # (1, segments, D)
    text: tuple | None  # tokens (1, L, D), valid (1, L), pooled (1, D): the text graph's outputs

    def only(self, modality: str) -> Encoded:
        return Encoded(self.vision if modality == "V" else None, self.audio if modality == "A" else None,
                       self.text if modality == "L" else None)  # fmt: skip

    @property
    def used(self) -> str:
        return "".join(m for m, x in zip("LVA", (self.text, self.vision, self.audio), strict=True) if x is not None)


def _fuse_many(bundle, items: Sequence[Encoded]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(emotion, sentiment) probabilities of each item; one fusion call per group of items with the same
    modalities (and frame count), since absent modalities are zero-filled per call, not per row."""
    out: list = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        frames = item.vision.shape[1] if item.vision is not None else 0
        groups.setdefault((item.used, frames), []).append(i)
    for rows in groups.values():
        first = items[rows[0]]

        def stack(get, rows=rows):
            return np.concatenate([get(items[i]) for i in rows])

        vision = stack(lambda e: e.vision) if first.vision is not None else None
        audio = stack(lambda e: e.audio) if first.audio is not None else None
        text = tuple(stack(lambda e, k=k: e.text[k]) for k in range(3)) if first.text is not None else None
        pred = bundle.fuse(vision, audio, text, batch=len(rows))
        for j, i in enumerate(rows):
            out[i] = (pred.emotion[j], pred.sentiment[j])
    return out


def read_encoded(bundle, windows: Sequence[Encoded]) -> list[EngineResult]:
    """Encoded windows -> readings (``ms`` left 0 for the caller): the fusion of what is present, and, with
    two or more modalities, the fusion of each alone for the agreement — all in as few fusion calls as there
    are sets of modalities among the windows."""
    jobs: list[Encoded] = []
    for enc in windows:
        used = enc.used
        if used:
            jobs.append(enc)
            if len(used) > 1:
                jobs.extend(enc.only(m) for m in used)
    fused = iter(_fuse_many(bundle, jobs))
    results = []
    for enc in windows:
        used = enc.used
        if not used:
            results.append(EngineResult({}, {}, "", 0.0))
            continue
        emotion, sentiment = next(fused)
        alone = []  # each modality on its own: the fusion again (cheap next to the encoders)
        if len(used) > 1:
            for _ in used:
                alone.append(dict(zip(bundle.emotion_labels, map(float, next(fused)[0]), strict=True)))
        results.append(
            EngineResult(
                dict(zip(bundle.emotion_labels, map(float, emotion), strict=True)),
                dict(zip(bundle.sentiment_labels, map(float, sentiment), strict=True)),
                used,
                0.0,
                agreement(alone, getattr(bundle, "multi_label", True)),
            )
        )
    return results
