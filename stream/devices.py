"""Which cameras and microphones exist here, and a quick open-and-read of the ones a session asks for.

Used by ``merclip-live`` before anything is exported or downloaded (a missing camera is said in about a
second, not after a model export), by ``merclip-live --list-devices`` and by ``merclip doctor``. No torch.
Camera and microphone openers are looked up in ``sources`` at call time, so tests swap in fakes there.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from merclip.errors import MerClipError

from . import sources

# Camera indices probed where the system cannot list video devices (macOS, Windows).
PROBE_INDICES = 4
# How long a device may take to deliver its first frame / audio block before it counts as not working.
FIRST_FRAME_S = 1.5
FIRST_AUDIO_S = 1.0
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
    """Cameras that open and deliver a frame, with the resolution and fps they report."""
    cameras = []
    for index in camera_candidates():
        os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
        try:
            import cv2
        except ImportError:
            return []
        cap = cv2.VideoCapture(index)
        try:
            if not cap.isOpened():
                continue
            ok, frame = cap.read()
            if not ok or frame is None:
                continue  # metadata nodes (a webcam often has two /dev/video*): not a picture source
            h, w = frame.shape[:2]
            cameras.append(Camera(index, int(w), int(h), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)))
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


def format_listing() -> str:
    cameras = list_cameras()
    mics, problem = list_microphones()
    lines = ["cameras:"]
    lines += [f"  {c.describe()}" for c in cameras] or ["  none found"]
    lines.append("microphones:")
    lines += [f"  {m.describe()}" for m in mics] or [f"  none found{': ' + problem if problem else ''}"]
    return "\n".join(lines)


def _camera_reads(camera: str, width: int, height: int, fps: float) -> str:
    """Empty when the camera opens and delivers a frame within FIRST_FRAME_S, else the problem in words."""
    try:
        cap = sources.opencv_camera(sources._camera_index(camera), width, height, fps)
    except MerClipError as err:
        return str(err)
    try:
        deadline = time.monotonic() + FIRST_FRAME_S
        while time.monotonic() < deadline:
            ok, frame = cap.read()
            if ok and frame is not None:
                return ""
            time.sleep(0.05)
        return f"camera {camera} opened but delivered no frame in {FIRST_FRAME_S:g} s"
    finally:
        cap.release()


def _microphone_hears(microphone: str) -> str:
    """Empty when the microphone opens and delivers a block within FIRST_AUDIO_S, else the problem in words."""
    got = threading.Event()

    def on_audio(samples: np.ndarray, age_s: float | None = None) -> None:
        got.set()

    try:
        mic = sources.sounddevice_microphone(microphone, sources.SAMPLE_RATE, 0.1, on_audio)
    except MerClipError as err:
        return str(err)
    try:
        if got.wait(FIRST_AUDIO_S):
            return ""
        return f"microphone {microphone or '(default)'} opened but delivered no audio in {FIRST_AUDIO_S:g} s"
    finally:
        mic.close()


def check_devices(camera: str | None, microphone: str | None, width: int, height: int, fps: float,
                  allow_missing: bool) -> list[str]:  # fmt: skip
    """Open and read the asked-for devices once. A device that fails raises one line naming the devices that
    do exist, unless ``allow_missing`` and at least one works; then the problems are returned."""
    problems = []
    if camera is not None:
        problems.append(_camera_reads(camera, width, height, fps))
    if microphone is not None:
        problems.append(_microphone_hears(microphone))
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
