"""A scripted streaming transcriber for tests: what the pipeline sees from stream/speech.py, without Whisper."""

from collections.abc import Callable

from merclip.stream.speech import TranscriptUpdate, WindowText


class OneWindowLate:
    """Window K's words are shown as ``shown(K)`` when it closes and become final one window later as
    ``final(K)`` (the streaming transcriber's one-window lag); ``final`` defaults to ``shown``."""

    def __init__(self, shown: Callable[[int], str], final: Callable[[int], str] | None = None):
        self.shown, self.final = shown, final or shown

    def push(self, index, t_start_s, t_end_s, audio):
        final = (WindowText(index - 1, self.final(index - 1)),) if index else ()
        return TranscriptUpdate(WindowText(index, self.shown(index)), final, 1.0)

    def finish(self, t_start_s=None, audio=None):
        return TranscriptUpdate(None)
