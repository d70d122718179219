"""Opening capture devices: a camera (OpenCV) and a microphone (PortAudio through sounddevice).

A camera is named one way on the command line and opened one way here, whatever it is: an index (``0``, a
local webcam), a device path (``/dev/video2``) or a network URL (``http://phone:8080/video``, an MJPEG
stream as phone-as-webcam apps and IP cameras serve it; ``rtsp://camera/stream``). A URL goes through
OpenCV's FFmpeg backend with bounded open and read timeouts, so a stream that stops is noticed in seconds
and reopened (``DeviceSource`` does that), and FFmpeg's own log lines ("Stream ends prematurely") are
silenced: what happened is said once, in words, by the session.

A microphone is opened with an explicit input latency (``capture.mic_latency_s``) rather than PortAudio's
host default, and reports PortAudio's capture time of each block when the host API gives it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable

import numpy as np

from merclip.errors import MerClipError

log = logging.getLogger(__name__)

# A network camera that does not answer its connection in this long is not there (FFmpeg's default is to
# wait forever).
CAMERA_OPEN_TIMEOUT_S = 5.0
# A network stream that sends no frame for this long has stopped: the read fails, the session reconnects.
# Above the gaps of a working stream (an IP camera at 1 fps) and above DEVICE_SILENT_S, which already lets
# windows go on without vision meanwhile.
CAMERA_READ_TIMEOUT_S = 2.0
# The input latency asked of PortAudio when the config says nothing. PortAudio's own default ("high") is the
# host API's choice: ~35 ms on ALSA, ~0.1-0.2 s on macOS and Windows MME. A 0.1-s block is delivered at once
# either way; a low request only keeps the host from buffering several blocks before the first callback.
MIC_LATENCY_S = 0.05


def camera_target(spec: str | int) -> int | str:
    """What OpenCV is given for a ``--camera`` value: an index as an int, a device path or URL as it is."""
    text = str(spec).strip()
    return int(text) if text.isdigit() else text


def is_url(spec: str | int) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", str(spec)))


def camera_name(spec: str | int) -> str:
    """``camera 0``, ``camera /dev/video2``, ``camera http://phone:8080/video`` -- a password in a URL is
    never printed (``rtsp://admin:***@cam/stream``)."""
    return "camera " + re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", str(spec))


def _quiet_opencv() -> None:
    """OpenCV's probing warnings and FFmpeg's log lines would bury the one line that says what happened.
    FFmpeg's level is read when its backend is first used, so setting it here (before any capture) is enough."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    # RTSP over TCP: FFmpeg's default (UDP) loses packets on Wi-Fi and behind NAT, which smears every frame
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # builds without the logging module
        pass


class RgbCapture:
    """An opened camera returning RGB frames; ``read()`` blocks until the next frame (or fails)."""

    def __init__(self, cap, name: str):
        self.cap, self.name = cap, name

    def read(self):
        import cv2

        ok, frame = self.cap.read()
        return ok, (cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok and frame is not None else None)

    @property
    def reported_fps(self) -> float:
        import cv2

        return float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def release(self) -> None:
        self.cap.release()


def opencv_camera(target: int | str, width: int, height: int, fps: float) -> RgbCapture:
    """Open a camera by index, device path or URL. A local camera is asked for ``width`` x ``height`` at
    ``fps`` (it may pick the nearest mode it has); a network stream comes as its sender makes it."""
    _quiet_opencv()
    import cv2

    name = camera_name(target)
    if is_url(target):
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(CAMERA_OPEN_TIMEOUT_S * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(CAMERA_READ_TIMEOUT_S * 1000)]  # fmt: skip
        cap = cv2.VideoCapture(str(target), cv2.CAP_FFMPEG, timeouts)
        if not cap.isOpened():
            cap.release()
            raise MerClipError(f"cannot open {name}: no video stream there (is the app or camera serving "
                               "MJPEG or RTSP at that address, and reachable from here?)")  # fmt: skip
        return RgbCapture(cap, name)
    if isinstance(target, str) and target.startswith("/dev/"):
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2)  # a device path is a V4L2 node, not a file for FFmpeg
    else:
        cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        # no "try --camera N" here: which camera to try depends on what exists (devices.check_devices says it)
        raise MerClipError(f"cannot open {name} (is it connected and free?)")
    cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    cap.set(cv2.CAP_PROP_FPS, fps)
    return RgbCapture(cap, name)


class Microphone:
    """An open PortAudio input stream. ``active`` turns False when the stream ended by itself (the sound
    server went away, the device was unplugged): it has to be opened again."""

    def __init__(self, stream, name: str):
        self.stream, self.name = stream, name

    @property
    def active(self) -> bool:
        return bool(self.stream.active)

    @property
    def reported_latency_s(self) -> float:
        return float(self.stream.latency)

    def close(self) -> None:
        try:
            self.stream.stop()
            self.stream.close()
        except Exception as err:  # a stream whose server is gone may fail to stop: it is closed either way
            log.debug("closing the microphone: %s", err)


def resample_linear(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Linear-interpolation resampling (enough for speech features at 16 kHz from 44.1/48 kHz mics)."""
    if rate_in == rate_out:
        return samples
    n_out = int(round(len(samples) * rate_out / rate_in))
    x_out = np.arange(n_out) * (rate_in / rate_out)
    return np.interp(x_out, np.arange(len(samples)), samples).astype(np.float32)


def sounddevice_microphone(
    device: str,
    rate: int,
    block_s: float,
    on_audio: Callable[[np.ndarray, float | None], None],
    latency_s: float = MIC_LATENCY_S,
) -> Microphone:
    """Open a microphone (``""`` the default, a name or an index) and call ``on_audio(samples, age_s)`` with
    ``block_s`` blocks resampled to ``rate``; ``age_s``: how long before the call the block's first sample
    was captured, when the host API says (PortAudio's ADC time). ``latency_s`` 0: PortAudio's default."""
    try:
        import sounddevice as sd
    except OSError:
        raise MerClipError("microphone capture needs the PortAudio library: apt-get install libportaudio2") from None
    dev = None if device == "" else (int(device) if device.isdigit() else device)
    name = f"microphone {device or '(default)'}"
    try:
        info = sd.query_devices(dev, kind="input")
    except (ValueError, sd.PortAudioError) as err:
        raise MerClipError(f"no {name}: {err}") from None
    native = int(info["default_samplerate"]) or rate

    def callback(indata, frames, time_info, status):
        mono = indata.mean(axis=1) if indata.ndim == 2 else indata
        # PortAudio's stream clock says when the block's first sample reached the ADC; 0 where the host API
        # does not tell (then the arrival time is used)
        adc, now = time_info.inputBufferAdcTime, time_info.currentTime
        age_s = now - adc if adc > 0 and now >= adc else None
        on_audio(resample_linear(np.asarray(mono, np.float32), native, rate), age_s)

    try:
        stream = sd.InputStream(
            device=dev,
            channels=1,
            samplerate=native,
            blocksize=int(native * block_s),
            dtype="float32",
            latency=latency_s if latency_s > 0 else "high",
            callback=callback,
        )
        stream.start()
    except sd.PortAudioError as err:
        raise MerClipError(f"cannot open {name}: {err}") from None
    return Microphone(stream, name)


def with_latency(opener: Callable, latency_s: float) -> Callable:
    """``opener`` asking for ``latency_s`` when it is ``sounddevice_microphone``; a stand-in (a test's fake
    microphone, which takes the four arguments of the protocol) is returned as it is."""
    return functools.partial(opener, latency_s=latency_s) if opener is sounddevice_microphone else opener
