"""Stream components with fakes for devices: windowing, faults, drop policy, UI, CSV."""

import csv
import threading
import time

import numpy as np
import pytest
from merclip.model.reading import ReadingSetting
from merclip.stream.csvlog import SessionLog, escape_cell, new_session_path
from merclip.stream.device_source import DeviceSource
from merclip.stream.engine import BundleEngine, EngineResult
from merclip.stream.pipeline import LiveSession, window_age_ms
from merclip.stream.queues import DropOldestQueue
from merclip.stream.records import AudioBlock, Frame, Reading, SourceEvent, Window
from merclip.stream.sources import (
    REANCHOR_AHEAD_S,
    REANCHOR_S,
    FileSource,
    SyntheticSource,
    place_block,
    sample_path,
)
from merclip.stream.speech import TranscriptUpdate, WindowText
from merclip.stream.transcriber import Transcript, UnpaddedWindowTranscriber, WhisperOptions
from merclip.stream.ui import UiState, render
from merclip.stream.windowing import Windower, cut_windows
from rich.console import Console
from scripted import OneWindowLate

from merclip.errors import MerClipError

SR = 16000


def _windows(source, **kw):
    w = Windower(**kw)
    return list(cut_windows(source, w)), w


def _decode_tone(block: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(block * np.hanning(len(block))))
    return np.fft.rfftfreq(len(block), 1 / SR)[spectrum.argmax()]


def test_frames_and_audio_of_a_window_share_its_time_span():
    src = SyntheticSource(duration_s=12, fps=10, block_s=0.1)
    windows, windower = _windows(src, frames_per_window=4)
    assert len(windows) == 6 and windower.buffered == (0, 0)
    frame_interval = 1 / src.fps
    for win in windows:
        # frames: their content (red = frame number) says when they were taken
        for img, target in zip(win.frames, [win.t_start_s + (i + 0.5) * 0.5 for i in range(4)], strict=True):
            t_content = img[0, 0, 0] / src.fps  # frame numbers < 256 in 12 s at 10 fps
            assert abs(t_content - target) < frame_interval
        # audio: the tone of the first and last 0.1 s says which blocks were cut into the window
        first = _decode_tone(win.audio[:1600])
        last = _decode_tone(win.audio[-1600:])
        block0 = round(win.t_start_s / 0.1)
        assert abs(first - src.tone_hz(block0)) < 20
        assert abs(last - src.tone_hz(block0 + 19)) < 20


def test_window_count_overlap_and_flat_buffers():
    windows, w = _windows(SyntheticSource(duration_s=20), window_s=2.0, hop_s=1.0)
    assert len(windows) == 20  # 19 full overlapping windows + the last one (1 s of the stream left) flushed
    assert all(len(win.audio) == 32000 for win in windows)
    assert [win.t_start_s for win in windows[:3]] == [0.0, 1.0, 2.0]
    assert w.buffered[0] <= 20 and w.buffered[1] <= 20


def test_sample_clip_replays_with_faces_and_speech():
    windows, _ = _windows(FileSource(sample_path(), realtime=False))
    assert len(windows) == 6  # 11 s clip -> 5 full windows + the last second
    assert all(len(win.frames) == 4 and win.has_audio for win in windows)
    assert windows[0].frames[0].shape == (768, 576, 3)
    assert float(np.abs(windows[1].audio).max()) > 0.05  # real speech, not silence


def test_corrupt_and_missing_video_files_fail_clearly(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(MerClipError, match="cannot read video file"):
        FileSource(bad)
    with pytest.raises(MerClipError, match="video file not found"):
        FileSource(tmp_path / "none.mp4")


# ---- fakes --------------------------------------------------------------------------------------------
class FakeEngine:
    emotion_labels = ["happy", "sad"]
    sentiment_labels = ["positive", "negative"]

    def __init__(self, delay_s=0.0):
        self.delay_s = delay_s

    def run(self, window, transcript):
        time.sleep(self.delay_s)
        mods = ("L" if transcript else "") + ("V" if window.frames else "") + ("A" if window.has_audio else "")
        return EngineResult({"happy": 0.7, "sad": 0.2}, {"positive": 0.6, "negative": 0.4}, mods, self.delay_s * 1e3)


class FakeCamera:
    def __init__(self, frames_before_failure=None):
        self.left = frames_before_failure

    def read(self):
        if self.left is not None:
            if self.left <= 0:
                return False, None
            self.left -= 1
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self):
        pass


class FakeMic:
    """Calls back with 0.1-s blocks of a tone from a thread, like a PortAudio callback."""

    def __init__(self, on_audio):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(on_audio,), daemon=True)
        self.thread.start()

    def _run(self, on_audio):
        t = np.arange(1600) / SR
        while not self.stop.wait(0.1):
            on_audio((0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))

    def close(self):
        self.stop.set()


def _run_session(source, engine, transcriber=None, seconds=None, **kw):
    session = LiveSession(
        source,
        Windower(window_s=kw.pop("window_s", 0.5), hop_s=kw.pop("hop_s", 0.5), frames_per_window=2),
        engine,
        transcriber,
        **kw,
    )
    readings = []
    started = time.monotonic()

    def should_stop():
        return seconds is not None and time.monotonic() - started > seconds

    stats = session.run(readings.append, should_stop=should_stop)
    return readings, stats


def test_camera_lost_mid_session_keeps_going_on_audio_and_retries():
    opened = []

    def open_camera(index, w, h, fps):
        opened.append(index)
        if len(opened) == 1:
            return FakeCamera(frames_before_failure=20)  # ~1.3 s of frames, then the cable is pulled
        raise MerClipError("cannot open camera 0")

    src = DeviceSource(
        camera="0",
        microphone="",
        fps=15,
        open_camera=open_camera,
        open_microphone=lambda dev, rate, block, cb: FakeMic(cb),
        retry_s=0.3,
    )
    readings, stats = _run_session(src, FakeEngine(), seconds=3.0)
    assert len(opened) >= 2, "the camera is retried"
    assert any(e.status == "lost" for e in stats.events)
    assert "V" in readings[0].modalities
    assert readings[-1].modalities == "A", "later windows go on with audio alone"
    assert len(readings) >= 4


class ManualMic:
    """A microphone whose callback the test calls itself, at the times it sets (PortAudio's thread, made exact)."""

    def __init__(self, on_audio):
        self.on_audio = on_audio

    def close(self):
        pass


def test_place_block_keeps_jitter_back_to_back_and_reanchors_after_a_stall():
    t, nxt = place_block(None, 0.1234, 1600)
    assert (t, nxt) == (0.123, 0.123 + 0.1)  # anchored on a ms boundary, like a recording's clock
    assert place_block(nxt, nxt + 0.008, 1600)[0] == nxt  # jitter: back to back
    assert place_block(nxt, nxt - REANCHOR_S + 0.01, 1600)[0] == nxt  # a burst, early: back to back
    assert place_block(nxt, nxt + 1.0004, 1600)[0] == round((nxt + 1.0004) * 1000) / 1000  # a stall: the wall
    assert place_block(nxt, nxt - 0.4, 1600)[0] == nxt  # the 5th block of a 0.5-s backlog: back to back
    drifted = nxt - REANCHOR_AHEAD_S - 0.01  # the microphone's clock has drifted: the wall clock again
    assert place_block(nxt, drifted, 1600)[0] == round(drifted * 1000) / 1000


def test_microphone_blocks_in_pairs_and_with_jitter_lose_and_insert_nothing():
    mics = []
    src = DeviceSource(
        camera=None, microphone="", open_microphone=lambda d, r, b, cb: mics.append(ManualMic(cb)) or mics[-1]
    )
    src.start()
    clock = [0.0]
    src.now = lambda: clock[0]  # the callback's wall time, set below
    rng = np.random.default_rng(0)
    sent = 0

    def deliver(blocks: int, at: float) -> None:
        nonlocal sent
        clock[0] = at
        for _ in range(blocks):  # each sample is its own number: a lost, doubled or moved one shows
            mics[0].on_audio(np.arange(sent + 1, sent + 1601, dtype=np.float32))
            sent += 1600

    for k in range(1, 31):  # 6 s of a host buffer of two blocks: both come in one go, a few ms late or early
        deliver(2, 0.2 * k + rng.uniform(-0.008, 0.008))
    for k in range(1, 41):  # 4 s one block at a time, +-8 ms of callback jitter
        deliver(1, 6.0 + 0.1 * k + rng.uniform(-0.008, 0.008))
    blocks = [src._queue.get_nowait() for _ in range(src._queue.qsize())]
    windower = Windower(window_s=2.0, hop_s=2.0, tracks=src.tracks)
    windows = [w for block in blocks for w in windower.push(block)]
    assert len(windows) == 5
    audio = np.concatenate([w.audio for w in windows])
    first = int(np.flatnonzero(audio)[0])
    assert first == round(blocks[0].t_s * SR) and 0.09 <= blocks[0].t_s <= 0.11  # anchored on the first block
    heard = audio[first:]
    np.testing.assert_array_equal(heard, np.arange(1, len(heard) + 1, dtype=np.float32))  # no hole, no loss

    deliver(1, clock[0] + 1.0)  # the microphone stalled for a second (those samples are gone): the wall clock
    stalled = src._queue.get_nowait()
    assert abs(stalled.t_s - (clock[0] - 0.1)) < 0.001 and stalled.t_s - (blocks[-1].t_s + 0.1) > REANCHOR_S
    src.close()


def test_missing_microphone_refused_unless_allowed():
    def no_mic(*args):
        raise MerClipError("no microphone (default): device unavailable")

    src = DeviceSource(camera="0", microphone="", open_camera=lambda *a: FakeCamera(), open_microphone=no_mic)
    with pytest.raises(MerClipError, match="no microphone.*--allow-missing"):
        src.start()
    src = DeviceSource(
        camera="0", microphone="", allow_missing=True, open_camera=lambda *a: FakeCamera(), open_microphone=no_mic
    )
    src.start()
    readings, stats = _run_session(src, FakeEngine(), seconds=1.5)
    assert readings and all(r.modalities == "V" for r in readings)
    assert stats.status["A"].startswith("no microphone")


class FailingTranscriber:
    def __init__(self):
        self.calls = 0

    def transcribe(self, audio, context=""):
        self.calls += 1
        if self.calls % 2:
            raise RuntimeError("CUDA out of memory")
        return Transcript("thank you", 5.0)


def test_asr_errors_do_not_stop_the_session():
    asr = FailingTranscriber()
    readings, stats = _run_session(SyntheticSource(duration_s=4), FakeEngine(), asr, backpressure=True)
    assert len(readings) == 8 and stats.asr_errors == 4
    assert {r.modalities for r in readings} == {"VA", "LVA"}


def test_slow_engine_drops_oldest_windows_and_latency_stays_bounded():
    # windows of 0.2 s, an engine taking 0.6 s (3x slower than real time)
    src = SyntheticSource(duration_s=6, realtime=True)
    readings, stats = _run_session(src, FakeEngine(delay_s=0.6), window_s=0.2, hop_s=0.2, queue_windows=2)
    assert stats.windows == 30
    assert stats.dropped > 10 and stats.readings + stats.dropped == stats.windows
    assert max(r.latency_ms for r in readings) < 4 * 600  # never more than the queue's worth behind
    assert readings[-1].dropped_windows == stats.dropped


def test_a_window_read_late_reports_its_real_age():
    src = DeviceSource(camera="0", microphone="", fps=15, open_camera=lambda *a: FakeCamera(),
                       open_microphone=lambda dev, rate, block, cb: FakeMic(cb))  # fmt: skip
    src.start()
    time.sleep(1.5)  # capturing while nothing reads the source: its first windows are stale when read
    readings, _ = _run_session(src, FakeEngine(), seconds=2.5)
    # the first reading is of a window captured before the session read anything (0 or 1 usually; a stale
    # window may be dropped, more of them on a loaded machine): its age counts from its capture
    first = readings[0]
    assert first.t_end_s <= 1.5 and first.latency_ms > 1000 * (1.5 - first.t_end_s) - 50
    # caught up: not still ~1.5 s behind (the slack is for a loaded machine; unloaded it is a few ms)
    assert readings[-1].latency_ms < 1000
    # a replay as fast as possible has no capture clock: from when the window closed
    win = Window(0, 0.0, 2.0, (), (), np.zeros(32000, np.float32), True, closed_wall_s=100.0)
    assert window_age_ms(100.25, win, None) == 250.0 and window_age_ms(100.25, win, 97.0) == 1250.0
    # the last window of a clip or a stopped session closes before its nominal end: its age, never negative
    assert window_age_ms(100.25, win, 99.5) == 250.0


def test_devices_start_after_a_slow_whisper_load_so_the_first_window_is_fresh(tiny_bundle, monkeypatch, capsys,
                                                                              caplog):  # fmt: skip
    import json

    from merclip.stream import device_source, live

    from merclip.cli import live_main

    load_s, opened, loaded = 2.0, [], []

    class Words:
        def transcribe(self, audio, context=""):
            return Transcript("", 1.0)

    def slow_whisper(cfg, console, explicit, window_s):
        time.sleep(load_s)  # a first-run download or a big model
        loaded.append(time.monotonic())
        return Words()

    def microphone(device, rate, block_s, on_audio):
        opened.append(time.monotonic())
        return FakeMic(on_audio)

    monkeypatch.setattr(live, "open_transcriber", slow_whisper)
    monkeypatch.setattr(device_source, "opencv_camera", lambda *a: FakeCamera())
    monkeypatch.setattr(device_source, "sounddevice_microphone", microphone)
    monkeypatch.setattr(DeviceSource, "QUEUE_ITEMS", 20)  # < what 2 s of capture would queue (~50 items)
    code = live_main(["--camera", "0", "--bundle", str(tiny_bundle), "--no-ui", "--duration", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert opened[-1] > loaded[0], "the session's microphone opens after Whisper is loaded"
    assert "capture queue full" not in caplog.text
    first = json.loads(out.splitlines()[0])
    assert first["window"] == 0 and first["latency_ms"] < 1000  # not the 2 s the load took


def test_drop_oldest_queue_policy():
    q = DropOldestQueue(2)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3 and [q.get(0), q.get(0)] == [3, 4]


def test_bundle_engine_uses_what_is_present(tiny_bundle):
    from merclip.export.runtime import Bundle

    engine = BundleEngine(Bundle.load(tiny_bundle))
    windows, _ = _windows(SyntheticSource(duration_s=2, audio=False))
    assert engine.run(windows[0], "").modalities == "V"
    result = engine.run(windows[0], "so happy to see you")
    assert result.modalities == "LV" and set(result.emotions) == set(engine.emotion_labels)
    silent = windows[0].__class__(**{**windows[0].__dict__, "frames": (), "frame_times_s": ()})
    assert engine.run(silent, "").emotions == {}  # nothing present: no reading invented


def test_unpadded_window_path_still_runs_when_asked(whisper_dir):
    windows, _ = _windows(FileSource(sample_path(), realtime=False))
    asr = UnpaddedWindowTranscriber(WhisperOptions(model=str(whisper_dir), vad=False, mode="window-unpadded"))
    out = asr.transcribe(windows[1].audio, context="And so")
    assert isinstance(out.text, str) and out.ms > 0
    vad = UnpaddedWindowTranscriber(WhisperOptions(model=str(whisper_dir), vad=True))
    assert vad.transcribe(np.zeros(32000, np.float32)).text == ""  # silence costs no decoding
    with pytest.raises(MerClipError, match="--asr-model DIR, or --no-asr"):
        UnpaddedWindowTranscriber(WhisperOptions(model=str(whisper_dir / "missing")))


def test_ui_renders_bars_transcript_status_and_banner():
    stats = LiveSession(SyntheticSource(1), Windower(), FakeEngine()).stats
    stats.status.update({"V": "ok", "A": "ok", "L": "ok"})
    stats.readings, stats.dropped = 3, 1
    state = UiState(
        "MER-CLIP Live",
        "tiny (trained, fp32, random weights)",
        "sample clip",
        ["happy", "sad"],
        ["positive", "negative"],
        banner="RANDOM WEIGHTS: readings are meaningless",
    )
    reading = Reading(
        2,
        4.0,
        6.0,
        "2026-01-01T00:00:00",
        {"happy": 0.8, "sad": 0.1},
        {"positive": 0.7, "negative": 0.3},
        "ask not what your country",
        "LVA",
        1,
        120.0,
        50.0,
        60.0,
    )
    state.add(reading)
    console = Console(record=True, width=110)
    console.print(render(state, stats))
    text = console.export_text()
    assert "RANDOM WEIGHTS" in text and "ask not what your country" in text
    assert "happy" in text and "█" * 20 in text and "0.80" in text
    assert "● face" in text and "● voice" in text and "● words" in text
    assert "dropped 1" in text and "positive" in text


def test_csv_log_columns_escape_and_never_overwrite(tmp_path):
    log = SessionLog(tmp_path, ["happy", "a calm and content state"], ["positive", "negative"], ReadingSetting())
    log.write(
        Reading(
            0,
            0.0,
            2.0,
            "t",
            {"happy": 0.5, "a calm and content state": 0.25},
            {"positive": 0.9, "negative": 0.1},
            '=HYPERLINK("http://x")',
            "LVA",
            0,
            10.0,
            2.0,
            3.0,
        )
    )
    log.close()
    rows = list(csv.reader(open(log.path, newline="")))
    assert rows[0][:4] == ["window", "t_start_s", "t_end_s", "wall_time_utc"]
    assert "emotion_a calm and content state" in rows[0]
    assert rows[0][-11:-4] == ["latency_ms", "asr_ms", "model_ms", "face_box", "state", "confidence", "agreement"]
    assert rows[0][-4:] == ["reading_context", "window_s", "hop_s", "frames_per_window"]
    assert rows[1][rows[0].index("face_box")] == "" and rows[1][rows[0].index("agreement")] == ""
    assert rows[1][-4:] == ["window", "2", "2", "4"]
    assert rows[1][rows[0].index("transcript")] == '\'=HYPERLINK("http://x")'
    again = new_session_path(log.path)
    assert again != log.path and again.name.endswith("-1.csv")
    assert escape_cell("-1+2") == "'-1+2" and escape_cell("hello") == "hello"


def test_frames_are_chosen_and_handed_out_before_their_window_closes():
    w = Windower(window_s=2.0, hop_s=2.0, frames_per_window=4)  # waits for audio that never comes: flush closes
    early, windows = [], []
    for i in range(40):  # 10 fps video, no audio: 4 s
        windows += list(w.push(Frame(i / 10, np.full((4, 4, 3), i, np.uint8))))
        early += [(i / 10, int(f[0, 0, 0])) for f in w.take_settled()]
    windows += list(w.flush())
    # each slot (0.25, 0.75, 1.25, 1.75 s ...) is settled by the first frame at or after it, never later
    assert [t for t, _ in early] == [0.3, 0.8, 1.3, 1.8, 2.3, 2.8, 3.3, 3.8]
    # ... and the windows that close later hold the very same frames (so their features are reused)
    assert [int(f[0, 0, 0]) for win in windows for f in win.frames] == [v for _, v in early]


def test_frames_encoded_ahead_give_the_same_reading(tiny_bundle):
    from merclip.export.runtime import Bundle

    bundle = Bundle.load(tiny_bundle)
    windows, _ = _windows(SyntheticSource(duration_s=2))
    plain = BundleEngine(bundle).run(windows[0], "hello")
    ahead = BundleEngine(bundle)
    ahead.prepare_frames(windows[0].frames[:3])  # as the windower hands them out during the window
    early = ahead.run(windows[0], "hello")
    assert early.modalities == plain.modalities == "LVA"
    for key in plain.emotions:
        assert abs(early.emotions[key] - plain.emotions[key]) < 1e-5


def test_ui_transcript_line_shows_each_word_once_as_windows_become_final():
    state = UiState("MER-CLIP Live", "tiny", "sample clip", ["happy"], ["positive", "negative"])

    def reading(window, text, final):
        return Reading(window, 2.0 * window, 2.0 * window + 2, "t", {"happy": 0.5},
                       {"positive": 0.5, "negative": 0.5}, text, "LVA", 0, 1.0, 1.0, 1.0, final=final)  # fmt: skip

    state.add(reading(0, "and so my fellow amer", False))
    assert state.transcript == "and so my fellow amer"
    state.add(reading(1, "americans ask", False))
    state.add(reading(0, "and so my fellow", True))  # window 0's final words arrive after window 1 is shown
    assert state.transcript == "and so my fellow americans ask"
    state.add(reading(1, "americans ask", True))  # the newest window's words become final: not twice
    assert state.transcript == "and so my fellow americans ask"
    assert state.top_counts == {"happy": 2} and state.last.window == 1  # counted once per window, when final


def test_a_model_error_drops_the_window_never_logs_numbers_from_other_words():
    words = OneWindowLate(lambda k: f"w{k}?", lambda k: f"w{k}")  # window K shown "wK?", final "wK"

    class Flaky(FakeEngine):
        def run(self, window, transcript):
            if window.index == 2 or (window.index == 3 and transcript == "w3"):  # provisional / final re-run
                raise RuntimeError("onnxruntime: out of memory")
            return EngineResult({"happy": len(transcript) / 10, "sad": 0.0}, {"positive": 1.0, "negative": 0.0},
                                "LVA", 1.0)  # fmt: skip

    session = LiveSession(SyntheticSource(duration_s=12), Windower(), Flaky(), words, backpressure=True)
    readings = []
    stats = session.run(readings.append)
    final = [r for r in readings if r.final]
    assert [r.window for r in final] == [0, 1, 4, 5]
    assert all(r.emotions["happy"] == len(r.transcript) / 10 for r in final)  # each row's numbers, its words
    assert stats.engine_errors == 2 and stats.dropped == 2 and final[-1].dropped_windows == 2
    assert not session._finals  # no words left waiting for a reading that will never come


class _StoppedMidWindow:
    """A source that has delivered 5.3 s when the user presses Ctrl-C, and (like a camera or a real-time
    replay) has one more item in hand when it is told to close."""

    def __init__(self):
        self.closed, self.waiting = threading.Event(), threading.Event()

    def __iter__(self):
        for item in SyntheticSource(duration_s=8):
            if item.t_s >= 5.3:
                self.waiting.set()
                self.closed.wait(30)
            yield item

    def close(self):
        self.closed.set()


def test_ctrl_c_keeps_the_open_window():
    source = _StoppedMidWindow()
    session = LiveSession(source, Windower(), FakeEngine(), None, backpressure=True)  # no window dropped
    readings = []
    session.run(readings.append, should_stop=lambda: len(readings) >= 2 and source.waiting.is_set())
    final = [r for r in readings if r.final]
    assert [r.window for r in final] == [0, 1, 2]  # [4, 6): the 1.3 s heard of it are read


@pytest.mark.parametrize("backpressure", [True, False])
def test_a_slow_display_never_loses_a_row_silently(backpressure, monkeypatch):
    from merclip.stream import pipeline

    monkeypatch.setattr(pipeline, "READINGS_QUEUE", 3)
    session = LiveSession(SyntheticSource(duration_s=10), Windower(window_s=0.5, hop_s=0.5, frames_per_window=2),
                          FakeEngine(), None, backpressure=backpressure)  # fmt: skip
    rows = []

    def slow_write(reading):
        time.sleep(0.01)  # a row is one fsync
        if reading.final:
            rows.append(reading.window)

    stats = session.run(slow_write)
    if backpressure:  # replaying a file: the model waits for the display
        assert rows == list(range(20)) and stats.dropped == 0
    else:  # live: rows the display could not take are counted
        assert len(rows) < 20 and len(rows) + stats.dropped == stats.windows == 20


def test_a_window_with_more_frames_than_the_cache_still_reads(tiny_bundle, monkeypatch):
    from merclip.export.runtime import Bundle
    from merclip.stream import engine as engine_module

    monkeypatch.setattr(engine_module, "FRAME_CACHE", 4)
    bundle = Bundle.load(tiny_bundle)
    windows, _ = _windows(SyntheticSource(duration_s=2), frames_per_window=6)
    plain = BundleEngine(bundle).run(windows[0], "hello")
    ahead = BundleEngine(bundle)
    ahead.prepare_frames(windows[0].frames[:3])  # cached; encoding the other three evicts some of them
    early = ahead.run(windows[0], "hello")
    assert early.modalities == "LVA"
    for key in plain.emotions:
        assert abs(early.emotions[key] - plain.emotions[key]) < 1e-5


def test_a_window_without_audio_keeps_the_rows_in_window_order():
    """The microphone stops: the window heard without audio makes the transcriber final all that is pending
    (windows 1 and 2), and its own row comes after theirs (it used to come first: rows 0, 3, 1, 2)."""

    class TwoLate:  # words final two windows after their window closed, or at finish()
        def __init__(self):
            self.pending = []

        def push(self, index, t_start_s, t_end_s, audio):
            self.pending.append(index)
            due = [i for i in self.pending if i <= index - 2]
            self.pending = [i for i in self.pending if i > index - 2]
            return TranscriptUpdate(WindowText(index, f"w{index}"), tuple(WindowText(i, f"w{i}") for i in due))

        def finish(self, t_start_s=None, audio=None):
            time.sleep(0.2)  # a last Whisper pass: the model thread has long finished window 2 meanwhile
            done, self.pending = self.pending, []
            return TranscriptUpdate(None, tuple(WindowText(i, f"w{i}") for i in done))

    items = [Frame(t / 10, np.zeros((8, 8, 3), np.uint8)) for t in range(80)]
    items += [AudioBlock(k / 10, np.full(1600, 0.1, np.float32)) for k in range(60)]  # the microphone stops at 6 s
    items.sort(key=lambda item: item.t_s)
    items.insert(next(i for i, it in enumerate(items) if it.t_s >= 6.5), SourceEvent(6.5, "A", "lost", "mic"))
    session = LiveSession(items, Windower(), FakeEngine(), TwoLate(), backpressure=True)
    finals = []
    session.run(lambda r: finals.append(r.window) if r.final else None)
    assert finals == [0, 1, 2, 3]


@pytest.mark.parametrize("seconds, duration_s, heard_s", [(4.2, None, 0.2), (4.2, 4.1, 0.1), (10.0, 4.1, 0.1)])
def test_the_streams_end_after_the_last_window_is_heard_not_read(seconds, duration_s, heard_s):
    """A stream that ends 0.2 s into a window (under MIN_TRAILING_S: no window, no reading) hands those samples
    to the transcriber with the last window, so a word the end cut short is heard whole; --duration bounds
    what is heard, and the window it cuts is heard up to it."""
    heard = {}

    class Records(OneWindowLate):
        def finish(self, t_start_s=None, audio=None):
            heard["rest"] = (t_start_s, audio)
            return super().finish()

    samples = np.arange(1, seconds * 16000 + 1, dtype=np.float32)
    items = [AudioBlock(k * 0.1, samples[k * 1600 : (k + 1) * 1600]) for k in range(round(seconds * 10))]
    session = LiveSession(items, Windower(tracks="A"), FakeEngine(), Records(str), duration_s=duration_s,
                          backpressure=True)  # fmt: skip
    finals = []
    session.run(lambda r: finals.append(r.window) if r.final else None)
    assert finals == [0, 1]
    t_start_s, audio = heard["rest"]
    assert t_start_s == 4.0 and np.array_equal(audio, samples[64000 : 64000 + round(heard_s * 16000)])


def test_the_last_windows_reading_reads_the_words_heard_after_it():
    """The utterance context: the stream's last window owns the words its final pass heard after its end (the
    stream's end, too short to make a window), so its final reading reads them too."""
    from merclip.model.reading import ReadingSetting
    from merclip.stream.speech import Word

    said = (Word(0.2, 0.6, " or"), Word(1.2, 1.6, " both"))

    class EndHeard:
        def push(self, index, t_start_s, t_end_s, audio):  # the window's pass heard "in" cut short, as "i"
            shown = (*said, Word(1.8, 2.0, " i"))
            return TranscriptUpdate(WindowText(index, "or both i", shown))

        def finish(self, t_start_s=None, audio=None):  # the last pass heard the stream's end: "in" whole
            words = (*said, Word(1.85, 2.2, " in"))  # midpoint 2.025: past the window's end
            return TranscriptUpdate(None, (WindowText(0, "or both in", words),))

    class Reads(FakeEngine):
        texts = []

        def run(self, window, transcript):
            self.texts.append(transcript)
            return super().run(window, transcript)

    items = [AudioBlock(k * 0.1, np.full(1600, 0.1, np.float32)) for k in range(22)]
    engine = Reads()
    session = LiveSession(items, Windower(tracks="A"), engine, EndHeard(), backpressure=True,
                          reading=ReadingSetting(context="utterance"))  # fmt: skip
    rows = []
    session.run(lambda r: rows.append(r.transcript) if r.final else None)
    assert rows == ["or both in"] and engine.texts == ["or both i", "or both in"]
