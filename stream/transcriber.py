"""Speech -> text for one window. ``Transcriber`` is the interface; ``WhisperTranscriber`` runs
faster-whisper; tests use fakes through the same interface.

Latency: faster-whisper pads every input to 30 s by default, so a 2-s window would pay for 30 s of
encoder work. ``chunk_length`` is set to the window length (rounded up to whole seconds), which makes
the encoder run on the unpadded window (see BENCHMARKS.md for the cost and the measured saving).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from merclip.errors import MerClipError

log = logging.getLogger(__name__)

# Fast speech is ~4 words/s, ~1.3 tokens/word: 12 tokens/s leaves a wide margin.
TOKENS_PER_SECOND = 12


@dataclass(frozen=True)
class Transcript:
    text: str
    ms: float
    error: str = ""


class Transcriber(Protocol):
    def transcribe(self, audio: np.ndarray, context: str = "") -> Transcript: ...


@dataclass(frozen=True)
class WhisperOptions:
    model: str = "tiny"  # size name (downloaded once) or a local CTranslate2 folder
    device: str = "auto"
    compute_type: str = "int8"
    language: str = "en"
    vad: bool = True
    beam_size: int = 1
    window_s: float = 2.0
    cpu_threads: int = 0
    pad_to_30s: bool = False  # faster-whisper's default; False = run on the unpadded window


class WhisperTranscriber:
    def __init__(self, opts: WhisperOptions):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise MerClipError("faster-whisper is not installed: pip install faster-whisper") from None
        self.opts = opts
        local = Path(opts.model).expanduser()
        try:
            self.model = WhisperModel(
                str(local) if local.is_dir() else opts.model,
                device=opts.device,
                compute_type=opts.compute_type,
                cpu_threads=opts.cpu_threads,
            )
        except Exception as err:
            raise MerClipError(
                f"cannot load Whisper model {opts.model!r} ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                "offline? pass a local CTranslate2 folder with --asr-model DIR, or --no-asr"
            ) from None
        self.chunk_length = None if opts.pad_to_30s else max(1, math.ceil(opts.window_s))
        # A window holds a few words; bounding the decode keeps a hallucinating model from decoding 448 tokens.
        self.max_new_tokens = max(8, int(TOKENS_PER_SECOND * opts.window_s))

    def transcribe(self, audio: np.ndarray, context: str = "") -> Transcript:
        start = time.perf_counter()
        segments, _ = self.model.transcribe(
            audio.astype(np.float32, copy=False),
            language=self.opts.language or None,
            beam_size=self.opts.beam_size,
            vad_filter=self.opts.vad,
            initial_prompt=context or None,
            condition_on_previous_text=False,
            without_timestamps=True,
            chunk_length=self.chunk_length,
            temperature=0.0,
            max_new_tokens=self.max_new_tokens,
        )
        text = " ".join(s.text.strip() for s in segments).strip()
        return Transcript(text, (time.perf_counter() - start) * 1000)


def context_tail(text: str, words: int) -> str:
    """The last ``words`` words of the previous transcript, passed to Whisper as context."""
    if words <= 0 or not text:
        return ""
    return " ".join(text.split()[-words:])
