"""The words each reading reads, from the words the session has heard so far (``model/reading.py``'s rule).

The streaming transcriber hands out each window's words twice: provisional when the window closes, final a
window or two later. A reading reads more than its own window's words when the model was trained so (the
``utterance`` context: the utterance so far), so the session keeps the words of the last few windows —
final where known, else as last shown — and builds each reading's text from them at the window's end.
Bounded: words more than ``CONTEXT_MAX_S`` plus a window behind the newest window are let go.
"""

from __future__ import annotations

from merclip.model.reading import CONTEXT_MAX_S, ReadingSetting, SpreadWord, join_text, reading_words, spread_words

from .records import Window
from .speech import WindowText


class ReadingContext:
    def __init__(self, setting: ReadingSetting):
        self.setting = setting
        self._words: dict[int, tuple] = {}  # window index -> its own words (final, or as last shown)
        self._ends: dict[int, float] = {}  # window index -> its end on the stream clock
        self._first: int | None = None

    def text(self, window: Window, own: WindowText) -> str:
        """The text a reading of ``window`` reads, given the window's own words as known now."""
        self._first = window.index if self._first is None else min(self._first, window.index)
        self._words[window.index] = own.words or tuple(self._spread(window, own.text))
        self._ends[window.index] = window.t_end_s
        self._forget(window.t_end_s)
        if self.setting.context == "window":
            return own.text
        heard = [w for index in sorted(self._words) if index <= window.index for w in self._words[index]]
        # These are the words the transcriber gave this window and earlier ones: all heard by its end. Only the
        # stream's last window holds any past its end (the stream's end after it, heard with it): ``last``.
        first = window.index == self._first
        return join_text(reading_words(heard, window.t_end_s, self.setting, first=first, last=True))

    def _spread(self, window: Window, text: str) -> list[SpreadWord]:
        """Words without times (a per-window transcriber): spread over the window's own span."""
        return spread_words(text, window.t_end_s - self.setting.hop_s, window.t_end_s)

    def _forget(self, now_s: float) -> None:
        horizon = now_s - CONTEXT_MAX_S - 2 * self.setting.window_s
        for index in [i for i, end in self._ends.items() if end < horizon]:
            del self._words[index], self._ends[index]
