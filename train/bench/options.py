"""What `merclip bench` is asked to measure: one record for every part (stages, speech, end to end, soak,
many streams)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchOptions:
    model: str = "tiny"
    checkpoint: str = ""  # a trained checkpoint instead of random weights (its arch, face setting, its bf16 gate)
    frames: int = 4
    windows: int = 5
    streams: int = 4
    providers: str = "auto"
    precision: str = "auto"  # the default runtime's (runtime.precision); fp32, bf16 and int8 are timed beside it
    asr_model: str = "tiny.en"  # size name or local CTranslate2 folder (tiny.en: the bundled real model)
    asr_mode: str = "stream"
    text_context: int = 77
    torch_compare: bool = True
    int8: bool = True
    e2e: bool = True
    soak_s: float = 0.0
    soak_speech: str | None = None  # a recording looped as the soak's audio (else synthetic tones)
    cache_dir: str = "~/.cache/merclip/bench"
