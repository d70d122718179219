"""Where frames and audio come from. Every source is an iterator of ``Frame | AudioBlock | SourceEvent``
in stream-clock order, so the windower treats a webcam, a video file and generated test data alike.

- ``FileSource``: a video file's frames and audio track (PyAV), paced at real time or as fast as possible.
- ``sample_path()``: the short real clip shipped with the package (a face and speech).
- ``SyntheticSource``: frames and audio generated in-process; time is encoded in the content for tests.
- ``DeviceSource`` (``device_source.py``): a camera and a microphone, each in its own thread, one clock.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from merclip.errors import MerClipError

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
