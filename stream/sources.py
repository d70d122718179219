"""Where frames and audio come from. Every source is an iterator of ``Frame | AudioBlock | SourceEvent``
in stream-clock order, so the windower treats a webcam, a video file and generated test data alike.

- ``FileSource``: a video file's frames and audio track (PyAV), paced at real time or as fast as possible.
- ``sample_path()``: the short real clip shipped with the package (a face and speech).
- ``SyntheticSource``: frames and audio generated in-process; time is encoded in the content for tests.
- ``DeviceSource``: camera (OpenCV: index, device path or URL) + microphone (sounddevice), each in its own
  thread, one clock; the devices are opened by ``capture``.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from merclip.errors import MerClipError

from .capture import MIC_LATENCY_S, camera_name, camera_target, opencv_camera, sounddevice_microphone, with_latency
from .records import AudioBlock, Frame, SourceEvent

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000
Item = Frame | AudioBlock | SourceEvent
# An audio block stamped later than its back-to-back position by more than this starts a new anchor: the
# microphone stalled (samples were lost). Below it, the difference is callback jitter.
REANCHOR_S = 0.25
# A block stamped *earlier* than its back-to-back position is a burst: PortAudio handing over a backlog of
# blocks in one go, each stamped on arrival, so the later ones look captured at once. Sample count places
# them (re-anchoring would lay them over the blocks before and lose those). Only a block stamped this much
# earlier re-anchors: the microphone's clock has drifted from the wall clock by more than any backlog.
REANCHOR_AHEAD_S = 2.0


def place_block(expected_s: float | None, stamped_s: float, n_samples: int, rate: int = SAMPLE_RATE,
                reanchor_s: float = REANCHOR_S) -> tuple[float, float]:  # fmt: skip
    """(where an audio block starts, where the next one is expected) on the audio clock.

    Blocks go back to back by sample count, so bursts and callback jitter neither overlap nor leave holes;
    ``stamped_s`` (the wall clock's guess) is followed only at the first block, after a real stall and after
    a drift of ``REANCHOR_AHEAD_S``, and then on a millisecond boundary, the container clock of a recording,
    so live and replay agree. One rule for the microphone (``DeviceSource``) and the recorder
    (``RecordingSource``).
    """
    if expected_s is None or stamped_s - expected_s > reanchor_s or expected_s - stamped_s > REANCHOR_AHEAD_S:
        expected_s = round(stamped_s * 1000) / 1000
    return expected_s, expected_s + n_samples / rate


def due_s(item: Item) -> float:
    """When an item is complete on the stream clock: a frame at its time, an audio block at its last sample."""
    if isinstance(item, AudioBlock):
        return item.t_s + len(item.samples) / SAMPLE_RATE
    return item.t_s


def media_error(err: Exception) -> str:
    """A PyAV error in words for the user: no FFmpeg error number ("[Errno 1094995529]"), no path repeated."""
    import av

    if isinstance(err, av.error.InvalidDataError | UnicodeDecodeError):
        return "invalid data (not a media file PyAV can read)"
    return (getattr(err, "strerror", None) or str(err) or type(err).__name__).rstrip(".")


def sample_path() -> Path:
    return Path(str(resources.files("merclip.stream") / "assets" / "sample-face-speech.mp4"))


class Pacer:
    """Sleeps so that stream time ``t`` is not reached before wall time ``t`` (real-time replay)."""

    def __init__(self, realtime: bool, stop: threading.Event | None = None):
        self.realtime = realtime
        self.stop = stop or threading.Event()
        self.start = time.monotonic()

    @property
    def origin(self) -> float | None:
        """``time.monotonic()`` at stream time 0 when replaying in real time; None as fast as possible (no
        item is "captured" at any particular moment then)."""
        return self.start if self.realtime else None

    def wait(self, t_s: float) -> None:
        if self.realtime:
            delay = self.start + t_s - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)


# Damaged media: a packet the decoder refuses is skipped, like a player does, and counted; the replay goes on.
# Only this many *consecutive* demuxer errors end it (the container itself is unreadable from there on).
MAX_DEMUX_ERRORS_IN_ROW = 50
# Container formats that hold a single picture (PyAV/FFmpeg image demuxers).
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "jpegxl_pipe")


class FileSource:
    """Replay a video file (frames + audio track). ``realtime=False`` is ``--fast``.

    A missing track is a missing modality: a file without audio replays vision-only, an audio file (no
    video) audio-only; ``missing`` says what is absent, in words. A still image (a .png/.jpg given as the
    source) is held for ``still_s`` seconds, so it makes one vision-only reading of the picture: the model
    can score a face in a photo, and refusing a usable input would be less helpful than one reading.
    Packets that fail to decode are skipped and counted in ``skipped_packets``.
    """

    def __init__(
        self,
        path: str | Path,
        realtime: bool = True,
        max_fps: float = 15.0,
        with_audio: bool = True,
        still_s: float = 2.0,
        exact: bool = False,
    ):
        import av

        self.path = Path(path)
        # exact: replay of a `--record` recording (see record.py): every frame (no decimation) and the audio at
        # its own timestamps (a microphone stall recorded as a jump stays a gap), so windows match the live run
        self.exact = exact
        self.realtime = realtime
        self.max_fps = max_fps
        self.with_audio = with_audio
        self.still_s = still_s
        self.stop = threading.Event()
        self.clock_origin: float | None = None  # set when the replay starts (see Pacer.origin)
        self.skipped_packets = 0
        self.missing: list[str] = []
        if self.path.is_dir():
            raise MerClipError(f"{self.path} is a folder, not a video file (pass a file, or --source sample)")
        if self.path.exists() and not self.path.is_file():
            raise MerClipError(f"{self.path} is not a regular file (a device or pipe?): pass a video file")
        if not self.path.is_file():
            raise MerClipError(f"video file not found: {self.path}")
        try:
            with av.open(str(self.path)) as box:
                self.has_video = bool(box.streams.video)
                self.has_audio = bool(box.streams.audio) and with_audio
                self.still = self.has_video and box.format.name in _IMAGE_FORMATS
        except (av.error.FFmpegError, UnicodeDecodeError) as err:
            raise MerClipError(f"cannot read video file {self.path}: {media_error(err)}") from None
        if not (self.has_video or self.has_audio):
            raise MerClipError(f"{self.path} has neither a video nor an audio track")
        name = self.path.name
        if self.still:
            self.missing.append(f"{name} is a still image: one vision-only reading of it, no voice or words")
        elif not self.has_video:
            self.missing.append(f"{name} has no video track: voice and words only, no face")
        elif not self.has_audio and with_audio:
            self.missing.append(f"{name} has no audio track: face only, no voice or words")

    @property
    def tracks(self) -> str:
        """The modalities this replay delivers (what the windower waits for)."""
        return ("V" if self.has_video else "") + ("A" if self.has_audio else "")

    def __iter__(self) -> Iterator[Item]:
        pacer = Pacer(self.realtime, self.stop)
        self.clock_origin = pacer.origin
        self.skipped_packets = 0
        for text in self.missing:
            yield SourceEvent(0.0, "A" if "no audio" in text or self.still else "V", "absent", text)
        # Each track is read by its own demuxer and the two are merged by time: a file's order is its muxer's
        # (MP4s commonly store video 1 s or more ahead of the audio that plays with it), the stream's order is
        # the clock's, so a window never waits on -- or closes before -- audio that is still further on in the file.
        tracks = ([self._video_items()] if self.has_video else []) + ([self._audio_items()] if self.has_audio else [])
        for item in heapq.merge(*tracks, key=due_s):
            if self.stop.is_set():
                return
            pacer.wait(due_s(item))
            yield item
        if self.skipped_packets:
            log.info("%s: skipped %d damaged packet(s)", self.path.name, self.skipped_packets)

    def _decoded(self, kind: str) -> Iterator:
        """Decoded frames of the file's first ``kind`` ("video"/"audio") track, read by a demuxer of its own. A
        packet that fails to decode is skipped: a ``SourceEvent`` marks the gap (with a message the first time)."""
        import av

        try:
            box = av.open(str(self.path))
        except (av.error.FFmpegError, UnicodeDecodeError) as err:
            raise MerClipError(f"cannot read video file {self.path}: {media_error(err)}") from None
        try:
            with box:
                stream = (box.streams.video if kind == "video" else box.streams.audio)[0]
                for packet in self._packets(box, [stream]):
                    if self.stop.is_set():
                        return
                    try:
                        decoded = packet.decode()
                    except av.error.FFmpegError as err:
                        yield self._skip(packet, err)
                        continue
                    yield from decoded
        except av.error.FFmpegError as err:  # not one packet: the container or a stream as a whole
            raise MerClipError(f"cannot decode {self.path}: {media_error(err)}") from None

    def _video_items(self) -> Iterator[Item]:
        min_gap = 0.0 if self.exact else 1.0 / self.max_fps
        last_frame: Frame | None = None
        video_frames = 0
        for decoded in self._decoded("video"):
            if isinstance(decoded, SourceEvent):
                if decoded.message:
                    yield decoded
                continue
            t = float(decoded.time or 0.0)
            video_frames += 1
            if last_frame is not None and t - last_frame.t_s < min_gap - 1e-6:
                continue  # decimate: the window needs a few frames, not 25 fps
            last_frame = Frame(t, decoded.to_ndarray(format="rgb24"))
            yield last_frame
        if video_frames == 1 and last_frame is not None and not self.has_audio:
            for held in self._hold(last_frame, min_gap or 1.0 / self.max_fps):
                yield held
                last_frame = held
        if last_frame is not None:
            yield SourceEvent(last_frame.t_s, "V", "ended")

    def _audio_items(self) -> Iterator[Item]:
        import av

        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        audio_t = None
        for decoded in self._decoded("audio"):
            if isinstance(decoded, SourceEvent):
                audio_t = None  # re-anchor on the next decoded frame's time: no A/V drift after a gap
                if decoded.message:
                    yield decoded
                continue
            stamped = float(decoded.time or 0.0)
            if self.exact and audio_t is not None and abs(stamped - audio_t) > 0.002:
                audio_t = stamped  # a gap the recording kept (a microphone stall)
            for chunk in resampler.resample(decoded):
                samples = chunk.to_ndarray().reshape(-1).astype(np.float32)
                # place blocks back to back on the audio clock (resampler output has no gaps)
                audio_t = stamped if audio_t is None else audio_t
                yield AudioBlock(audio_t, samples)
                audio_t += len(samples) / SAMPLE_RATE
        if audio_t is not None:
            yield SourceEvent(audio_t, "A", "ended")

    def _hold(self, frame: Frame, gap: float) -> Iterator[Frame]:
        """A single picture (a still image): repeat it for ``still_s`` so that it fills one window."""
        k = 1
        while not self.stop.is_set() and k * gap < self.still_s - 1e-6:
            yield Frame(frame.t_s + k * gap, frame.rgb)
            k += 1

    def _packets(self, box, streams) -> Iterator:
        """Demux, stepping over a packet the demuxer cannot read (counted) instead of ending the replay."""
        import av

        errors_in_row = 0
        while True:
            try:
                for packet in box.demux(streams):
                    errors_in_row = 0
                    yield packet
                return
            except av.error.EOFError:
                return
            except av.error.FFmpegError as err:
                errors_in_row += 1
                self.skipped_packets += 1
                if errors_in_row >= MAX_DEMUX_ERRORS_IN_ROW:
                    raise MerClipError(f"cannot decode {self.path}: {media_error(err)}") from None

    def _skip(self, packet, err) -> SourceEvent:
        """Count a packet that failed to decode: an event marks the gap, with a message for the first one."""
        self.skipped_packets += 1
        log.debug("%s: skipped a damaged %s packet at %s: %s", self.path.name, packet.stream.type, packet.pts, err)
        modality = "V" if packet.stream.type == "video" else "A"
        t = float(packet.pts * packet.time_base) if packet.pts is not None and packet.time_base else 0.0
        first = self.skipped_packets == 1
        return SourceEvent(t, modality, "ok", f"damaged data skipped in {self.path.name}" if first else "")

    def close(self) -> None:
        self.stop.set()


class SyntheticSource:
    """Generated frames and audio for tests and demos. Content encodes time: a frame's red channel is its
    frame number (mod 256) and each audio block is a tone of ``tone_hz(block number)``, so a test can
    check that a window's frames and audio belong to the same span."""

    def __init__(
        self,
        duration_s: float = 20.0,
        fps: float = 10.0,
        block_s: float = 0.1,
        size: int = 64,
        realtime: bool = False,
        video: bool = True,
        audio: bool = True,
    ):
        self.duration_s, self.fps, self.block_s, self.size = duration_s, fps, block_s, size
        self.realtime, self.video, self.audio = realtime, video, audio
        self.stop = threading.Event()
        self.clock_origin: float | None = None  # set when the stream starts (see Pacer.origin)

    @property
    def tracks(self) -> str:
        return ("V" if self.video else "") + ("A" if self.audio else "")

    @staticmethod
    def tone_hz(block: int) -> float:
        return 300.0 + 40.0 * (block % 64)

    def frame(self, index: int) -> np.ndarray:
        img = np.empty((self.size, self.size, 3), np.uint8)
        img[..., 0] = index % 256
        img[..., 1] = np.linspace(0, 255, self.size, dtype=np.uint8)[None, :]  # some texture for the encoder
        img[..., 2] = 128
        return img

    def block(self, index: int) -> np.ndarray:
        n = int(round(self.block_s * SAMPLE_RATE))
        t = (index * n + np.arange(n)) / SAMPLE_RATE
        return (0.2 * np.sin(2 * np.pi * self.tone_hz(index) * t)).astype(np.float32)

    def __iter__(self) -> Iterator[Item]:
        pacer = Pacer(self.realtime, self.stop)
        self.clock_origin = pacer.origin
        n_frames = int(np.ceil(self.duration_s * self.fps - 1e-9)) if self.video else 0
        n_blocks = int(np.ceil(self.duration_s / self.block_s - 1e-9)) if self.audio else 0
        f = b = 0
        while not self.stop.is_set() and (f < n_frames or b < n_blocks):
            t_frame = f / self.fps if f < n_frames else float("inf")
            t_block = b * self.block_s if b < n_blocks else float("inf")
            if t_frame <= t_block:
                pacer.wait(t_frame)
                yield Frame(t_frame, self.frame(f))
                f += 1
            else:
                pacer.wait(t_block + self.block_s)
                yield AudioBlock(t_block, self.block(b))
                b += 1

    def close(self) -> None:
        self.stop.set()


# ---- devices -------------------------------------------------------------------------------------------
# A device that has sent nothing for this long (wall clock) is said "lost": windows stop waiting for it, and
# its next item says it is back. Above the gaps a working device leaves (0.1-s microphone blocks, a camera
# at >= 5 fps); a window's reading is late by at most this much while a device is stalling.
DEVICE_SILENT_S = 1.0
# The start-up allowance: how long a device may take to deliver its first item, in the session (the watchdog)
# and in the check before it (devices.check_devices). Measured on PulseAudio (issue #23, BENCHMARKS.md): a
# microphone on a virtual source whose sink is idle calls back for the first time 0.3-2.3 s after its stream
# starts (PulseAudio renders an idle sink in 2-s blocks), whatever input latency is asked; 0.15-0.4 s when
# something plays. (The check before #23 allowed 1 s and called such a microphone dead.)
DEVICE_START_S = 3.0
# How often the watchdog looks.
WATCH_S = 0.1
# Blocks laid back to back by sample count drift from the capture clock (PortAudio's ADC time) when samples
# are lost without a stall (an overflow, a sound server that changes its latency and skips what it had
# buffered) or when the place they were anchored on was wrong (PulseAudio reports a stale capture time while
# it reconfigures an idle sink), and slowly as the device's clock and ours differ (~0.1 s per 1000 s at
# 100 ppm). Measured on PulseAudio (issue #23): 0.1-0.2 s either way when a player starts on an idle sink.
# When each of the last DRIFT_BLOCKS blocks lies more than DRIFT_S from its capture time, the same way, the
# next block goes to its capture time: later, a gap (those samples were lost); earlier, the samples the clock
# has no room for are skipped from the head of the next blocks and counted. DRIFT_S stays under one frame
# interval at 15 fps; the extreme over 1 s of blocks ignores callback jitter. Only with the device's capture
# time (arrival times jitter too much, and a burst of blocks handed over at once is not a drift).
DRIFT_S = 0.04
DRIFT_BLOCKS = 10
# A camera that fails is reopened after RETRY_FIRST_S, then after twice as long each time up to ``retry_s``
# (a network camera that is rebooting is not hammered; one that is back is found within ``retry_s``).
RETRY_FIRST_S = 0.25
# A camera read that returns within this long came from a backlog (or a source that never blocks): the loop
# pauses briefly so it drains a backlog fast without spinning a core on a source that does not block.
_INSTANT_READ_S = 0.001
_DRAIN_PAUSE_S = 0.004
_DEVICE_NAMES = {"V": "camera", "A": "microphone"}


def _camera_index(spec: str) -> int | str:
    return camera_target(spec)


class Backoff:
    """Waits between reconnection tries: ``first_s``, doubling, at most ``max_s``; ``reset`` after success."""

    def __init__(self, max_s: float, first_s: float = RETRY_FIRST_S):
        self.max_s, self.first_s = max_s, min(first_s, max_s)
        self._next = self.first_s

    def next(self) -> float:
        wait, self._next = self._next, min(self._next * 2, self.max_s)
        return wait

    def reset(self) -> None:
        self._next = self.first_s


class DeviceSource:
    """Camera frames and microphone audio from their own threads, stamped on one monotonic clock.

    ``open_camera`` and ``open_microphone`` are injectable so that tests drive this class with fakes.
    The camera is read as fast as it delivers (a network stream or a webcam's buffers never queue up old
    frames) and every frame is stamped on arrival; frames beyond ``fps`` are skipped. A camera that fails is
    reopened with back-off, and a microphone whose stream ended (its sound server or the device went away)
    is opened again, while the other device goes on. A watchdog says a device "lost" once it has sent nothing
    for ``DEVICE_SILENT_S`` (``DEVICE_START_S`` before its first item) and "ok" when it delivers again: the
    windower waits for a device on the wall clock, never by comparing the two devices' timestamps. Each
    outage is said once (a warning), counted and timed (``outage_notes`` for the session summary).
    """

    QUEUE_ITEMS = 512  # frames + audio blocks waiting for the session: ~20 s at 15 fps and 0.1-s blocks
    # the microphone's blocks come placed on the audio clock (place_block + drift): a recorder keeps them as they
    # are (record.RecordingSource), so a replay sees the times the live session saw
    places_audio = True

    def __init__(
        self,
        camera: str | None = "0",
        microphone: str | None = "",
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        allow_missing: bool = False,
        open_camera: Callable | None = None,
        open_microphone: Callable | None = None,
        retry_s: float = 2.0,
        block_s: float = 0.1,
        mic_latency_s: float = MIC_LATENCY_S,
    ):
        self.camera, self.microphone = camera, microphone
        self.width, self.height, self.fps = width, height, fps
        self.allow_missing = allow_missing
        self.open_camera = open_camera or opencv_camera
        self.open_microphone = with_latency(open_microphone or sounddevice_microphone, mic_latency_s)
        self.retry_s, self.block_s = retry_s, block_s
        self.stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=self.QUEUE_ITEMS)
        self._t0 = time.monotonic()
        self._threads: list[threading.Thread] = []
        self._mic = None
        self._cap = None
        self._audio_t: float | None = None  # where the next microphone block goes (see place_block)
        self._lateness: deque[float] = deque(maxlen=DRIFT_BLOCKS)  # recent blocks: capture time - place
        self.drift_corrections = 0
        self.skipped_s = 0.0  # audio skipped by drift corrections (the clock had no room for it)
        self._skip = 0  # samples still to skip from the head of the next blocks
        self.missing: list[str] = []  # devices that could not be opened (with allow_missing), in words
        # the watchdog's view: time.monotonic() of each open device's last item (None: none yet), and which
        # devices it has said lost
        self._arrived: dict[str, float | None] = {}
        self._silent: set[str] = set()
        self._watch_lock = threading.Lock()
        # outages: how many, since when (time.monotonic()) the current one, and seconds without the device
        self.outages: dict[str, int] = {"V": 0, "A": 0}
        self.outage_s: dict[str, float] = {"V": 0.0, "A": 0.0}
        self._outage_since: dict[str, float] = {}
        self._mic_backoff = Backoff(retry_s)
        self._mic_retry_at = 0.0
        self._mic_opened = False  # a microphone absent from the start is not retried (it was said missing)

    @property
    def tracks(self) -> str:
        """The devices asked for (one that fails to open is then said "absent")."""
        return ("V" if self.camera is not None else "") + ("A" if self.microphone is not None else "")

    @property
    def clock_origin(self) -> float:
        """``time.monotonic()`` at stream time 0: when a window's end was captured, for its latency."""
        return self._t0

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _put(self, item: Item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # consumer stalled: drop rather than grow (the windower will see a gap)
            log.warning("capture queue full; dropping %s", type(item).__name__)

    def _open_camera(self):
        return self.open_camera(_camera_index(self.camera), self.width, self.height, self.fps)

    def _open_microphone(self):
        return self.open_microphone(self.microphone, SAMPLE_RATE, self.block_s, self._on_audio)

    def start(self) -> None:
        """Open the devices; a device that cannot be opened is an error unless ``allow_missing``."""
        # stream time 0 is when capture starts: nothing before it (a model load) makes empty windows
        self._t0 = time.monotonic()
        self._audio_t = None
        problems = []
        if self.camera is not None:
            try:
                self._cap = self._open_camera()
            except MerClipError as err:
                problems.append(str(err))
        if self.microphone is not None:
            try:
                self._mic = self._open_microphone()
            except MerClipError as err:
                problems.append(str(err))
        if problems and (not self.allow_missing or (self._cap is None and self._mic is None)):
            raise MerClipError(
                "; ".join(problems)
                + ("" if self.allow_missing else " (--allow-missing goes on with the devices that work)")
            )
        self._mic_opened = self._mic is not None
        self.missing = problems  # said at start and in the session summary: never a silent partial session
        for problem in problems:
            self._put(SourceEvent(0.0, "V" if "camera" in problem else "A", "absent", problem))
        # the devices that opened are watched (a camera that did not is "absent"; if the camera thread manages
        # to open it later, its first frame starts the watch)
        self._arrived = {m: None for m, dev in (("V", self._cap), ("A", self._mic)) if dev is not None}
        self._silent = set()
        targets = [("watchdog", self._watch)] + ([("camera", self._camera_loop)] if self.camera is not None else [])
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _delivered(self, modality: str) -> None:
        """A device thread is about to queue an item: a device said lost is back (said first, in order)."""
        with self._watch_lock:
            self._arrived[modality] = time.monotonic()
            if modality in self._silent:
                self._silent.discard(modality)
                since = self._outage_since.pop(modality, None)
                away = f" after {time.monotonic() - since:.1f} s" if since is not None else ""
                if since is not None:
                    self.outage_s[modality] += time.monotonic() - since
                log.warning("%s delivering again%s", self._name(modality), away)
                self._put(SourceEvent(self.now(), modality, "ok", f"{_DEVICE_NAMES[modality]} delivering again"))

    def _lost(self, modality: str, message: str, update: bool = False) -> None:
        """Say a device lost, once until it delivers again (``update``: a new status line for the UI, such
        as "reconnecting", without saying the outage again)."""
        with self._watch_lock:
            if modality not in self._silent:
                self._silent.add(modality)
                self.outages[modality] += 1
                # an outage is timed from the device's last item (or the start, before the first one)
                self._outage_since[modality] = self._arrived.get(modality) or self._t0
                log.warning("%s", message)
                self._put(SourceEvent(self.now(), modality, "lost", message))
            elif update:
                self._put(SourceEvent(self.now(), modality, "lost", message))

    def _name(self, modality: str) -> str:
        if modality == "V":
            return camera_name(self.camera)
        return f"microphone {self.microphone or '(default)'}"

    def _watch(self) -> None:
        while not self.stop.wait(WATCH_S):
            for modality, last in list(self._arrived.items()):
                limit = DEVICE_START_S if last is None else DEVICE_SILENT_S
                if time.monotonic() - (self._t0 if last is None else last) > limit:
                    when = f"for {limit:g} s" if last is not None else f"in its first {limit:g} s"
                    self._lost(modality, f"{self._name(modality)} sent nothing {when}")
            self._revive_microphone()

    def _revive_microphone(self) -> None:
        """A microphone whose stream ended by itself is opened again, with back-off. One that is merely silent
        (a suspended source, a stall) stays open: PortAudio resumes it when the device delivers again."""
        if not self._mic_opened or time.monotonic() < self._mic_retry_at:
            return
        mic = self._mic
        if mic is not None:
            if getattr(mic, "active", True):
                return
            self._lost("A", f"{self._name('A')} stopped (its device or sound server went away): reopening",
                       update=True)  # fmt: skip
            self._mic = None
            mic.close()
        try:
            self._mic = self._open_microphone()
            self._mic_backoff.reset()
        except MerClipError as err:
            log.debug("reopening the microphone: %s", err)
            self._mic_retry_at = time.monotonic() + self._mic_backoff.next()

    def _on_audio(self, samples: np.ndarray, age_s: float | None = None) -> None:
        # The callback runs when PortAudio gets round to it, often two blocks at once and a few ms late: the
        # capture clock anchors the first block (and one after a stall or a drift), the sample count places
        # the rest. ``age_s``: how long ago the block's first sample was captured, when the device says
        # (PortAudio's ADC time; never less than the block's own length, which a stale report can say); else
        # the block is taken as captured just before it arrived. Called from PortAudio's one callback
        # thread, so _audio_t needs no lock.
        length_s = len(samples) / SAMPLE_RATE
        stamped = self.now() - (max(age_s, length_s) if age_s is not None else length_s)
        if age_s is not None and self._audio_t is not None:
            samples = self._follow_capture_clock(samples, stamped)
        placed_after = self._audio_t
        t_s, self._audio_t = place_block(self._audio_t, stamped, len(samples))
        if t_s != placed_after:  # anchored afresh: the drift is measured from here
            self._lateness.clear()
        self._delivered("A")
        if len(samples):
            self._put(AudioBlock(t_s, samples.astype(np.float32, copy=False)))

    def _follow_capture_clock(self, samples: np.ndarray, stamped: float) -> np.ndarray:
        """Re-anchor on the capture clock after a sustained drift (``DRIFT_S``), forward or back."""
        if self._skip:  # moving back: what has no room is skipped, block by block
            skip, self._skip = min(self._skip, len(samples)), self._skip - min(self._skip, len(samples))
            self.skipped_s += skip / SAMPLE_RATE
            return samples[skip:]
        self._lateness.append(stamped - self._audio_t)
        if len(self._lateness) < DRIFT_BLOCKS:
            return samples
        late, early = min(self._lateness), -max(self._lateness)
        if late > DRIFT_S:  # samples were lost: this block starts at its capture time, after a gap
            self._audio_t = None
        elif early > DRIFT_S:  # placed later than captured: skip as much, from this block on
            self._skip = int(round(early * SAMPLE_RATE))
        else:
            return samples
        self.drift_corrections += 1
        self._lateness.clear()
        log.info("microphone %.0f ms %s its capture clock: placed at its capture time again",
                 1000 * max(late, early), "behind" if late > DRIFT_S else "ahead of")  # fmt: skip
        return self._follow_capture_clock(samples, stamped) if self._skip else samples

    def _camera_loop(self) -> None:
        gap = 1.0 / self.fps
        backoff = Backoff(self.retry_s)
        last_t: float | None = None  # stream time of the last frame passed on
        while not self.stop.is_set():
            if self._cap is None:
                if self.stop.wait(backoff.next()):
                    return
                try:
                    self._cap = self._open_camera()
                except MerClipError as err:
                    log.debug("reopening %s: %s", self._name("V"), err)
                    continue
            asked = time.monotonic()
            ok, frame = self._cap.read()
            if not ok or frame is None:
                self._lost("V", f"{self._name('V')} reconnecting (it stopped sending frames)", update=True)
                self._release_camera()
                continue
            backoff.reset()
            t_s = self.now()  # stamped on arrival: a network camera's or a webcam's own clock is not ours
            # at most ``fps`` frames: a frame earlier than 3/4 of a frame interval after the last one passed
            # on is skipped (the 1/4 absorbs arrival jitter, so a camera at exactly ``fps`` loses none)
            if last_t is None or t_s - last_t >= 0.75 * gap:
                last_t = t_s
                self._delivered("V")
                self._put(Frame(t_s, frame))
            elif time.monotonic() - asked < _INSTANT_READ_S:
                self.stop.wait(_DRAIN_PAUSE_S)

    def _release_camera(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def outage_notes(self) -> list[str]:
        """One line per device that stopped during the session (how often, for how long in all), and one for
        the microphone's drift corrections (with the audio they skipped)."""
        notes = []
        for modality, count in self.outages.items():
            if not count:
                continue
            away = self.outage_s[modality]
            since = self._outage_since.get(modality)
            if since is not None:  # still away at the end
                away += time.monotonic() - since
            what = "frames" if modality == "V" else "audio"
            times = "once" if count == 1 else f"{count} times"
            notes.append(f"{self._name(modality)} stopped {times} ({away:.1f} s without {what} in all)")
        if self.drift_corrections:
            count = self.drift_corrections
            skipped = f"; {self.skipped_s:.2f} s of audio had no room and was skipped" if self.skipped_s else ""
            notes.append(f"{self._name('A')} drifted from its capture clock: placed on it again "
                         f"{count} time{'s' if count != 1 else ''}{skipped}")  # fmt: skip
        return notes

    def __iter__(self) -> Iterator[Item]:
        if not self._threads and self._mic is None:
            self.start()
        while not self.stop.is_set():
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._release_camera()
        if self._mic is not None:
            self._mic.close()
