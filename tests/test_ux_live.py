"""What a user of `merclip-live` / `merclip serve` meets: recordings never overwritten or shared, unwritable
targets refused at the start, a busy port refused, conflicting flags refused, Ctrl-C's exit code, hints
that match what exists."""

import csv
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from merclip.stream import bundles, devices, live, record
from merclip.stream import cli as live_cli
from merclip.stream.devices import Camera

from merclip.cli import build_live_parser, live_main, main

LIVE = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]


def _base(bundle) -> list[str]:
    return ["--source", "synthetic", "--bundle", str(bundle), "--no-ui", "--no-asr", "--fast", "--duration", "2"]


def _help() -> str:
    return " ".join(build_live_parser().format_help().split())  # argparse wraps lines where it likes


def _error_lines(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if line.startswith("error: ")]


# ---- 1. --record never overwrites, and a name is one session's alone ---------------------------------------
def test_record_never_overwrites_an_existing_recording(tiny_bundle, tmp_path, capsys):
    old = tmp_path / "a.mkv"
    old.write_bytes(b"a 12-s recording")
    assert live_main([*_base(tiny_bundle), "--record", str(old)]) == 0
    err = capsys.readouterr().err
    assert old.read_bytes() == b"a 12-s recording"
    beside = tmp_path / "a-1.mkv"
    assert beside.stat().st_size > 1000
    assert f"to {beside}" in err and "exists and is kept" in err
    assert "never overwritten" in _help()


def test_sessions_given_the_same_name_at_once_get_a_file_each(tmp_path):
    target = tmp_path / "same.mkv"
    got, start = [], threading.Barrier(8)

    def reserve() -> None:
        start.wait()
        got.append(record.reserve_record_target(target))

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and all(p.exists() for p in got)
    assert {p.name for p in got} == {"same.mkv", *(f"same-{n}.mkv" for n in range(1, 8))}


# ---- 2. an unwritable --record is refused before the session -----------------------------------------------
def test_record_into_a_read_only_folder_is_refused_at_start(tiny_bundle, tmp_path, monkeypatch, capsys):
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # root ignores chmod: the file system says no instead
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    assert live_main([*_base(tiny_bundle), "--record", str(tmp_path / "ro" / "x.mkv")]) == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"error: cannot record to {tmp_path / 'ro' / 'x.mkv'}: the file system is read-only"]
    assert "Session ended" not in err and "Traceback" not in err


def test_a_session_that_fails_before_recording_leaves_no_empty_file(tiny_bundle, tmp_path, capsys):
    rec = tmp_path / "r.mkv"
    flags = ["--source", "synthetic", "--bundle", str(tmp_path / "nowhere"), "--no-ui", "--no-asr"]
    assert live_main([*flags, "--record", str(rec)]) == 2
    assert "bundle not found" in capsys.readouterr().err
    assert not rec.exists()


# ---- 3. merclip serve on a port already in use -------------------------------------------------------------
def test_serve_refuses_a_port_another_service_listens_on(monkeypatch, capsys):
    from merclip.stream import served

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may start on a busy port")

    monkeypatch.setattr(served, "start_service", forbidden)
    monkeypatch.setattr(bundles, "resolve_bundle", forbidden)  # refused before an export, too
    with socket.socket() as busy:  # as Ray Serve's proxy listens: SO_REUSEPORT, which a 2nd proxy would share
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", "tiny", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"error: port {port} on 127.0.0.1 is in use (another merclip serve?): choose --port"]
    served.check_port_free("127.0.0.1", port)  # free again once the other one is gone


# ---- 4. conflicting flags ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--source", "sample", "--camera", "0"], ("--camera", "--source sample")),
        (["--source", "sample", "--bundle", "B", "--model", "tiny"], ("--bundle", "--model")),
        (["--source", "sample", "--server", "http://127.0.0.1:9/merclip", "--bundle", "B"], ("--server", "--bundle")),
        (["--source", "sample", "--mic", "99", "--model", "tiny"], ("--mic", "--source sample")),
        (["--source", "synthetic", "--mic", "1", "--model", "tiny"], ("--mic", "--source synthetic")),
    ],
)
def test_conflicting_flags_are_refused_naming_both(flags, named, monkeypatch, capsys):
    monkeypatch.setattr(live, "open_engine", lambda *a: pytest.fail("a conflict is refused before the model"))
    assert live_main(["--no-ui", "--no-asr", *flags]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and all(flag in lines[0] for flag in named), lines


def test_camera_flags_that_agree_are_not_a_conflict():
    args = build_live_parser().parse_args(["--source", "camera", "--camera", "1", "--mic", "2"])
    live_cli.check_flag_conflicts(args, "camera")


def test_serve_refuses_bundle_with_model(capsys):
    assert main(["serve", "--bundle", "B", "--model", "tiny"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--bundle" in lines[0] and "--model" in lines[0]


# ---- 5. Ctrl-C and SIGTERM: every row kept, "interrupted", exit 130 / 143 -----------------------------------
@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_ends_the_session_as_interrupted(sig, code, said, tiny_bundle, tmp_path):
    out = tmp_path / "s.csv"
    proc = subprocess.Popen([*LIVE, "--source", "synthetic", "--bundle", str(tiny_bundle), "--no-ui", "--no-asr",
                             "--duration", "60", "--log", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert proc.returncode == code, err
    assert f"interrupted by {said}" in err and "Traceback" not in err
    windows = int(err.split(" readings from ")[1].split(" windows")[0])
    assert len(rows) - 1 == windows >= 2  # every window read before the stop has its row
    assert "130 interrupted by Ctrl-C (143 by SIGTERM)" in _help()


# ---- 6. hints that match what exists -----------------------------------------------------------------------
@pytest.mark.parametrize(("cameras", "hint"), [([], "no camera here"), ([Camera(2, 640, 480, 30.0)], "try --camera 2")])
def test_camera_hint_follows_the_cameras_found(cameras, hint, monkeypatch, capsys):
    monkeypatch.setattr(devices, "list_cameras", lambda: cameras)
    monkeypatch.setattr(devices, "list_microphones", lambda: ([], ""))
    monkeypatch.setattr(devices, "probe_microphone", lambda *a, **kw: devices.MicCheck("microphone (default)", "", 0.1))
    assert live_main(["--camera", "/dev/no-such-camera", "--model", "tiny", "--no-ui"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "cannot open camera /dev/no-such-camera" in line and hint in line
    assert "try --camera 1" not in line


def test_log_path_that_is_not_a_csv_is_said_to_be_a_folder(tiny_bundle, tmp_path, capsys):
    target = tmp_path / "out.txt"
    assert live_main([*_base(tiny_bundle), "--log", str(target)]) == 0
    err = capsys.readouterr().err
    assert f"notice: the log path {target} does not end in .csv, so it is a folder" in err
    assert target.is_dir() and len(list(target.glob("*.csv"))) == 1
    assert "a path ending in .csv is that file, anything else is a folder" in _help()
