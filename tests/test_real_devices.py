"""`merclip-live` on real device servers, not fakes: a PulseAudio daemon whose default source is a virtual
microphone (what PortAudio's ALSA ``default`` is on most Linux desktops) and an HTTP MJPEG camera serving the
sample clip's frames (what phone-as-webcam apps and IP cameras serve). Through the real entry point, as a
user runs it: JFK's words and the face in the right windows, a microphone suspended and a camera server
stopped mid-session (both said once, counted, and back), and a clap -- a white frame and a click at one
instant -- placed in the same place on the session's clock.

PulseAudio comes from the system (``.ci/run`` installs it); without it these tests are skipped here, saying
why, and fail in CI (``MERCLIP_REAL_DEVICES=required``), so a CI machine cannot pass them by not running them.
"""

from __future__ import annotations

import csv
import ctypes.util
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import wave
from collections import Counter
from pathlib import Path

import av
import jiwer
import numpy as np
import pytest
import rig
from media_util import speech
from merclip.model.face import FaceSetting
from merclip.stream.device_source import DEVICE_START_S
from merclip.stream.sources import sample_path

LIVE = Path(sys.executable).with_name("merclip-live")  # the console script pip installed
DOCTOR = Path(sys.executable).with_name("merclip")
JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
CAMERA_FPS = 15.0


def plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


def _unavailable(why: str) -> None:
    if rig.required():
        pytest.fail(f"{rig.REQUIRED_ENV}=required, but {why}")
    pytest.skip(f"real-device tests need a PulseAudio server: {why}")


@pytest.fixture(scope="session")
def pulse():
    why = rig.PulseServer.missing()
    if not why and ctypes.util.find_library("portaudio") is None:
        why = "the PortAudio library is not installed (apt-get install libportaudio2)"
    if why:
        _unavailable(why)
    server = rig.PulseServer()
    try:
        server.start()
    except RuntimeError as err:
        _unavailable(str(err))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def camera_frames() -> list[bytes]:
    return rig.jpeg_frames(sample_path(), CAMERA_FPS)


@pytest.fixture
def camera(camera_frames):
    server = rig.MjpegServer(camera_frames, fps=CAMERA_FPS).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def face_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle, its manifest saying it reads face crops (as a zero-shot or trained MOSEI model does)."""
    out = tmp_path_factory.mktemp("face") / "bundle"
    shutil.copytree(tiny_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["preprocess"]["face"] = FaceSetting("haar").to_json()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="session")
def jfk_wav(tmp_path_factory) -> Path:
    """The sample clip's speech (JFK, 11 s) as a WAV for paplay."""
    path = tmp_path_factory.mktemp("jfk") / "jfk.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(speech(), -1, 1) * 32767).astype(np.int16).tobytes())
    return path


class Live:
    """``merclip-live --no-ui`` running on the rig: its readings as they come, and the session's own clock
    (stream time) as seen from here, from the first reading (its window's end plus its age when published)."""

    def __init__(self, args: list[str], env: dict):
        assert LIVE.is_file(), f"{LIVE} missing: pip install -e '.[dev]'"
        self.proc = subprocess.Popen([str(LIVE), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        self.readings: list[dict] = []
        self.stderr = ""
        self._first = threading.Event()
        self._origin = 0.0  # time.monotonic() at stream time 0, estimated
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                reading = json.loads(line)
                if not self.readings:
                    self._origin = time.monotonic() - reading["t_end_s"] - reading["latency_ms"] / 1000
                    self._first.set()
                self.readings.append(reading)

    def first(self, timeout_s: float = 90.0) -> dict:
        if not self._first.wait(timeout_s):
            self.proc.kill()
            pytest.fail(f"no reading in {timeout_s:g} s: {self.proc.stderr.read()[-2000:]}")
        return self.readings[0]

    def now(self) -> float:
        return time.monotonic() - self._origin

    def at(self, stream_s: float) -> None:
        time.sleep(max(0.0, stream_s - self.now()))

    def finish(self, timeout_s: float = 60.0) -> int:
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _rows(log: Path) -> list[dict]:
    rows = list(csv.DictReader(log.open(newline="")))
    return sorted(rows, key=lambda r: int(r["window"]))


def test_jfk_into_the_microphone_with_a_network_camera(pulse, camera, jfk_wav, face_bundle, tmp_path, capsys):
    log = tmp_path / "session.csv"
    live = Live(["--camera", camera.url, "--bundle", str(face_bundle), "--no-ui", "--log", str(log),
                 "--duration", "16"], pulse.env)  # fmt: skip
    first = live.first()
    played_s = live.now()  # where JFK starts on the session's clock
    pulse.play(jfk_wav).wait(30)
    assert live.finish() == 0, live.stderr
    rows = _rows(log)
    said = plain(" ".join(r["transcript"] for r in rows))
    shown_s = first["t_end_s"] + first["latency_ms"] / 1000
    faces = [r for r in rows if "V" in r["modalities"] and r["face_box"]]
    latency = sorted(float(r["latency_ms"]) for r in rows)
    with capsys.disabled():
        print(f"\nJFK into PulseAudio + MJPEG camera: WER {jiwer.wer(JFK, said):.3f}, first reading shown at "
              f"{shown_s:.2f} s, a face in {len(faces)}/{len(rows)} windows, latency median "
              f"{latency[len(latency) // 2]:.0f} ms, max {latency[-1]:.0f} ms; said: {said}")  # fmt: skip
    # the first reading comes within 3 s of the start of capture (the microphone's start-up included)
    assert first["window"] == 0 and shown_s <= 3.0, first
    assert [int(r["window"]) for r in rows] == list(range(8)), "a row per window, none lost"
    assert jiwer.wer(JFK, said) <= 0.05, said
    assert all(n <= Counter(JFK.split())[w] for w, n in Counter(said.split()).items()), f"a word twice: {said}"
    spoken = [float(r["t_start_s"]) for r in rows if r["transcript"].strip()]
    assert played_s - 2.0 < spoken[0] <= played_s + 1.0, "the first words in the window they were said in"
    assert spoken[-1] < played_s + 11.0, "the last words too (JFK speaks for 11 s)"
    assert len(faces) >= 0.9 * len(rows), [r["modalities"] for r in rows]
    assert rows[-1]["late_items"] == "0"


def test_microphone_suspended_and_camera_server_stopped_mid_session(pulse, camera, tiny_bundle, tmp_path):
    hiss = rig.Clapper(pulse, noise=0.01)  # a room is never digital silence: voice is there when the mic is
    log = tmp_path / "session.csv"
    try:
        live = Live(["--camera", camera.url, "--bundle", str(tiny_bundle), "--no-ui", "--no-asr", "--log",
                     str(log), "--duration", "18"], pulse.env)  # fmt: skip
        live.first()
        live.at(3.5)  # the microphone is off over [3.5, 6.5]: window [4, 6] has nothing from it
        pulse.suspend(True)
        live.at(6.5)
        pulse.suspend(False)
        live.at(7.5)  # the camera is off over [7.5, 11.5]: window [8, 10] has no frame
        camera.stop()
        live.at(11.5)
        camera.start()
        assert live.finish() == 0, live.stderr
    finally:
        hiss.close()
    err = live.stderr
    name = f"camera {camera.url}"
    for line in ("microphone (default) sent nothing for 1 s", "microphone (default) delivering again",
                 f"{name} reconnecting (it stopped sending frames)", f"{name} delivering again"):  # fmt: skip
        assert err.count(line) == 1, f"said once: {line!r}\n{err}"
    assert "microphone (default) stopped once (3." in err and f"{name} stopped once (" in err  # summary
    assert "Stream ends prematurely" not in err and "[http @" not in err  # no FFmpeg noise
    rows = {int(r["window"]): r for r in _rows(log)}
    assert sorted(rows) == list(range(9)), "the session goes on: a row for every window"
    used = {k: r["modalities"] for k, r in rows.items()}
    assert "A" in used[1] and "A" not in used[2] and "A" in used[4], used  # the mic off in [4, 6], then back
    assert "V" in used[3] and "V" not in used[4] and "V" in used[7] and "V" in used[8], used  # camera [8, 10]
    assert rows[8]["late_items"] == "0"


def _claps(recording: Path) -> tuple[list[float], list[float]]:
    """(white frames, clicks) in a session recording, on the session's clock: the first of each group."""

    def firsts(times):
        return [t for k, t in enumerate(times) if k == 0 or t - times[k - 1] > 0.5]

    with av.open(str(recording)) as box:
        white = [float(f.time) for f in box.decode(video=0) if f.to_ndarray(format="gray").mean() > 200]
    with av.open(str(recording)) as box:  # each packet at its own time: a gap the session left stays a gap
        loud = [float(f.time) + i / f.sample_rate for f in box.decode(audio=0)
                for i in np.flatnonzero(np.abs(f.to_ndarray().reshape(-1)) > 0.3)]  # fmt: skip
    return firsts(white), firsts(loud)


def test_a_clap_is_placed_at_one_instant_for_camera_and_microphone(pulse, camera, tiny_bundle, tmp_path, capsys):
    """A white frame and a click at the same instant (a clapperboard): where the session places each. The rig's
    own difference (the click written vs the white frame sent) is taken out; what is left is the capture
    paths' offset, which must stay within one frame interval. The clapper starts playing after the session:
    the sound server goes from idle to busy under the microphone, as when anything starts playing, and skips
    what it had buffered -- the microphone's placement must follow (device_source.DRIFT_S)."""
    recording = tmp_path / "claps.mkv"
    live = Live(["--camera", camera.url, "--bundle", str(tiny_bundle), "--no-ui", "--no-asr", "--record",
                 str(recording), "--duration", "16"], pulse.env)  # fmt: skip
    live.first()
    clapper = rig.Clapper(pulse)
    try:
        time.sleep(1.5)
        for _ in range(5):
            at = time.monotonic() + 0.5
            clapper.click(at)
            camera.flash(at, 0.2)
            time.sleep(2.3)
        assert live.finish() == 0, live.stderr
    finally:
        clapper.close()
    white, clicks = _claps(recording)
    sent = [min(t for t in camera.flashed if t > played - 0.3) for played in clapper.played]
    assert len(white) == len(clicks) == len(clapper.played) == 5, (white, clicks)
    lines, offsets = [], []
    for seen, heard, played, shown in zip(white, clicks, clapper.played, sent, strict=True):
        placed, emitted = heard - seen, played - shown
        offsets.append(placed - emitted)
        lines.append(f"window {int(seen // 2)}: white frame at {seen:.3f} s, click at {heard:.3f} s "
                     f"(window {int(heard // 2)}): placed {placed * 1000:+.0f} ms apart, emitted "
                     f"{emitted * 1000:+.0f} ms apart, capture offset {(placed - emitted) * 1000:+.0f} ms")  # fmt: skip
    with capsys.disabled():
        print("\nA/V offset on the rig (audio minus video):\n  " + "\n  ".join(lines))
    assert all(abs(offset) <= 1 / CAMERA_FPS for offset in offsets), lines


def test_doctor_and_list_devices_measure_a_pulseaudio_microphone_and_a_url_camera(pulse, camera, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[capture]\ncamera = "{camera.url}"\n')
    run = subprocess.run([str(DOCTOR), "doctor", "--json", "--config", str(config)], capture_output=True, text=True,
                         env=pulse.env, timeout=60, cwd=tmp_path)  # fmt: skip
    checks = {c["name"]: c for c in json.loads(run.stdout)["checks"]}
    assert checks["cameras"]["ok"], checks["cameras"]
    assert re.search(r"camera http://127\.0\.0\.1:\d+/video\.mjpg: 320x\d+, first frame after 0\.\d\d s, 1[45]\.\d fps",
                     checks["cameras"]["detail"])  # fmt: skip
    mic = checks["microphones"]
    started = re.search(r"microphone \(default\): first audio after (\d+\.\d\d) s, a block every 0\.1\d s",
                        mic["detail"])  # fmt: skip
    assert mic["ok"] and started and float(started.group(1)) < DEVICE_START_S, mic
    listing = subprocess.run([str(LIVE), "--list-devices", "--camera", camera.url], capture_output=True, text=True,
                             env=pulse.env, timeout=60).stdout  # fmt: skip
    assert f"camera {camera.url}: 320x" in listing and "measured: microphone (default): first audio after" in listing
    camera.stop()
    refused = subprocess.run([str(DOCTOR), "doctor", "--json", "--config", str(config)], capture_output=True,
                             text=True, env=pulse.env, timeout=60, cwd=tmp_path)  # fmt: skip
    cams = {c["name"]: c for c in json.loads(refused.stdout)["checks"]}["cameras"]
    assert not cams["ok"] and "no video stream there" in cams["detail"] and "browser" in cams["fix"]
