"""Engine: one window (+ its transcript) -> probabilities, through a bundle's ONNX graphs.

``Engine`` is the narrow interface the pipeline needs; ``BundleEngine`` runs an exported bundle and
tests may pass a fake. A modality that is missing from the window is simply not given to the model.
``prepare`` (optional) encodes a window's frames and audio before its words are known, so the pipeline
can run the encoders while Whisper transcribes; ``run`` then reuses them, and so does a second ``run`` of
the same window with its final words (only the text encoder and the fusion run again). ``prepare_frames``
(optional) encodes frames while their window is still open: the window's own frames are then found ready.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
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

    def prepare_frames(self, frames) -> None:
        """Encode frames ahead of their window (one call for all of them); cached by frame object."""
        with self._lock:
            todo = [f for f in frames if id(f) not in self._frames]
        if not todo:
            return
        b = self.bundle
        features = b.encode_frames(b.preprocess_frames(todo))
        with self._lock:
            for rgb, feature in zip(todo, features, strict=True):
                self._frames[id(rgb)] = (rgb, feature)  # the frame is held, so its id is not reused
            while len(self._frames) > FRAME_CACHE:
                self._frames.popitem(last=False)

    def _vision(self, frames) -> np.ndarray:
        with self._lock:
            missing = [f for f in frames if id(f) not in self._frames]
        if missing:
            self.prepare_frames(missing)
        with self._lock:
            return np.stack([self._frames[id(f)][1] for f in frames])[None]

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
            audible = window.has_audio and float(np.sqrt(np.mean(window.audio**2))) > SILENCE_RMS
            audio = b.encode_audio(window.audio) if audible and self.use_audio else None
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
        if vision is None and audio is None and text is None:
            return EngineResult({}, {}, "", encode_ms + (time.perf_counter() - start) * 1000)
        pred = b.fuse(vision, audio, text)
        used = "".join(m for m, on in zip("LVA", pred.present[0], strict=True) if on)
        alone = []  # each modality on its own: the fusion again (cheap next to the encoders)
        if len(used) > 1:
            for only in used:
                p = b.fuse(
                    vision if only == "V" else None, audio if only == "A" else None, text if only == "L" else None
                )
                alone.append(dict(zip(b.emotion_labels, map(float, p.emotion[0]), strict=True)))
        return EngineResult(
            dict(zip(b.emotion_labels, map(float, pred.emotion[0]), strict=True)),
            dict(zip(b.sentiment_labels, map(float, pred.sentiment[0]), strict=True)),
            used,
            encode_ms + (time.perf_counter() - start) * 1000,
            agreement(alone, getattr(b, "multi_label", True)),
        )
