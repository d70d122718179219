"""The streaming transcription policy (stream/speech.py), driven by a scripted recogniser: known words at
known times, spoken across window boundaries. The recogniser reads the stream time from the audio itself
(each sample holds its own index), so it sees exactly the buffer the policy gives it."""

from __future__ import annotations

import numpy as np
import pytest
from merclip.stream.speech import BUFFER_MAX_S, FINAL_LAG, Recognition, StreamingTranscriber, Word, normalize
from scripted import OneWindowLate

SR = 16000


class ScriptedRecognizer:
    """Returns the script's words heard in full, a clipped fragment of a word cut by the buffer's end (as
    Whisper does), and timestamps that wobble by ``jitter_s`` from one pass to the next."""

    def __init__(self, script: list[tuple[float, float, str]], jitter_s: float = 0.0):
        self.script = script
        self.jitter_s = jitter_s
        self.passes: list[tuple[float, float, str]] = []
        self.cut_at_start = 0  # passes whose buffer began inside a word (only right after a gap)

    def recognize(self, audio: np.ndarray, prompt: str = "") -> Recognition:
        t0 = round(float(audio[0])) / SR
        t1 = t0 + len(audio) / SR
        self.passes.append((t0, t1, prompt))
        wobble = self.jitter_s * (1 if len(self.passes) % 2 else -1)
        words = []
        for start, end, text in self.script:
            if end <= t0 or start >= t1:
                continue
            if start < t0:  # its start is not in the buffer: the tail is heard as some other word
                self.cut_at_start += 1
                words.append(Word(0.0, end - t0, " " + text[len(text) // 2 :]))
            elif end > t1:  # heard in part: a wrong, clipped word
                words.append(Word(start - t0, t1 - t0, " " + text[: max(1, len(text) // 2)]))
            else:
                words.append(Word(start - t0 + wobble, end - t0 + wobble, " " + text))
        return Recognition(words, 1.0)


def speech(seconds: float, start_s: float = 0.0) -> np.ndarray:
    first = int(round(start_s * SR))
    return np.arange(first, first + int(round(seconds * SR)), dtype=np.float32)


def run(script, seconds: float, window_s: float = 2.0, hop_s: float = 2.0, jitter_s: float = 0.0, drop=()):
    """Push every window of ``seconds`` of stream; return (final words by window, provisional, passes, st)."""
    rec = ScriptedRecognizer(script, jitter_s)
    st = StreamingTranscriber(rec)
    finals: dict[int, str] = {}
    shown: dict[int, str] = {}
    final_at: dict[int, int] = {}
    index = 0
    while index * hop_s + window_s <= seconds + 1e-9:
        if index not in drop:
            t0 = index * hop_s
            update = st.push(index, t0, t0 + window_s, speech(window_s, t0))
            shown[index] = update.current.text
            for f in update.final:
                assert f.index not in finals, f"window {f.index} final twice"
                finals[f.index] = f.text
                final_at[f.index] = index
            assert st.buffer_s <= BUFFER_MAX_S + window_s
        index += 1
    for f in st.finish().final:
        finals[f.index] = f.text
        final_at[f.index] = index
    return finals, shown, final_at, rec, st


def words_of(texts: dict[int, str]) -> list[str]:
    return [normalize(w) for k in sorted(texts) for w in texts[k].split()]


def _script(words: str, start_s: float, step_s: float, length_s: float):
    return [(start_s + i * step_s, start_s + i * step_s + length_s, w) for i, w in enumerate(words.split())]


JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def test_every_word_once_in_the_window_of_its_midpoint():
    # 22 words every 0.45 s, each 0.4 s long: many straddle a window boundary
    script = _script(JFK, 0.13, 0.45, 0.4)
    finals, shown, final_at, rec, _ = run(script, seconds=12.0)
    assert words_of(finals) == JFK.split()  # nothing lost, nothing doubled, in order
    assert rec.cut_at_start == 0
    for start, end, text in script:
        window = int((start + end) / 2 // 2.0)
        assert text in finals[window].split(), (text, window, finals)
    # final a bounded time after its own window closed: one window later when two passes agree on all its
    # words, FINAL_LAG windows when a word cut at its end was still in dispute
    assert all(k + 1 <= final_at[k] <= k + FINAL_LAG for k in finals)
    assert [final_at[k] - k for k in range(5)] == [1, 2, 1, 2, 1]
    # a window shows its words the moment it closes (except a word still being spoken at its end)
    assert sum(len(t.split()) for t in shown.values()) >= len(script) - len(shown)


def test_cut_words_are_not_shown_twice_and_final_rows_have_the_full_word():
    # a long word straddles every boundary: the closing window hears only its first half
    script = [(1.5, 2.3, "americans"), (3.8, 4.6, "country"), (5.9, 6.2, "you")]
    finals, shown, _, _, _ = run(script, seconds=8.0)
    # midpoints 1.9, 4.2 and 6.05 s: windows 0, 2 and 3
    assert finals == {0: "americans", 1: "", 2: "country", 3: "you"}
    # the closing window showed the fragment it heard; the final rows have the whole word, once
    assert shown[0].endswith("amer") and shown[1].endswith("cou")


def test_timestamp_jitter_between_passes_neither_loses_nor_doubles():
    script = _script(JFK, 0.05, 0.5, 0.45)
    finals, _, _, _, _ = run(script, seconds=12.0, jitter_s=0.04)
    assert words_of(finals) == JFK.split()


def test_silence_yields_empty_windows_and_the_buffer_stays_bounded():
    script = _script("hello there", 1.0, 0.5, 0.4) + _script("good bye", 100.0, 0.5, 0.4)
    finals, shown, _, rec, st = run(script, seconds=120.0)
    assert words_of(finals) == ["hello", "there", "good", "bye"]
    assert sum(1 for t in finals.values() if t) == 2 and all(not t for k, t in shown.items() if 2 < k < 49)
    assert max(t1 - t0 for t0, t1, _ in rec.passes) <= BUFFER_MAX_S + 2.0
    assert st.buffer_s <= BUFFER_MAX_S + 2.0


def test_long_speech_is_trimmed_at_word_boundaries_with_committed_words_as_prompt():
    words = " ".join(JFK.split() * 5)
    script = _script(words, 0.1, 0.45, 0.4)
    finals, _, _, rec, _ = run(script, seconds=50.0)
    assert words_of(finals) == words.split()
    assert rec.cut_at_start == 0  # trimmed between words, never through one
    assert max(t1 - t0 for t0, t1, _ in rec.passes) <= BUFFER_MAX_S + 2.0
    trimmed = [(t0, prompt) for t0, _, prompt in rec.passes if t0 > 0]
    assert trimmed and all(prompt for _, prompt in trimmed)  # what fell out of the buffer is the prompt


def test_a_dropped_window_restarts_the_buffer_without_losing_what_was_shown():
    script = _script(JFK, 0.13, 0.45, 0.4)
    finals, _, _, rec, _ = run(script, seconds=12.0, drop={3})
    # windows 0-2 and 4-5 keep their words, once; window 3's audio never arrived. At the gap, what was
    # pending is final as last heard (the fragment "y" of "you"), and the fresh buffer starts inside "can".
    assert finals == {0: "and so my fellow", 1: "americans ask not what your", 2: "country can do for y",
                      4: "an do for your country", 5: ""}  # fmt: skip
    assert any(t0 == 8.0 for t0, _, _ in rec.passes)  # a fresh buffer after the gap


@pytest.mark.parametrize("window_s,hop_s", [(2.0, 1.0), (2.0, 0.5)])
def test_overlapping_windows_own_their_newest_hop(window_s, hop_s):
    script = _script(JFK, 0.13, 0.45, 0.4)
    finals, _, _, _, _ = run(script, seconds=12.0, window_s=window_s, hop_s=hop_s)
    assert words_of(finals) == JFK.split()
    for start, end, text in script:
        mid = (start + end) / 2
        # window k owns [k*hop + window - hop, k*hop + window); the first one everything before it
        k = max(0, int((mid - (window_s - hop_s)) // hop_s))
        assert text in finals[k].split(), (text, k)


def revising_transcriber() -> OneWindowLate:
    """Shows "wK?" for window K, then finalizes it one window later as "wK" (changed) or "wK?" (odd K)."""
    return OneWindowLate(lambda k: f"w{k}?", lambda k: f"w{k}" + ("?" if k % 2 else ""))


def test_session_shows_each_window_at_once_and_finalizes_it_once_with_its_final_words():
    from merclip.stream.engine import EngineResult
    from merclip.stream.pipeline import LiveSession
    from merclip.stream.sources import SyntheticSource
    from merclip.stream.windowing import Windower

    class Engine:
        emotion_labels, sentiment_labels = ["happy"], ["positive", "negative"]

        def __init__(self):
            self.runs = []

        def run(self, window, transcript):
            self.runs.append((window.index, transcript))
            return EngineResult({"happy": len(transcript) / 10}, {"positive": 0.5, "negative": 0.5}, "LVA", 1.0)

    engine = Engine()
    session = LiveSession(SyntheticSource(duration_s=10, realtime=False), Windower(), engine, revising_transcriber(),
                          backpressure=True)  # fmt: skip
    readings = []
    stats = session.run(readings.append)
    shown = [r for r in readings if not r.final]
    final = [r for r in readings if r.final]
    assert [r.window for r in shown] == [r.window for r in final] == [0, 1, 2, 3, 4]
    assert [r.transcript for r in shown] == ["w0?", "w1?", "w2?", "w3?", "w4?"]
    # the last window had no later pass: it keeps the words it was shown with
    assert [r.transcript for r in final] == ["w0", "w1?", "w2", "w3?", "w4?"]
    # unchanged words reuse the first numbers; changed ones re-run the model with the final words
    assert sorted(engine.runs) == sorted([(k, f"w{k}?") for k in range(5)] + [(0, "w0"), (2, "w2")])
    assert final[0].emotions == {"happy": 0.2} and final[1].emotions == shown[1].emotions
    assert stats.readings == 5 and all(r.latency_ms == s.latency_ms for r, s in zip(final, shown, strict=True))


def test_silent_windows_with_nothing_open_cost_no_pass():
    class Quiet(ScriptedRecognizer):
        def hears_speech(self, audio):
            t0 = round(float(audio[0])) / SR
            t1 = t0 + len(audio) / SR
            return any(start < t1 and end > t0 for start, end, _ in self.script)

    script = _script("hello there", 1.0, 0.5, 0.4) + _script("good bye", 30.0, 0.5, 0.4)
    rec = Quiet(script)
    st = StreamingTranscriber(rec)
    finals = {}
    for k in range(20):
        update = st.push(k, 2.0 * k, 2.0 * k + 2, speech(2.0, 2.0 * k))
        finals.update({f.index: f.text for f in update.final})
    finals.update({f.index: f.text for f in st.finish().final})
    assert words_of(finals) == ["hello", "there", "good", "bye"]
    # passes: windows 0 and 15 (speech heard), 1 and 16 (their words still open); none for the silence
    assert [round(t1) for _, t1, _ in rec.passes] == [2, 4, 32, 34] and st.buffer_s <= BUFFER_MAX_S + 2.0


def test_a_failed_pass_keeps_the_window_pending_and_its_words_come_with_the_next_pass():
    class FailsOnce(ScriptedRecognizer):
        def recognize(self, audio, prompt=""):
            if len(self.passes) == 2 and not getattr(self, "failed", False):
                self.failed = True
                raise RuntimeError("CUDA out of memory")
            return super().recognize(audio, prompt)

    script = _script(JFK, 0.3, 0.45, 0.35)
    rec = FailsOnce(script)
    st = StreamingTranscriber(rec)
    finals, order, errors = {}, [], []
    for index in range(6):
        update = st.push(index, 2.0 * index, 2.0 * index + 2, speech(2.0, 2.0 * index))
        errors.append(update.error)
        for f in update.final:
            finals[f.index] = f.text
            order.append(f.index)
    for f in st.finish().final:
        finals[f.index] = f.text
        order.append(f.index)
    assert errors[2] == "CUDA out of memory" and sum(map(bool, errors)) == 1
    assert order == sorted(order) == list(range(6))  # final in window order, each once
    assert words_of(finals) == JFK.split()  # the failed window's words were heard by a later pass


def test_the_streams_end_after_the_last_window_is_heard_with_it():
    """A stream that ends 0.2 s into a window makes no window there (``MIN_TRAILING_S``), but its last word
    runs into those 0.2 s: one last pass hears them with the buffer, and the last window's final words hold
    the word whole, not the fragment the window's own pass heard."""
    script = _script("we could throw you both in", 0.2, 0.7, 0.5)  # "in": 3.7-4.2 s
    finals = {}
    for rest in (False, True):
        st = StreamingTranscriber(ScriptedRecognizer(script))
        for k in range(2):
            st.push(k, 2.0 * k, 2.0 * k + 2, speech(2.0, 2.0 * k))
        update = st.finish(4.0, speech(0.2, 4.0)) if rest else st.finish()
        finals[rest] = {f.index: f.text for f in update.final}
    assert finals[False][1].split()[-1] == "i"  # the window alone heard a cut word
    assert finals[True][1].split()[-1] == "in" and words_of(finals[True]) == "we could throw you both in".split()
    # audio after a gap is no continuation of the last window: not heard with it
    st = StreamingTranscriber(rec := ScriptedRecognizer(script))
    st.push(0, 0.0, 2.0, speech(2.0))
    passes = len(rec.passes)
    assert [f.index for f in st.finish(3.0, speech(0.2, 3.0)).final] == [0] and len(rec.passes) == passes
