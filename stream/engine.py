"""Engine: one window (+ its transcript) -> probabilities, through a bundle's ONNX graphs.

``Engine`` is the narrow interface the pipeline needs; ``BundleEngine`` runs an exported bundle and
tests may pass a fake. A modality that is missing from the window is simply not given to the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .records import Window


@dataclass(frozen=True)
class EngineResult:
    emotions: dict[str, float]
    sentiment: dict[str, float]
    modalities: str
    ms: float


class Engine(Protocol):
    emotion_labels: list[str]
    sentiment_labels: list[str]

    def run(self, window: Window, transcript: str) -> EngineResult: ...


# Below this RMS a window counts as silence: no audio modality (a muted or absent microphone).
SILENCE_RMS = 1e-4


class BundleEngine:
    def __init__(self, bundle, use_audio: bool = True):
        self.bundle = bundle
        # Zero-shot CLIP has no meaning for spectrograms: skip the audio encoder's work there.
        self.use_audio = use_audio and bundle.mode != "zero-shot"
        self.emotion_labels = bundle.emotion_labels
        self.sentiment_labels = bundle.sentiment_labels

    def run(self, window: Window, transcript: str) -> EngineResult:
        start = time.perf_counter()
        b = self.bundle
        vision = b.encode_frames(b.preprocess_frames(window.frames))[None] if window.frames else None
        audible = window.has_audio and float(np.sqrt(np.mean(window.audio**2))) > SILENCE_RMS
        audio = b.encode_audio(window.audio) if audible and self.use_audio else None
        text = b.encode_text([transcript]) if transcript.strip() else None
        if vision is None and audio is None and text is None:
            return EngineResult({}, {}, "", (time.perf_counter() - start) * 1000)
        pred = b.fuse(vision, audio, text)
        used = "".join(m for m, on in zip("LVA", pred.present[0], strict=True) if on)
        return EngineResult(
            dict(zip(b.emotion_labels, map(float, pred.emotion[0]), strict=True)),
            dict(zip(b.sentiment_labels, map(float, pred.sentiment[0]), strict=True)),
            used,
            (time.perf_counter() - start) * 1000,
        )
