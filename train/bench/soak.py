"""The soak: a long stream replayed as fast as possible through the live session, its latency, memory and
words per tenth of the run (does anything grow?)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from merclip.stream.engine import BundleEngine
from merclip.stream.session import SessionOptions, build_session
from merclip.stream.sources import SAMPLE_RATE, SyntheticSource
from merclip.stream.transcriber import WhisperOptions, open_speech

from .measure import current_rss_mb


class LoopedSpeechSource(SyntheticSource):
    """Synthetic frames with ``speech`` (16 kHz) looped as the audio: the streaming recogniser hears words
    all run long (the synthetic tones are skipped by its VAD, so they never fill its buffer)."""

    def __init__(self, speech: np.ndarray, duration_s: float, size: int):
        super().__init__(duration_s=duration_s, realtime=False, size=size)
        self.speech = speech

    def block(self, index: int) -> np.ndarray:
        n = int(round(self.block_s * SAMPLE_RATE))
        return np.take(self.speech, np.arange(index * n, (index + 1) * n), mode="wrap").astype(np.float32)


def soak(
    bundle,
    asr_model: str | None,
    seconds: float,
    frames: int,
    progress=lambda s: None,
    speech: np.ndarray | None = None,
) -> dict:
    """A long stream replayed as fast as possible: latency, memory and words per tenth of the run.
    Synthetic frames; the audio is synthetic tones, or ``speech`` (16 kHz) looped."""
    asr = open_speech(WhisperOptions(model=asr_model))[0] if asr_model else None
    source = (
        SyntheticSource(duration_s=seconds, realtime=False, size=320)
        if speech is None
        else LoopedSpeechSource(speech, seconds, size=320)
    )
    # read as the bundle reads, at ``frames`` per window; whole frames (synthetic ones have no face)
    reading = replace(bundle.reading, frames_per_window=frames)
    session = build_session(source, BundleEngine(bundle), asr, SessionOptions(reading, backpressure=True))
    rows: list[tuple[float, float, float]] = []  # (t_end_s, latency_ms, rss_mb)
    words: dict[int, int] = {}  # window -> words in its final transcript
    seen: set[int] = set()

    def on_reading(r):
        if r.final or asr is None:
            words[r.window] = len(r.transcript.split())
        if r.final and r.window in seen:
            return  # each window once: its first reading
        seen.add(r.window)
        rows.append((r.t_end_s, r.model_ms + r.asr_ms, current_rss_mb()))
        if len(rows) % 100 == 0:
            progress(f"soak: {r.t_end_s:.0f} of {seconds:.0f} s of stream")

    started = time.perf_counter()
    session.run(on_reading)
    wall = time.perf_counter() - started
    tenths = np.array_split(np.asarray(rows), 10)
    word_tenths = np.array_split(np.asarray([words[w] for w in sorted(words)]), 10)
    return {
        "stream_s": seconds, "wall_s": wall, "windows": len(rows), "dropped": session.stats.dropped,
        "audio": "synthetic tones" if speech is None else f"speech looped ({len(speech) / SAMPLE_RATE:.1f} s)",
        "processing_ms_median_per_tenth": [float(np.median(t[:, 1])) for t in tenths],
        "rss_mb_per_tenth": [float(t[-1, 2]) for t in tenths],
        "words_per_tenth": [int(t.sum()) for t in word_tenths],
    }  # fmt: skip
