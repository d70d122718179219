"""Hardening of the live path: missing tracks, formula injection, full disks, closed stdout, signals during the
first-run export, damaged streams, unusable --log paths, silent partial sessions, the bounded bundle cache."""

import csv
import errno
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from merclip.model.reading import ReadingSetting
from merclip.stream.csvlog import SessionLog
from merclip.stream.records import Reading
from merclip.stream.sources import FileSource, sample_path
from merclip.stream.windowing import Windower

from merclip.cli import live_main

LIVE = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _live(*flags, **kw):
    return subprocess.run([*LIVE, *flags], capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


def _write_media(path: Path, video=True, audio=True, silent=False, empty_audio=False, seconds=4.0, fps=10):
    """MPEG-4 video and/or AAC audio; ``empty_audio``: an audio track declared, never fed (the muxer drops it)."""
    import av

    with av.open(str(path), "w") as box:
        if video:
            vs = box.add_stream("mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        if audio or empty_audio:
            aus = box.add_stream("aac", rate=16000)
            aus.layout = "mono"
        if video:
            for i in range(int(seconds * fps)):
                img = np.full((48, 64, 3), (i * 3) % 255, np.uint8)
                for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    box.mux(packet)
        if audio:
            t = np.arange(int(seconds * 16000)) / 16000
            tone = np.zeros(len(t), np.float32) if silent else (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
            for start in range(0, len(tone), 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 16000, start, Fraction(1, 16000)
                for packet in aus.encode(frame):
                    box.mux(packet)
        for stream in box.streams:
            for packet in stream.encode(None):
                box.mux(packet)
    return path


def _write_image(path: Path):
    import av

    codec = "png" if path.suffix == ".png" else "mjpeg"
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32, 0] = 200
    with av.open(str(path), "w", format="image2") as box:
        stream = box.add_stream(codec, rate=1)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return path


def _windows(source):
    windower, out = Windower(), []
    for item in source:
        if hasattr(item, "status"):
            continue
        out.extend(windower.push(item))
    out.extend(windower.flush())
    return out


def _reading(i=0, emotions=None, sentiment=None, transcript="", modalities="LVA", wall="2026-01-01T00:00:00"):
    emotions = emotions or {"happy": 0.5, "sad": 0.25}
    sentiment = sentiment or {"positive": 0.9, "negative": 0.1}
    return Reading(i, 2.0 * i, 2.0 * i + 2, wall, emotions, sentiment, transcript, modalities, 0, 10.0, 2.0, 3.0)


# ---- 1. missing tracks are missing modalities -----------------------------------------------------------
@pytest.mark.parametrize(
    "kind, modalities, windows",
    [
        ("video_only", "V", 2),
        ("empty_audio_track", "V", 2),
        ("silent_audio", "V", 2),
        ("audio_only", "A", 2),
        ("png", "V", 1),
        ("jpg", "V", 1),
    ],
)
def test_a_missing_track_is_a_missing_modality_not_an_error(kind, modalities, windows, tiny_bundle, tmp_path):
    if kind in ("png", "jpg"):
        media = _write_image(tmp_path / f"still.{kind}")
    else:
        media = _write_media(
            tmp_path / f"{kind}.mp4",
            video=kind != "audio_only",
            audio=kind in ("silent_audio", "audio_only"),
            silent=kind == "silent_audio",
            empty_audio=kind == "empty_audio_track",
        )
    out = tmp_path / "s.csv"
    run = _live("--source", str(media), "--bundle", str(tiny_bundle), "--fast", "--no-ui", "--no-asr",
                "--log", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    rows = _rows(out)
    assert len(rows) - 1 == windows
    assert {r[rows[0].index("modalities")] for r in rows[1:]} == {modalities}
    if kind != "silent_audio":  # a missing track is said at start (one line) and in the summary
        start_line = run.stderr.splitlines()[0]
        assert start_line.startswith("missing: ") and media.name in start_line
        assert "Session ended" in run.stderr and f"missing: {media.name}" in run.stderr.split("Session ended")[1]


def test_still_image_is_held_for_one_window(tmp_path):
    src = FileSource(_write_image(tmp_path / "face.png"), realtime=False, still_s=2.0)
    windows = _windows(src)
    assert len(windows) == 1 and len(windows[0].frames) == 4 and not windows[0].has_audio
    assert src.still and "still image" in src.missing[0]


# ---- 2. formula injection ----------------------------------------------------------------------------------
def test_every_text_and_header_cell_is_neutralised_numbers_stay_numeric(tmp_path):
    evil = "@SUM(1+1)*cmd|' /C calc'!A0"
    emotions = [evil, "=1+1", "happy"]
    log = SessionLog(tmp_path / "s.csv", emotions, ["+pos", "-neg"], ReadingSetting())
    log.write(_reading(0, {evil: 0.9, "=1+1": 0.2, "happy": 0.1}, {"+pos": 0.6, "-neg": 0.4}, "-2+3", "=LV", "+x"))
    log.close()
    rows = _rows(log.path)
    header, row = rows
    for cell in header + row:
        assert not cell.startswith(FORMULA_START), cell
    assert row[header.index("top_emotion")] == "'" + evil
    assert row[header.index("transcript")] == "'-2+3"
    assert row[header.index("modalities")] == "'=LV" and row[header.index("wall_time_utc")] == "'+x"
    for name in ("window", "t_start_s", "t_end_s", "dropped_windows", "latency_ms", "asr_ms", "model_ms"):
        float(row[header.index(name)])  # numeric cells stay numbers
    assert float(row[header.index(f"emotion_{evil}")]) == pytest.approx(0.9)


# ---- 3. a full disk ----------------------------------------------------------------------------------------
class _FullDisk:
    """Wraps the log's real file: the next write puts half its bytes on disk, then fails with ENOSPC."""

    def __init__(self, real):
        self.real = real
        self.writes = 0

    def write(self, data):
        self.writes += 1
        self.real.write(bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_disk_full_leaves_complete_rows_and_says_so_once(tmp_path):
    said = []
    log = SessionLog(
        tmp_path / "s.csv", ["happy", "sad"], ["positive", "negative"], ReadingSetting(), on_failure=said.append
    )
    for i in range(3):
        log.write(_reading(i))
    log._file = _FullDisk(log._file)
    for i in range(3, 6):
        log.write(_reading(i))  # no exception: the session goes on
    log.close()
    data = log.path.read_bytes()
    assert data.endswith(b"\n")  # the half row was cut away
    rows = _rows(log.path)
    assert len(rows) == 4 and all(len(r) == len(rows[0]) for r in rows) and rows[-1][0] == "2"
    assert len(said) == 1 and "disk is full" in said[0] and "3 rows" in said[0]
    assert log.failure == "the disk is full" and log.rows == 3


def test_file_size_limit_mid_session_one_line_rows_intact(tiny_bundle, tmp_path):
    out = tmp_path / "s.csv"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (700, 700))

    run = subprocess.run([*LIVE, "--source", "synthetic", "--duration", "12", "--fast", "--bundle", str(tiny_bundle),
                          "--no-ui", "--no-asr", "--log", str(out)], capture_output=True, text=True, timeout=120,
                         preexec_fn=limit)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert sum("logging stopped" in line for line in run.stderr.splitlines()) == 1
    data = out.read_bytes()
    assert data.endswith(b"\n") and len(data) <= 700
    rows = _rows(out)
    assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows)
    assert "the log stopped after" in run.stderr and "6 readings" in run.stderr


# ---- 4. a closed stdout ----------------------------------------------------------------------------------------
def test_closed_stdout_stops_json_not_the_log(tiny_bundle, tmp_path):
    out = tmp_path / "p.csv"
    proc = subprocess.Popen([*LIVE, "--source", "synthetic", "--duration", "10", "--fast", "--bundle",
                             str(tiny_bundle), "--no-ui", "--no-asr", "--log", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    proc.stdout.close()  # the reader is gone before the first reading (`... | head -0`)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    rows = _rows(out)
    assert len(rows) - 1 == 5 and all(len(r) == len(rows[0]) for r in rows)


# ---- 5. signals during the first-run export ---------------------------------------------------------------------
def _export_children(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"export" in args and any(marker.encode() in a for a in args):
            found.append(int(pid))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_during_first_run_export_ends_the_child_and_leaves_nothing(tmp_path):
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp)}  # runtime.cache_dir = ~/.cache/merclip
    proc = subprocess.Popen([*LIVE, "--model", "tiny", "--source", "synthetic", "--duration", "4", "--fast",
                             "--no-ui", "--no-asr"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    children = []
    try:
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline:
            children = _export_children(str(home))
            time.sleep(0.1)
        assert children, "the export child did not start"
        time.sleep(2.0)  # well inside the export (tens of seconds)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        deadline = time.monotonic() + 5
        while _export_children(str(home)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _export_children(str(home)), "the export child outlived its parent"
    finally:
        for pid in children:  # only what this test started; nothing left behind if it failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err and "interrupted" in err
    assert not list(tmp.rglob("*.toml")), "temporary config left behind"
    bundles = home / ".cache" / "merclip" / "bundles"
    assert not list(bundles.iterdir()), "an interrupted export left a folder in the cache"


def test_leftovers_of_killed_exports_are_swept(tmp_path):
    from merclip.stream import cache

    dead = subprocess.Popen(["true"])
    dead.wait()
    root = cache.bundles_dir(tmp_path)
    (root / f".partial-{dead.pid}-tiny-x-abc123" / "bundle").mkdir(parents=True)
    (root / f".partial-{os.getpid()}-tiny-y-abc123").mkdir()  # an export still running (this process)
    (root / f".trash-{dead.pid}-tiny-z-abc123").mkdir()
    assert cache.sweep_leftovers(tmp_path) == 2
    assert [p.name for p in root.iterdir()] == [f".partial-{os.getpid()}-tiny-y-abc123"]


# ---- 6. damaged streams ----------------------------------------------------------------------------------------
def _mdat_span(data: bytes) -> tuple[int, int]:
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"mdat":
            return pos + 8, pos + size
        pos += size
    raise AssertionError("no mdat box")


def _damaged_sample(tmp_path, flips=100, seed=0) -> Path:
    data = bytearray(sample_path().read_bytes())
    lo, hi = _mdat_span(bytes(data))
    for pos in random.Random(seed).sample(range(lo, hi), flips):
        data[pos] ^= 0xFF
    path = tmp_path / f"damaged-{flips}.mp4"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("flips", [20, 100])
def test_damaged_packets_are_skipped_and_counted(flips, tmp_path):
    src = FileSource(_damaged_sample(tmp_path, flips), realtime=False)
    windows = _windows(src)
    assert len(windows) >= 5  # of 6 in the clean clip
    assert src.skipped_packets > 0
    assert sum(len(w.frames) == 4 for w in windows) >= 5 and sum(w.has_audio for w in windows) >= 5


def test_damaged_file_replays_and_the_summary_counts_skipped_packets(tiny_bundle, tmp_path):
    run = _live("--source", str(_damaged_sample(tmp_path, 100)), "--bundle", str(tiny_bundle), "--fast", "--no-ui",
                "--no-asr")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) >= 5
    assert "damaged packets skipped" in run.stderr.split("Session ended")[1]


# ---- 7. unusable --log paths -------------------------------------------------------------------------------------
def _log_error(capsys, tiny_bundle, target) -> str:
    code = live_main(["--source", "synthetic", "--duration", "2", "--fast", "--bundle", str(tiny_bundle), "--no-ui",
                      "--no-asr", "--log", str(target)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("target", ["/proc/x", "/proc/x.csv", "/dev/null"])
def test_log_at_a_system_path_is_one_error_line(target, capsys, tiny_bundle):
    assert target in _log_error(capsys, tiny_bundle, target)


def test_log_never_overwrites_a_file_that_is_not_a_session_log(capsys, tiny_bundle, tmp_path):
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    other = tmp_path / "budget.csv"
    other.write_text("month,amount\njan,3\n")
    for target in (png, other):
        before = target.read_bytes()
        line = _log_error(capsys, tiny_bundle, target)
        assert str(target) in line
        assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budget.csv", "picture.png"]


def test_log_with_an_overlong_name_is_one_error_line(capsys, tiny_bundle, tmp_path):
    target = tmp_path / ("n" * 300 + ".csv")
    line = _log_error(capsys, tiny_bundle, target)
    assert "too long" in line and str(tmp_path) in line


def test_log_in_a_folder_that_is_not_writable(capsys, tiny_bundle, tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real(p, mode, **kw))
    try:
        line = _log_error(capsys, tiny_bundle, folder)
        assert str(folder) in line and "not writable" in line
    finally:
        folder.chmod(0o700)
    assert not list(folder.iterdir())


# ---- 8. no silent partial sessions ------------------------------------------------------------------------------
class _Camera:
    def read(self):
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self):
        pass


def test_missing_microphone_is_said_at_start_and_in_the_summary(capsys, tiny_bundle, monkeypatch):
    from merclip.stream import device_source

    from merclip.errors import MerClipError

    def no_mic(*args):
        raise MerClipError("no microphone (default): device unavailable")

    monkeypatch.setattr(device_source, "opencv_camera", lambda *a: _Camera())
    monkeypatch.setattr(device_source, "sounddevice_microphone", no_mic)
    code = live_main(["--camera", "0", "--allow-missing", "--bundle", str(tiny_bundle), "--no-ui", "--no-asr",
                      "--duration", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() and '"modalities": "V"' in out
    first = err.strip().splitlines()[0]
    assert first.startswith("missing: no microphone (default)")
    assert "missing: no microphone" in err.split("Session ended")[1]


def test_a_model_failing_on_every_window_exits_1(capsys, tiny_bundle, monkeypatch):
    from merclip.stream import session

    class Broken:
        def __init__(self, bundle):
            self.emotion_labels, self.sentiment_labels = bundle.emotion_labels, bundle.sentiment_labels

        def run(self, window, transcript):
            raise RuntimeError("onnxruntime: out of memory")

    monkeypatch.setattr(session, "BundleEngine", Broken)
    code = live_main(["--source", "synthetic", "--duration", "4", "--fast", "--bundle", str(tiny_bundle), "--no-ui",
                      "--no-asr"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no reading could be made: the model failed (" in err and "in 2 windows" in err
    assert "Traceback" not in err


# ---- 9. the bundle cache is bounded ------------------------------------------------------------------------------
def _fake_bundle(root: Path, name: str, used: float, size=1000, complete=True) -> Path:
    from merclip.stream import cache

    folder = root / name
    folder.mkdir(parents=True)
    (folder / "vision.onnx").write_bytes(bytes(size))
    if complete:
        (folder / "manifest.json").write_text("{}")
        (folder / cache.USED_MARKER).touch()
        os.utime(folder / cache.USED_MARKER, (used, used))
    return folder


def test_cache_lists_prunes_least_recently_used_and_clears(tmp_path):
    from merclip.stream import cache

    root = cache.bundles_dir(tmp_path)
    now = time.time()
    for i in range(5):
        _fake_bundle(root, f"tiny-random-{i}", used=now - 100 * (5 - i), size=1000 * (i + 1))
    _fake_bundle(root, "tiny-random-broken", used=now, complete=False)
    listed = cache.list_cached_bundles(tmp_path)
    assert [b.name for b in listed if b.complete] == [f"tiny-random-{i}" for i in (4, 3, 2, 1, 0)]
    assert listed[[b.name for b in listed].index("tiny-random-4")].size_bytes >= 5000
    cache.touch_bundle(root / "tiny-random-0")  # used now: the most recent
    removed = cache.prune_cached_bundles(tmp_path, keep=3, protect=(root / "tiny-random-1",))
    assert sorted(b.name for b in removed) == ["tiny-random-2", "tiny-random-3", "tiny-random-broken"]
    assert sorted(p.name for p in root.iterdir()) == ["tiny-random-0", "tiny-random-1", "tiny-random-4"]
    assert "3 bundles" in cache.format_listing(tmp_path)
    count, freed = cache.clear_cached_bundles(tmp_path)
    assert count == 3 and freed >= 1000 + 2000 + 5000 and not list(root.iterdir())
    assert cache.list_cached_bundles(tmp_path / "none") == []


def test_label_changes_do_not_grow_the_cache_without_bound(tmp_path, monkeypatch):
    from merclip.stream import bundles, cache
    from rich.console import Console

    from merclip.config import from_dict

    def fake_export(cfg, folder):
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")

    monkeypatch.setattr(bundles, "export_in_subprocess", fake_export)
    monkeypatch.setattr(bundles, "_load_bundle", lambda folder, load, console, verify=True: Path(folder))
    console = Console(stderr=True, file=open(os.devnull, "w"))
    used = []
    for i in range(cache.MAX_CACHED_BUNDLES + 3):
        cfg = from_dict({"model": {"arch": "tiny", "weights": "random"}, "labels": {"emotion": [f"label {i}"]},
                         "runtime": {"cache_dir": str(tmp_path)}})  # fmt: skip
        used.append(bundles.resolve_bundle(cfg, console))
        time.sleep(0.01)
    left = sorted(p for p in cache.bundles_dir(tmp_path).iterdir())
    assert len(left) == cache.MAX_CACHED_BUNDLES
    assert left == sorted(used[-cache.MAX_CACHED_BUNDLES :])  # the most recently used stay
    assert all((p / cache.USED_MARKER).is_file() for p in left)
