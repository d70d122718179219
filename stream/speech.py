"""Streaming transcription policy: which words a window shows, and when they become final.

Stock Whisper was trained on 30-s inputs only; fed a bare 2-s window it falls into repetition loops, and a
window transcribed alone cuts the words at its edges. So, as whisper_streaming does (LocalAgreement-2 over
a rolling buffer), every time a window closes the last few seconds of audio are transcribed again, padded
the way Whisper was trained, with word timestamps; a word is *committed* once two consecutive passes agree
on it. This module is the policy only (pure Python, no model): a ``Recognizer`` turns audio into timed
words, and tests drive the policy with a scripted one.

Rules (each tested in tests/test_speech.py):

* Each word belongs to exactly one window: the one whose own span holds the word's midpoint. A window's
  own span is its newest ``hop_s`` of audio, ``[t_end - hop, t_end)``, so spans tile the stream even when
  windows overlap (the first window also owns everything before it).
* When window k closes, its reading shows the committed words in its span plus the not-yet-committed
  words of this pass inside it (``TranscriptUpdate.current``): words reach the screen one pass early.
* Window k's words are *final* (``TranscriptUpdate.final``) once two passes agree on all of them, and at
  the latest ``FINAL_LAG`` windows after it closed, as the newest pass — which has heard that much right
  context — says (or at the end of the stream). So every word is committed a bounded time after its own
  window closed, and the CSV holds each word once, in the row of its window.
* The buffer is bounded: once it holds more than ``BUFFER_MAX_S`` it is cut back to about
  ``BUFFER_KEEP_S`` at a word boundary (words in it still open are committed first); committed words that
  fell out of it are passed to Whisper as a text prompt instead. A gap in the stream (a dropped window)
  finalizes everything pending and starts a fresh buffer.
* At the end of the stream, what came after the last window (too short to make one) is heard by one last
  pass with the buffer (``finish``); the last window owns its words, as the first owns everything before it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# Re-transcribing a growing buffer is how streaming latency spirals (whisper_streaming #152): past 12 s
# the buffer is cut back to about 6 s at a word boundary. Whisper pads to 30 s whatever the buffer holds,
# so the encoder cost is flat; the decoder's cost grows with the words in the buffer. Measured with the
# real tiny.en on 60 s of speech (BENCHMARKS.md; WER vs truth): 8/4 s -> 0.091, 12/6 s -> 0.045, 15/8 s -> 0.045.
BUFFER_MAX_S = 12.0
BUFFER_KEEP_S = 6.0
# Committed words before the buffer passed as Whisper's prompt (whisper_streaming uses ~200 characters).
PROMPT_WORDS = 30
# Word timestamps from cross-attention wobble by about a frame or two between passes.
TIMESTAMP_SLACK_S = 0.1
# A window whose words two passes do not yet agree on is final at the latest this many windows later.
# 1 forces the second pass's words; 2 lets a third pass settle them (60 s of speech: WER 0.136 -> 0.045).
FINAL_LAG = 2
# A stream-clock gap longer than this between windows (a dropped window) restarts the buffer.
GAP_S = 0.05


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    text: str  # as Whisper writes it, punctuation and leading space included
    probability: float = 1.0

    @property
    def mid_s(self) -> float:
        return 0.5 * (self.start_s + self.end_s)

    def shifted(self, offset_s: float) -> Word:
        return Word(self.start_s + offset_s, self.end_s + offset_s, self.text, self.probability)


@dataclass(frozen=True)
class Recognition:
    words: list[Word]  # times relative to the start of the audio given
    ms: float


class Recognizer(Protocol):
    """Audio (16 kHz mono float32) -> timed words. ``prompt`` is the text that came before the audio.

    A recognizer may also offer ``hears_speech(audio) -> bool`` (voice activity): a window in which it
    hears nothing, with no word still open, then costs no pass."""

    def recognize(self, audio: np.ndarray, prompt: str = "") -> Recognition: ...


@dataclass(frozen=True)
class WindowText:
    index: int
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class TranscriptUpdate:
    """What one pass says: the closing window's words as known now, and the windows whose words are final."""

    current: WindowText | None
    final: tuple[WindowText, ...] = ()
    ms: float = 0.0
    error: str = ""


def normalize(text: str) -> str:
    """Words compare without case or punctuation ("Americans," == "americans")."""
    return re.sub(r"[^\w']+", "", text.lower())


def join_words(words: Sequence[Word]) -> str:
    return "".join(w.text for w in words).strip()


@dataclass
class _Span:
    index: int
    start_s: float  # own span: words whose midpoint lies in [start_s, end_s) belong here
    end_s: float


@dataclass
class StreamingTranscriber:
    """LocalAgreement-2 over a rolling buffer, one pass per closed window (see the module docstring)."""

    recognizer: Recognizer
    sample_rate: int = 16000
    buffer_max_s: float = BUFFER_MAX_S
    buffer_keep_s: float = BUFFER_KEEP_S
    final_lag: int = FINAL_LAG
    _audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    _t0: float = 0.0  # stream time of the buffer's first sample
    _committed: list[Word] = field(default_factory=list)  # committed, not yet handed out as final
    _history: list[Word] = field(default_factory=list)  # committed words already final (prompt source)
    _tentative: list[Word] = field(default_factory=list)  # the last pass's words after the committed ones
    _pending: list[_Span] = field(default_factory=list)  # windows shown but not final yet
    _span_from: float = float("-inf")  # where the next window's own span starts

    @property
    def buffer_s(self) -> float:
        return len(self._audio) / self.sample_rate

    @property
    def _end(self) -> float:
        return self._t0 + self.buffer_s

    @property
    def _committed_end(self) -> float:
        last = self._committed[-1:] or self._history[-1:]
        return last[0].end_s if last else float("-inf")

    def push(self, index: int, t_start_s: float, t_end_s: float, audio: np.ndarray) -> TranscriptUpdate:
        """Window ``index`` covering ``[t_start_s, t_end_s)`` closed with ``audio``."""
        final: list[WindowText] = []
        if len(self._audio) and t_start_s > self._end + GAP_S:  # a window was dropped: start over
            final += self._finalize_all()
            self._audio = np.zeros(0, np.float32)
        new = self._extend(t_start_s, audio)
        span = _Span(index, self._span_from, t_end_s)
        self._span_from = t_end_s

        start = time.perf_counter()
        error = self._hear(new)
        final += self._finalize_due(index)
        shown = tuple(w for w in (*self._committed, *self._tentative) if span.start_s <= w.mid_s < span.end_s)
        self._pending.append(span)
        self._trim()
        ms = (time.perf_counter() - start) * 1000
        return TranscriptUpdate(WindowText(index, join_words(shown), shown), tuple(final), ms, error)

    def finish(self, t_start_s: float | None = None, audio: np.ndarray | None = None) -> TranscriptUpdate:
        """End of stream: whatever is pending becomes final as the last pass saw it. ``audio`` from
        ``t_start_s``: the stream's end after the last window, too short to make one (``Windower.rest``). One
        last pass hears it with the buffer, so a word the end cut short is heard whole; the last window owns
        its words."""
        start, error = time.perf_counter(), ""
        if audio is not None and t_start_s is not None and self._pending and len(self._audio):
            if t_start_s <= self._end + GAP_S:  # the last window's continuation, not audio after a gap
                new = self._extend(t_start_s, audio)
                error = self._hear(new) if len(new) else ""  # overlapping windows: already in the buffer
        final = tuple(self._finalize_all())
        return TranscriptUpdate(None, final, (time.perf_counter() - start) * 1000, error)

    def _extend(self, t_start_s: float, audio: np.ndarray) -> np.ndarray:
        """Append the audio from ``t_start_s`` the buffer does not hold yet (windows may overlap); the new part."""
        if not len(self._audio):
            self._t0 = t_start_s
            new = audio
        else:
            skip = int(round((self._end - t_start_s) * self.sample_rate))
            new = audio[max(0, skip) :]
        new = np.asarray(new, np.float32)
        self._audio = np.concatenate([self._audio, new])
        return new

    def _hear(self, new: np.ndarray) -> str:
        """One pass over the buffer, unless nothing is open and nothing new is heard (VAD): a pass would only
        re-read committed words. The error, or ""."""
        hears = getattr(self.recognizer, "hears_speech", None)
        if not (self._tentative or hears is None or hears(new)):
            return ""
        try:
            self._agree(self._pass())
        except Exception as err:  # the audio stays in the buffer: the next pass hears this window again
            return str(err) or type(err).__name__
        return ""

    # ---- policy steps ---------------------------------------------------------------------------------
    def _pass(self) -> list[Word]:
        before = [w for w in (*self._history, *self._committed) if w.end_s <= self._t0 + TIMESTAMP_SLACK_S]
        prompt = join_words(before[-PROMPT_WORDS:])
        result = self.recognizer.recognize(self._audio, prompt)
        end = self._end
        words = [w.shifted(self._t0) for w in result.words]
        words = [Word(w.start_s, min(w.end_s, end), w.text, w.probability) for w in words if w.start_s < end]
        # Words this pass repeats from the committed text (start before the committed point) are old.
        done = self._committed_end
        words = [w for w in words if w.start_s > done - TIMESTAMP_SLACK_S]
        return _drop_overlap(self._committed[-5:] or self._history[-5:], words)

    def _agree(self, words: list[Word]) -> None:
        """LocalAgreement-2: the longest common prefix of this pass and the last one is committed."""
        n = 0
        while n < min(len(words), len(self._tentative)) and normalize(words[n].text) == normalize(
            self._tentative[n].text
        ):
            n += 1
        self._committed += words[:n]  # this pass's timestamps: it has heard more right context
        self._tentative = words[n:]

    def _finalize_due(self, index: int) -> list[WindowText]:
        """Earlier windows, oldest first, become final once every word in them is committed, or at the
        latest ``final_lag`` windows after they closed (then as the newest pass — which has heard that
        much right context — says)."""
        out = []
        while self._pending:
            oldest = self._pending[0]
            if index - oldest.index >= self.final_lag:
                self._commit_open(lambda w, end=oldest.end_s: w.mid_s < end)
            if any(w.mid_s < oldest.end_s for w in self._tentative):
                break
            out.append(self._final_text(self._pending.pop(0)))
        return out

    def _commit_open(self, due) -> None:
        """Commit the leading open words for which ``due(word)`` holds (open words are in time order)."""
        n = 0
        while n < len(self._tentative) and due(self._tentative[n]):
            n += 1
        self._committed += self._tentative[:n]
        self._tentative = self._tentative[n:]

    def _final_text(self, span: _Span) -> WindowText:
        # Spans are made final oldest first, so every committed word before this span's end is its own — even
        # one whose midpoint a later pass moved before an already-final span (rather than lose it).
        words = tuple(w for w in self._committed if w.mid_s < span.end_s)
        self._committed = [w for w in self._committed if w.mid_s >= span.end_s]
        self._history = [*self._history, *words][-PROMPT_WORDS:]
        return WindowText(span.index, join_words(words), words)

    def _finalize_all(self) -> list[WindowText]:
        self._committed += self._tentative
        self._tentative = []
        out = []
        for i, span in enumerate(self._pending):
            if i == len(self._pending) - 1:
                span = _Span(span.index, span.start_s, float("inf"))
            out.append(self._final_text(span))
        self._pending = []
        return out

    def _trim(self) -> None:
        """Bound the buffer: past ``buffer_max_s``, cut to about ``buffer_keep_s`` at a word boundary."""
        if self.buffer_s <= self.buffer_max_s:
            return
        cut = self._end - self.buffer_keep_s
        for w in (*self._history, *self._committed, *self._tentative):
            if w.start_s < cut < w.end_s:  # never cut through a word
                cut = w.start_s
                break
        # Open words before the cut lose their audio: commit them as this pass heard them.
        self._commit_open(lambda w: w.end_s <= cut + TIMESTAMP_SLACK_S)
        drop = int(round((cut - self._t0) * self.sample_rate))
        if drop > 0:
            self._audio = self._audio[drop:]
            self._t0 += drop / self.sample_rate


def _drop_overlap(committed: Sequence[Word], words: list[Word]) -> list[Word]:
    """Drop the longest run (1..5 words) at the head of ``words`` that repeats the tail of the committed
    text: a pass often re-reads the last committed word with a slightly later timestamp."""
    if not committed or not words or words[0].start_s - committed[-1].end_s > 1.0:
        return words
    tail = [normalize(w.text) for w in committed]
    head = [normalize(w.text) for w in words]
    for n in range(min(5, len(tail), len(head)), 0, -1):
        if tail[-n:] == head[:n]:
            return words[n:]
    return words
