"""Speech -> text for one window. ``Transcriber`` is the interface; ``WhisperTranscriber`` runs
faster-whisper; tests use fakes through the same interface.

Latency: faster-whisper's ``transcribe`` pads every input to 3000 mel frames (30 s) before the encoder,
whatever its ``chunk_length`` says, so a 2-s window pays for 30 s of encoder work. By default this
transcriber therefore drives faster-whisper's lower-level API itself: Silero VAD (shipped with
faster-whisper) skips silent windows, the log-mel features of the window go to the CTranslate2 encoder
at their real length (200 frames for 2 s), and greedy/beam decoding runs on that. ``pad_to_30s=True``
keeps faster-whisper's standard path. Whisper was trained on 30-s inputs; BENCHMARKS.md records the
measured saving and what could not be measured here (transcript quality needs real weights).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from merclip.errors import MerClipError

log = logging.getLogger(__name__)

# Fast speech is ~4 words/s, ~1.3 tokens/word: 12 tokens/s leaves a wide margin.
TOKENS_PER_SECOND = 12
MAX_CONTEXT_TOKENS = 32
NO_SPEECH_THRESHOLD = 0.6  # faster-whisper's default


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
    pad_to_30s: bool = False  # True = faster-whisper's standard (padded) transcribe


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
        self._tokenizers: dict = {}
        # A window holds a few words; bounding the decode keeps a hallucinating model from decoding 448 tokens.
        self.max_new_tokens = max(8, int(TOKENS_PER_SECOND * opts.window_s))

    def transcribe(self, audio: np.ndarray, context: str = "") -> Transcript:
        start = time.perf_counter()
        audio = audio.astype(np.float32, copy=False)
        text = self._padded(audio, context) if self.opts.pad_to_30s else self._unpadded(audio, context)
        return Transcript(text, (time.perf_counter() - start) * 1000)

    def _padded(self, audio: np.ndarray, context: str) -> str:
        segments, _ = self.model.transcribe(
            audio,
            language=self.opts.language or None,
            beam_size=self.opts.beam_size,
            vad_filter=self.opts.vad,
            initial_prompt=context or None,
            condition_on_previous_text=False,
            without_timestamps=True,
            temperature=0.0,
            max_new_tokens=self.max_new_tokens,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def _tokenizer(self, audio_features):
        from faster_whisper.tokenizer import Tokenizer

        language = self.opts.language
        if not language and self.model.model.is_multilingual:
            language = self.model.detect_language(features=audio_features)[0]
        key = language or "en"
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual,
                                              task="transcribe", language=key)  # fmt: skip
        return self._tokenizers[key]

    def _unpadded(self, audio: np.ndarray, context: str) -> str:
        from faster_whisper.transcribe import get_suppressed_tokens
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if self.opts.vad and not get_speech_timestamps(audio, VadOptions()):
            return ""
        features = self.model.feature_extractor(audio)
        features = features[:, : features.shape[-1] - features.shape[-1] % 2]  # the encoder's conv has stride 2
        tokenizer = self._tokenizer(features)
        encoded = self.model.encode(features)
        previous = tokenizer.encode(" " + context.strip())[-MAX_CONTEXT_TOKENS:] if context.strip() else []
        prompt = self.model.get_prompt(tokenizer, previous, without_timestamps=True)
        result = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=self.opts.beam_size,
            max_length=len(prompt) + self.max_new_tokens,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            return_no_speech_prob=True,
        )[0]
        if result.no_speech_prob > NO_SPEECH_THRESHOLD:
            return ""
        return tokenizer.decode(result.sequences_ids[0]).strip()


def context_tail(text: str, words: int) -> str:
    """The last ``words`` words of the previous transcript, passed to Whisper as context."""
    if words <= 0 or not text:
        return ""
    return " ".join(text.split()[-words:])
