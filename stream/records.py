"""Typed records that flow through the live pipeline, all stamped with one stream clock (seconds)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    t_s: float
    rgb: np.ndarray  # (H, W, 3) uint8


@dataclass(frozen=True)
class AudioBlock:
    t_s: float  # time of the first sample
    samples: np.ndarray  # (n,) float32, 16 kHz mono


@dataclass(frozen=True)
class SourceEvent:
    """A change in a device's state (camera lost, reconnected...), shown in the UI and logged."""

    t_s: float
    modality: str  # "V" or "A"
    status: str  # "ok", "lost", "absent"
    message: str = ""


@dataclass(frozen=True)
class Window:
    index: int
    t_start_s: float
    t_end_s: float
    frames: tuple[np.ndarray, ...]  # T_V RGB frames chosen evenly by timestamp (empty: no video)
    frame_times_s: tuple[float, ...]
    audio: np.ndarray  # exactly window_s x 16 kHz float32 (zeros where nothing was heard)
    has_audio: bool
    # time.monotonic() when the window closed: latency of a replay with no capture clock (pipeline.window_age_ms)
    closed_wall_s: float = 0.0
    face_box: tuple[float, float, float, float] | None = None  # normalised x, y, w, h of the last face crop
    face: str = ""  # "found" / "none" (frames came but no face was in view); "" = whole frames or no frames


@dataclass(frozen=True)
class Reading:
    window: int
    t_start_s: float
    t_end_s: float
    wall_time_utc: str
    emotions: dict[str, float]
    sentiment: dict[str, float]
    transcript: str
    modalities: str  # which of L, V, A were used, e.g. "LV"
    dropped_windows: int
    latency_ms: float
    asr_ms: float
    model_ms: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    late_items: int = 0  # the session's frames and audio blocks so far that came for windows already closed
    # False: shown as soon as the window closed, its last words still open; the final reading of the same
    # window follows one window later with the committed words (the CSV logs final readings only).
    final: bool = True
    face_box: tuple[float, float, float, float] | None = None  # the window's last face crop (normalised)
    face: str = ""  # as Window.face
    # set by stream.readout.interpret (see there): the emotion label or the neutral word, the confidence,
    # what the UI names (that, or "uncertain"), the modalities' agreement (nan: fewer than two modalities)
    emotion_state: str = ""
    confidence: float = float("nan")
    state: str = ""
    agreement: float = float("nan")
    # personal baseline: seconds of calibration left (None: not calibrating), and the readings relative to it
    calibrating_s: float | None = None
    adjusted_emotions: dict[str, float] | None = None
    adjusted_sentiment: dict[str, float] | None = None

    @property
    def top_emotion(self) -> str:
        """The emotion read, or the neutral state; without a readout rule, the arg-max."""
        if self.emotion_state:
            return self.emotion_state
        return max(self.emotions, key=self.emotions.get) if self.emotions else ""

    def to_json(self) -> dict:
        return {
            "window": self.window,
            "t_start_s": round(self.t_start_s, 3),
            "t_end_s": round(self.t_end_s, 3),
            "wall_time_utc": self.wall_time_utc,
            "emotions": {k: round(v, 4) for k, v in self.emotions.items()},
            "sentiment": {k: round(v, 4) for k, v in self.sentiment.items()},
            "top_emotion": self.top_emotion,
            "transcript": self.transcript,
            "modalities": self.modalities,
            "dropped_windows": self.dropped_windows,
            "late_items": self.late_items,
            "latency_ms": round(self.latency_ms, 1),
            "asr_ms": round(self.asr_ms, 1),
            "model_ms": round(self.model_ms, 1),
            "final": self.final,
            "face_box": [round(v, 4) for v in self.face_box] if self.face_box else None,
            "face": self.face,
            "state": self.state or self.top_emotion,
            "confidence": None if self.confidence != self.confidence else round(self.confidence, 4),
            "agreement": None if self.agreement != self.agreement else round(self.agreement, 4),
            "calibrating_s": self.calibrating_s,
            "adjusted_emotions": _rounded(self.adjusted_emotions),
            "adjusted_sentiment": _rounded(self.adjusted_sentiment),
        }


def _rounded(values: dict[str, float] | None) -> dict[str, float] | None:
    return None if values is None else {k: round(v, 4) for k, v in values.items()}
