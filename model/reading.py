"""What a reading is computed from: the window, its frames and voice, and which words (the reading context).

The monitor reads a stream in windows (``window_s`` long, one every ``hop_s``, ``frames_per_window`` frames
each); a model reads best the kind of input it was trained on, so the setting is recorded where a model is
trained (checkpoint config), travels into the bundle's manifest, and is what ``merclip eval --protocol
windows``, ``merclip-live``, ``serve`` and ``rescore`` use (issue #22). Torch-free and free of I/O, like
``face.py``: training, export and the live path share it.

Reading contexts (which words a window's reading reads; the frames and voice are always the window's own):

- ``window``: the words whose midpoint lies in the window's own span, ``[t_end - hop, t_end)`` (each word in
  exactly one window: the CSV's transcript cell).
- ``utterance``: the words of the utterance so far: back from the window's end to the last pause between
  words of at least ``UTTERANCE_PAUSE_S`` (at most ``CONTEXT_MAX_S`` of words); none when the window's own
  span began that long after the last word (the utterance is over). A model trained on whole
  utterances reads a window most like its training inputs this way, and one trained on windows of
  utterances learns to read an utterance as it unfolds. Only words the monitor has by the window's end.

Words are any objects with ``start_s``, ``end_s`` and ``text`` (``stream.speech.Word``; ``TimedWord`` here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from merclip.errors import MerClipError

CONTEXTS = ("window", "utterance")
# A silence between two words at least this long ends an utterance: longer than the pauses inside a
# sentence (commas, breaths: 0.2-0.5 s), as long as a turn change in conversation commonly takes.
UTTERANCE_PAUSE_S = 1.0
# However long someone speaks without a pause, a reading reads at most this much speech (CLIP's text tower
# reads 77 tokens; MELD utterances: 95 % are under 8 s).
CONTEXT_MAX_S = 10.0


class TimedWord(Protocol):
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class ReadingSetting:
    """How the monitor cuts a stream and what each reading reads; recorded with a trained model."""

    context: str = "window"
    window_s: float = 2.0
    hop_s: float = 2.0
    frames_per_window: int = 4

    def __post_init__(self):
        if self.context not in CONTEXTS:
            raise MerClipError(f"reading context must be one of {', '.join(CONTEXTS)}, got {self.context!r}")
        if not 0.5 <= self.window_s <= 30.0:
            raise MerClipError(f"window_s must be between 0.5 and 30 s, got {self.window_s}")
        if not 0.0 < self.hop_s <= self.window_s:
            raise MerClipError(f"hop_s must be in (0, window_s], got {self.hop_s}")
        if not 1 <= self.frames_per_window <= 64:
            raise MerClipError(f"frames_per_window must be between 1 and 64, got {self.frames_per_window}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None, **defaults) -> ReadingSetting:
        """A stored setting; missing keys (a model or bundle from before the setting existed) take
        ``defaults`` and then the class defaults: such a model read each window's own words."""
        data = {**defaults, **(data or {})}
        try:
            return cls(str(data.get("context", "window")), float(data.get("window_s", 2.0)),
                       float(data.get("hop_s", data.get("window_s", 2.0))),
                       int(data.get("frames_per_window", 4)))  # fmt: skip
        except (TypeError, ValueError) as err:
            raise MerClipError(f"reading setting is malformed: {err}") from None

    @classmethod
    def for_untrained(cls, context: str, window_s: float, hop_s: float, frames_per_window: int) -> ReadingSetting:
        """How a model that records no reading (zero-shot, random weights, a checkpoint from before the
        setting) is read: as a config's ``[capture]`` asks, its "auto" context the utterance so far (nearest
        to the whole clips such a model was trained on). One rule for its bundle (export) and its score (eval)."""
        return cls(context if context != "auto" else "utterance", window_s, hop_s, frames_per_window)

    def describe(self) -> str:
        words = "the window's own words" if self.context == "window" else "the utterance so far"
        return f"{self.window_s:g}-s windows every {self.hop_s:g} s, {self.frames_per_window} frames, {words}"


def ignored_asks(asked: Mapping[str, object], trained: ReadingSetting, who: str, skip: Sequence[str] = ()) -> list[str]:
    """One notice per reading value in ``asked`` (what a user's config or flags ask of ``[capture]``) other
    than the reading ``who`` was trained for, which wins. "auto" asks nothing."""
    notices = []
    for key in ("window_s", "hop_s", "context", "frames_per_window"):
        kept = getattr(trained, key)
        if key in asked and key not in skip and asked[key] not in ("auto", kept):
            notices.append(f"notice: capture.{key} = {asked[key]!r} ignored: {who} was trained to be read with "
                           f"{key} = {kept!r}, so that is how it reads")  # fmt: skip
    return notices


def window_words(
    words: Sequence[TimedWord], t_end_s: float, hop_s: float, first: bool = False, last: bool = False
) -> list:
    """The words a window owns: midpoint in ``[t_end - hop, t_end)``, as the streaming transcriber assigns
    them (``stream/speech.py``). The first window also owns everything before it; the stream's ``last`` one
    everything after it (the end of a stream too short to make a window is heard with the last one)."""
    start = float("-inf") if first else t_end_s - hop_s
    end = float("inf") if last else t_end_s
    return [w for w in words if start <= 0.5 * (w.start_s + w.end_s) < end]


def reading_words(
    words: Sequence[TimedWord], t_end_s: float, setting: ReadingSetting, first: bool = False, last: bool = False
) -> list:
    """The words a reading of the window ending at ``t_end_s`` reads (``words`` in time order; later ones
    are ignored: a reading uses only what the monitor has by the window's end, which for the stream's
    ``last`` window is the stream's end)."""
    if setting.context == "window":
        return window_words(words, t_end_s, setting.hop_s, first, last)
    heard = [w for w in words if last or 0.5 * (w.start_s + w.end_s) < t_end_s]
    if heard and (t_end_s - setting.hop_s) - heard[-1].end_s >= UTTERANCE_PAUSE_S:
        return []  # the window began after the last utterance had ended: silence reads no words
    start = len(heard)
    while start > 0:
        prev = heard[start - 1]
        if start < len(heard) and heard[start].start_s - prev.end_s >= UTTERANCE_PAUSE_S:
            break  # a pause: the utterance began after it
        if t_end_s - prev.start_s > CONTEXT_MAX_S:
            break
        start -= 1
    return heard[start:]


def join_text(words: Sequence[TimedWord]) -> str:
    """Words as one text (Whisper's words carry their own leading space and punctuation)."""
    return " ".join(w.text.strip() for w in words if w.text.strip())


@dataclass(frozen=True)
class SpreadWord:
    start_s: float
    end_s: float
    text: str


def spread_words(text: str, start_s: float, end_s: float) -> list[SpreadWord]:
    """A transcript with no word times (MELD's CSV), spread evenly over the span it was spoken in: each word
    gets a share of the span in proportion to its length in characters (a rough speaking pace)."""
    tokens = text.split()
    if not tokens:
        return []
    total = sum(len(t) + 1 for t in tokens)
    out, t = [], start_s
    for token in tokens:
        dt = (end_s - start_s) * (len(token) + 1) / total
        out.append(SpreadWord(t, t + dt, token))
        t += dt
    return out
