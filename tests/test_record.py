"""`merclip-live --record` and `merclip rescore`: the same session scored again, window by window."""

import csv
import errno
import logging
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from merclip.stream.record import Recorder, RecordingSource
from merclip.stream.records import AudioBlock, Frame
from merclip.stream.sources import FileSource, SyntheticSource

from merclip.cli import live_main, main

LIVE = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]
TIMING = {"wall_time_utc", "latency_ms", "asr_ms", "model_ms", "dropped_windows"}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_readings(a, b):
    assert len(a) == len(b) and a
    for x, y in zip(a, b, strict=True):
        for key in x:
            if key in TIMING:
                continue
            try:
                assert abs(float(x[key]) - float(y[key])) <= 1e-4, (x["window"], key)
            except ValueError:
                assert x[key] == y[key], (x["window"], key)


def test_synthetic_session_recorded_then_rescored_gives_the_same_readings(tiny_bundle, tmp_path, capsys):
    rec, live, again = tmp_path / "s.mkv", tmp_path / "live.csv", tmp_path / "again.csv"
    code = live_main(["--source", "synthetic", "--fast", "--duration", "12", "--bundle", str(tiny_bundle), "--no-ui",
                      "--no-asr", "--log", str(live), "--record", str(rec)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "REC:" in err and "recorded 180 frames and 12.0 s of audio" in err
    assert main(["rescore", str(rec), "--bundle", str(tiny_bundle), "--no-asr", "--log", str(again)]) == 0
    assert capsys.readouterr().out == ""  # no --json: only the CSV
    _assert_same_readings(_rows(live), _rows(again))

    other = tmp_path / "labels.csv"
    assert main(["rescore", str(rec), "--bundle", str(tiny_bundle), "--no-asr", "--labels", "calm,tense,joyful",
                 "--log", str(other)]) == 0  # fmt: skip
    rows = _rows(other)
    assert [k for k in rows[0] if k.startswith("emotion_")] == ["emotion_calm", "emotion_tense", "emotion_joyful"]
    assert len(rows) == 6 and {r["top_emotion"] for r in rows} <= {"calm", "tense", "joyful"}

    capsys.readouterr()
    assert main(["report", str(live), "--compare", str(again), "--out", str(tmp_path / "pair.png")]) == 0
    out = capsys.readouterr().out
    assert "6 windows in both" in out and "Same top emotion in 6 of 6 windows" in out
    assert "max 0.0000" in out and (tmp_path / "pair.png").stat().st_size > 0

    # another frame count: said at the start, in every row, and by the report beside the live run
    fewer = tmp_path / "fewer.csv"
    capsys.readouterr()
    assert main(["rescore", str(rec), "--bundle", str(tiny_bundle), "--no-asr", "--frames", "1", "--log",
                 str(fewer)]) == 0  # fmt: skip
    assert "1 frame" in capsys.readouterr().err
    assert {r["frames_per_window"] for r in _rows(fewer)} == {"1"}
    assert {r["frames_per_window"] for r in _rows(live)} != {"1"}
    assert main(["report", str(live), "--compare", str(fewer), "--out", str(tmp_path / "fewer.png")]) == 0
    assert "Read differently" in capsys.readouterr().out


def test_speech_recorded_then_rescored_gives_the_same_transcripts(tiny_bundle, whisper_dir, tmp_path, capsys):
    rec, live, again = tmp_path / "s.mkv", tmp_path / "live.csv", tmp_path / "again.csv"
    assert live_main(["--source", "sample", "--fast", "--bundle", str(tiny_bundle), "--no-ui", "--asr-model",
                      str(whisper_dir), "--log", str(live), "--record", str(rec)]) == 0  # fmt: skip
    assert main(["rescore", str(rec), "--bundle", str(tiny_bundle), "--asr-model", str(whisper_dir), "--log",
                 str(again)]) == 0  # fmt: skip
    a, b = _rows(live), _rows(again)
    _assert_same_readings(a, b)
    assert "country" in " ".join(r["transcript"] for r in a)


def test_sigkilled_recording_plays_back_to_within_4s_of_the_kill(tiny_bundle, tmp_path):
    rec, log = tmp_path / "k.mkv", tmp_path / "k.csv"
    proc = subprocess.Popen([*LIVE, "--source", "synthetic", "--duration", "60", "--bundle", str(tiny_bundle),
                             "--no-ui", "--no-asr", "--log", str(log), "--record", str(rec)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or len(_rows(log)) < 3):
        time.sleep(0.1)
    seen = time.monotonic()
    row = _rows(log)[-1]
    time.sleep(1.0)
    killed = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # stream time at the kill, at most: the row's window end + its latency + the polling gap + the wait
    at_kill = float(row["t_end_s"]) + float(row["latency_ms"]) / 1000 + 0.1 + (killed - seen)
    last = {"Frame": 0.0, "AudioBlock": 0.0}
    for item in FileSource(rec, realtime=False, exact=True):
        last[type(item).__name__] = max(last.get(type(item).__name__, 0.0), item.t_s)
    assert last["Frame"] >= at_kill - 4 and last["AudioBlock"] >= at_kill - 4, (last, at_kill)


def test_recording_never_runs_or_waits_on_the_session_thread(tmp_path, monkeypatch):
    """Encoding and writing happen on the recorder's thread; a writer far slower than the session (here
    0.02 s per item, 5 s for the 250 items) never holds the session's items back."""
    items = [Frame(k / 15, np.zeros((48, 64, 3), np.uint8)) for k in range(150)]
    items += [AudioBlock(b * 0.1, np.zeros(1600, np.float32)) for b in range(100)]
    items.sort(key=lambda item: item.t_s)
    writers = set()
    real_write = Recorder._write

    def slow_write(self, item):
        writers.add(threading.current_thread().name)
        time.sleep(0.02)
        real_write(self, item)

    monkeypatch.setattr(Recorder, "_write", slow_write)
    recorder = Recorder(tmp_path / "cost.mkv")
    started = time.perf_counter()
    assert len(list(RecordingSource(items, recorder))) == 250
    iterated_s = time.perf_counter() - started
    recorder.close()
    assert writers and threading.current_thread().name not in writers
    assert iterated_s < 2.5, iterated_s  # half the writer's time: the session did not wait for it
    assert not recorder.failure


def test_record_and_rescore_refuse_bad_paths(tiny_bundle, tmp_path, capsys):
    base = ["--source", "synthetic", "--fast", "--duration", "2", "--bundle", str(tiny_bundle), "--no-ui", "--no-asr"]
    assert live_main([*base, "--record", str(tmp_path)]) == 2
    assert live_main([*base, "--record", str(tmp_path / "s.mp4")]) == 2
    assert live_main([*base, "--record", str(tmp_path / "no" / "s.mkv")]) == 2
    assert main(["rescore", str(tmp_path / "none.mkv"), "--bundle", str(tiny_bundle)]) == 2
    (tmp_path / "r.mkv").write_bytes(b"")
    assert main(["rescore", str(tmp_path / "r.mkv"), "--labels", "calm"]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and ".mkv" in err and "does not exist" in err and "recording not found" in err
    assert "two or more comma-separated labels" in err


def test_exact_replay_keeps_every_frame(tmp_path):
    """Replay of a recording is frame-exact: no decimation, the same times and pixels."""
    src = SyntheticSource(duration_s=4, fps=15)
    recorder = Recorder(tmp_path / "f.mkv")
    live = [item for item in RecordingSource(src, recorder) if isinstance(item, Frame)]
    recorder.close()
    back = [item for item in FileSource(tmp_path / "f.mkv", realtime=False, exact=True) if isinstance(item, Frame)]
    assert [f.t_s for f in back] == [f.t_s for f in live]
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(live, back, strict=True))


def test_rec_is_visible_in_the_ui_title_while_recording(tiny_bundle, tmp_path, monkeypatch, capsys):
    from merclip.stream import live

    titles = []
    real = live.UiState

    def spy(title, *args, **kw):
        titles.append(title)
        return real(title, *args, **kw)

    monkeypatch.setattr(live, "UiState", spy)
    base = ["--source", "synthetic", "--fast", "--duration", "2", "--bundle", str(tiny_bundle), "--no-ui", "--no-asr"]
    assert live_main([*base, "--record", str(tmp_path / "r.mkv")]) == 0
    assert live_main(base) == 0
    assert titles == ["MER-CLIP Live  ● REC", "MER-CLIP Live"]


def test_close_returns_when_the_writer_died_with_a_full_queue(tmp_path, monkeypatch, caplog):
    writing, gate = threading.Event(), threading.Event()

    def disk_full(self, item):
        writing.set()
        gate.wait(10)  # stuck on its first item while the session fills the queue
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Recorder, "_write", disk_full)
    caplog.set_level(logging.WARNING, logger="merclip.stream.record")
    rec = Recorder(tmp_path / "s.mkv")
    block = AudioBlock(0.0, np.zeros(160, np.float32))
    rec.put(block)
    assert writing.wait(5)
    while not rec._queue.full():
        rec.put(block)
    gate.set()  # the write fails with 1024 items waiting
    deadline = time.monotonic() + 5
    while not rec.failure and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(50):
        rec.put(block)  # the session goes on: ignored, no line per item
    closer = threading.Thread(target=rec.close, daemon=True)
    closer.start()
    closer.join(2)
    assert not closer.is_alive(), "close() waits on a queue nobody empties"
    assert "No space left on device" in rec.failure
    stopped = [r for r in caplog.records if "recording stopped" in r.getMessage()]
    assert len(stopped) == 1 and not any("recorder behind" in r.getMessage() for r in caplog.records)

    def finish_fails(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Recorder, "_finish", finish_fails)
    rec = Recorder(tmp_path / "t.mkv")  # fails while closing: close() does not wait for more
    start = time.monotonic()
    rec.close()
    assert time.monotonic() - start < 2 and rec.failure
