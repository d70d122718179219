"""Which cameras and microphones exist here, and a quick open-and-read of the ones a session asks for.

Used by ``merclip-live`` before anything is exported or downloaded (a missing camera is said in about a
second, not after a model export), by ``merclip-live --list-devices`` and by ``merclip doctor``, which also
measure the device: a camera's first frame and delivered fps, a microphone's start-up, block interval and
the age of its blocks on arrival. No torch. Camera and microphone openers are looked up in
``device_source`` at call time, so tests swap in fakes there.
"""

from __future__ import annotations

import glob
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from merclip.errors import MerClipError

from . import device_source
from .capture import MIC_LATENCY_S, camera_name, with_latency

log = logging.getLogger(__name__)

# Camera indices probed where the system cannot list video devices (macOS, Windows).
PROBE_INDICES = 4
# How long a device may take to deliver its first frame / audio block before it counts as not working: the
# session's start-up allowance (device_source.DEVICE_START_S), so a device the check passes is one the
# session keeps.
FIRST_FRAME_S = device_source.DEVICE_START_S
FIRST_AUDIO_S = device_source.DEVICE_START_S
# `merclip doctor` and `--list-devices` watch a working device this much longer to measure it.
MEASURE_S = 1.0
PORTAUDIO_FIX = "the PortAudio library is missing: install it (Debian/Ubuntu: apt-get install libportaudio2)"


@dataclass(frozen=True)
class Camera:
    index: int | str
    width: int
    height: int
    fps: float

    def describe(self) -> str:
        fps = f" @ {self.fps:g} fps" if self.fps > 0 else ""
        return f"camera {self.index}: {self.width}x{self.height}{fps}"


@dataclass(frozen=True)
class Microphone:
    index: int
    name: str
    channels: int
    rate: float
    default: bool

    def describe(self) -> str:
        mark = " (default)" if self.default else ""
        return f"microphone {self.index}: {self.name}, {self.channels} ch, {self.rate:g} Hz{mark}"


def camera_candidates() -> list[int]:
    """Indices worth probing: on Linux the /dev/video* nodes (none: no camera, decided without OpenCV)."""
    if sys.platform.startswith("linux"):
        found = sorted(
            {int(m.group(1)) for p in glob.glob("/dev/video*") if (m := re.fullmatch(r"/dev/video(\d+)", p))}
        )
        return found[:16]
    return list(range(PROBE_INDICES))


def list_cameras() -> list[Camera]:
    """Cameras that open and deliver a frame, with the resolution and fps they report (opened as a session
    opens them, ``device_source.opencv_camera``)."""
    cameras = []
    for index in camera_candidates():
        try:
            cap = device_source.opencv_camera(index, 640, 480, 15.0)
        except (MerClipError, ImportError):
            continue
        try:
            ok, frame = cap.read()
            if not ok or frame is None:
                continue  # metadata nodes (a webcam often has two /dev/video*): not a picture source
            h, w = frame.shape[:2]
            cameras.append(Camera(index, int(w), int(h), float(getattr(cap, "reported_fps", 0.0))))
        finally:
            cap.release()
    return cameras


def list_microphones() -> tuple[list[Microphone], str]:
    """(input devices, problem): problem is "" or one line saying why none can be listed."""
    try:
        import sounddevice as sd
    except OSError:  # sounddevice imports but PortAudio itself is absent
        return [], PORTAUDIO_FIX
    except ImportError:
        return [], "sounddevice is not installed: pip install sounddevice"
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0] if sd.default.device else -1
    except Exception as err:  # PortAudioError and friends: one line
        return [], f"PortAudio cannot list devices: {(str(err).splitlines() or [''])[0]}"
    mics = [
        Microphone(i, str(d["name"]), int(d["max_input_channels"]), float(d["default_samplerate"]), i == default_in)
        for i, d in enumerate(devices)
        if int(d.get("max_input_channels", 0)) > 0
    ]
    return mics, ""


def describe_devices(cameras: list[Camera] | None = None, mics: list[Microphone] | None = None,
                     mic_problem: str = "") -> str:  # fmt: skip
    """One line naming what exists here, for an error about a device that does not."""
    cameras = list_cameras() if cameras is None else cameras
    if mics is None:
        mics, mic_problem = list_microphones()
    cams = ", ".join(str(c.index) for c in cameras) or "none"
    if mics:
        mic_text = ", ".join(f"{m.index} ({m.name})" for m in mics)
    else:
        mic_text = f"none ({mic_problem})" if mic_problem else "none"
    return f"cameras here: {cams}; microphones here: {mic_text}"


@dataclass(frozen=True)
class CameraCheck:
    """A camera opened and read as a session would: ``problem`` is "" when it works."""

    name: str
    problem: str = ""
    first_frame_s: float | None = None  # from asking to open it to its first frame
    width: int = 0
    height: int = 0
    fps: float | None = None  # frames it delivered per second while watched (None: not measured)

    @property
    def ok(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        if self.problem:
            return self.problem
        rate = f", {self.fps:.1f} fps delivered" if self.fps else ""
        return f"{self.name}: {self.width}x{self.height}, first frame after {self.first_frame_s:.2f} s{rate}"


@dataclass(frozen=True)
class MicCheck:
    """A microphone opened and heard as a session would: ``problem`` is "" when it works."""

    name: str
    problem: str = ""
    start_s: float | None = None  # from asking to open it to its first block
    block_s: float | None = None  # median time between blocks while watched
    age_s: float | None = None  # median age of a block on arrival, as PortAudio says (None: the host does not)
    blocks: int = 0

    @property
    def ok(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        if self.problem:
            return self.problem
        text = f"{self.name}: first audio after {self.start_s:.2f} s"
        if self.block_s is not None:
            text += f", a block every {self.block_s:.2f} s"
        if self.age_s is not None:
            text += f", {self.age_s * 1000:.0f} ms old on arrival (PortAudio's capture time)"
        return text


def probe_camera(camera: str, width: int, height: int, fps: float, measure_s: float = 0.0) -> CameraCheck:
    """Open a camera (index, device path or URL) and wait up to ``FIRST_FRAME_S`` for a frame; then, with
    ``measure_s``, count the frames it delivers for that long."""
    name = camera_name(camera)
    asked = time.monotonic()
    try:
        cap = device_source.opencv_camera(device_source._camera_index(camera), width, height, fps)
    except MerClipError as err:
        return CameraCheck(name, str(err))
    try:
        frame = None
        while frame is None and time.monotonic() < asked + FIRST_FRAME_S:
            ok, frame = cap.read()
            if not ok or frame is None:
                frame = None
                time.sleep(0.05)
        if frame is None:
            return CameraCheck(name, f"{name} opened but delivered no frame in {FIRST_FRAME_S:g} s")
        first_s = time.monotonic() - asked
        h, w = frame.shape[:2]
        delivered = None
        if measure_s > 0:
            count, started = 0, time.monotonic()
            while time.monotonic() - started < measure_s and cap.read()[0]:
                count += 1
            delivered = count / max(1e-6, time.monotonic() - started)
        return CameraCheck(name, "", first_s, int(w), int(h), delivered)
    finally:
        cap.release()


def probe_microphone(microphone: str, latency_s: float = MIC_LATENCY_S, measure_s: float = 0.0) -> MicCheck:
    """Open a microphone and wait up to ``FIRST_AUDIO_S`` for its first block; with ``measure_s``, watch the
    blocks for that long more: how often they come and how old they are on arrival."""
    name = f"microphone {microphone or '(default)'}"
    arrivals: list[float] = []
    ages: list[float] = []
    got = threading.Event()

    def on_audio(samples: np.ndarray, age_s: float | None = None) -> None:
        arrivals.append(time.monotonic())
        if age_s is not None:
            ages.append(age_s)
        got.set()

    asked = time.monotonic()
    try:
        mic = with_latency(device_source.sounddevice_microphone, latency_s)(
            microphone, device_source.SAMPLE_RATE, 0.1, on_audio
        )
    except MerClipError as err:
        return MicCheck(name, str(err))
    try:
        if not got.wait(FIRST_AUDIO_S):
            return MicCheck(name, f"{name} opened but delivered no audio in {FIRST_AUDIO_S:g} s")
        start_s = arrivals[0] - asked
        if measure_s > 0:
            time.sleep(measure_s)
        times = list(arrivals)
        block_s = float(np.median(np.diff(times))) if len(times) > 2 else None
        return MicCheck(name, "", start_s, block_s, float(np.median(ages)) if ages else None, len(times))
    finally:
        mic.close()


def format_listing(camera: str | None = None, microphone: str = "", mic_latency_s: float = MIC_LATENCY_S) -> str:
    """The cameras and microphones here; a camera asked for by URL or path, and the asked-for (or default)
    microphone, opened and measured (first frame and fps; start-up, block interval and age on arrival)."""
    cameras = list_cameras()
    mics, problem = list_microphones()
    lines = ["cameras:"]
    lines += [f"  {c.describe()}" for c in cameras] or ["  none found"]
    if camera is not None and not str(camera).isdigit():
        lines.append(f"  {probe_camera(camera, 640, 480, 15.0, MEASURE_S).describe()}")
    lines.append("microphones:")
    lines += [f"  {m.describe()}" for m in mics] or [f"  none found{': ' + problem if problem else ''}"]
    if mics:
        lines.append(f"  measured: {probe_microphone(microphone, mic_latency_s, MEASURE_S).describe()}")
    return "\n".join(lines)


def check_devices(camera: str | None, microphone: str | None, width: int, height: int, fps: float,
                  allow_missing: bool, mic_latency_s: float = MIC_LATENCY_S) -> list[str]:  # fmt: skip
    """Open and read the asked-for devices once. A device that fails raises one line naming the devices that
    do exist, unless ``allow_missing`` and at least one works; then the problems are returned."""
    problems = []
    if camera is not None:
        cam = probe_camera(camera, width, height, fps)
        log.info("%s", cam.describe())
        problems.append(cam.problem)
    if microphone is not None:
        mic = probe_microphone(microphone, mic_latency_s)
        log.info("%s", mic.describe())
        problems.append(mic.problem)
    failed = [p for p in problems if p]
    if failed and (not allow_missing or len(failed) == len(problems)):
        hint = "" if allow_missing else " (--allow-missing goes on with the devices that work)"
        cameras = list_cameras()
        advice = ""
        if camera is not None and problems[0]:  # the hint follows what exists: never "try --camera 1" with none
            others = [str(c.index) for c in cameras if str(c.index) != str(camera)]
            advice = (f"; try --camera {others[0]}" if others
                      else "; no camera here: --source sample or --source FILE runs without one")  # fmt: skip
        raise MerClipError(f"{'; '.join(failed)}{hint}; {describe_devices(cameras)}{advice}")
    return failed
