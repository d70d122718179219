"""`merclip-live --record PATH`: keep what the monitor received, so a session can be scored again later.

The recording is a Matroska file (PyAV): the frames at capture rate, lossless (FFV1), and the 16-kHz
microphone audio as 32-bit float PCM. Lossless on purpose: `merclip rescore` replays it window-exact
(the same windows, the same frames per window, the same samples), so the same bundle gives the same
readings. Matroska needs no index at the end, and packets are flushed as they are written: a killed
session leaves a file that plays up to its last packets.

``RecordingSource`` wraps the live source: every item goes on to the session unchanged except for its
time, which is rounded to the container's millisecond clock (frames) or placed back to back on the
audio clock (audio), so that live and replay windows see exactly the same times. Encoding runs in its
own thread; the session thread only queues (a few microseconds per item).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from merclip.errors import MerClipError

from .csvlog import describe_os_error
from .records import AudioBlock, Frame, SourceEvent
from .sources import place_block

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000
MS = Fraction(1, 1000)
# Audio is placed by sources.place_block: blocks further than REANCHOR_S from the back-to-back position start
# a new anchor (a stall of the microphone); the recording keeps the jump in its timestamps, which exact
# replay follows.
# close() waits at most this long for the writer to finish the file (then the session ends without it).
CLOSE_TIMEOUT_S = 30.0
# Frames held before the video size is known (the first frame decides it); audio-only after this long.
WAIT_FOR_VIDEO_S = 1.0


def check_record_target(path: str | Path) -> Path:
    """Validate ``--record`` (a new .mkv in an existing folder); creates nothing."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise MerClipError(f"--record {target} is a folder: give a file name such as session.mkv")
    if target.suffix.lower() not in (".mkv", ".mka"):
        raise MerClipError(f"--record {target}: recordings are Matroska files, name it with .mkv")
    if not target.parent.is_dir():
        raise MerClipError(f"--record: folder {target.parent} does not exist")
    return target


def reserve_record_target(path: str | Path) -> Path:
    """Create the recording's file now, empty and exclusively (O_EXCL), and return its path.

    The rule of ``--log``: an existing file is never overwritten; the recording goes beside it as
    NAME-1.mkv, NAME-2.mkv, ... Creating the file at the start (not when the first frame comes) says at once
    when the folder cannot take it (read-only, no permission) and makes the name this session's alone: two
    sessions given the same name get two files. ``Recorder`` then writes into it; ``release_reserved`` removes
    it again if nothing was written."""
    target = check_record_target(path)
    candidate, n = target, 1
    while True:
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # as --log's files: umask decides
        except FileExistsError:
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
            n += 1
            continue
        except OSError as err:
            raise MerClipError(f"cannot record to {candidate}: {describe_os_error(err)}") from None
        os.close(fd)
        return candidate


def release_reserved(path: Path) -> None:
    """Remove a reserved recording that is still empty (the session ended before anything was recorded)."""
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except OSError:
        pass


class Recorder:
    """Writes frames and audio to a Matroska file from its own thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.failure = ""
        self.frames = 0
        self.samples = 0
        self._queue: queue.Queue = queue.Queue(maxsize=1024)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._box = self._video = self._audio = None
        self._pending: list = []
        self._thread.start()

    def put(self, item: Frame | AudioBlock) -> None:
        if self.failure:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the encoder fell behind: the recording gets a gap, the session never waits
            log.warning("recorder behind: dropped a %s", type(item).__name__)

    def close(self) -> None:
        """Finish the file; returns within CLOSE_TIMEOUT_S whatever state the writer is in."""
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        # never a blocking put: a writer that is gone would leave a full queue that nobody empties
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # ---- writer thread ----
    def _run(self) -> None:
        closing = False
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    closing = True
                    break
                self._write(item)
            if self._box is None and self._pending:
                self._open(None)
            self._finish()
        except Exception as err:  # disk full, codec trouble: the session goes on without a recording
            self.failure = f"recording stopped: {err}"  # said once here and in the session summary
            log.warning(self.failure)
            if not closing:  # close() has not come yet: keep the queue moving until it does
                self._discard()

    def _discard(self) -> None:
        """After a failure: empty the queue until close(), so neither a racing put nor close() waits on it."""
        self._pending = []
        while self._queue.get() is not None:
            pass

    def _write(self, item) -> None:
        if self._box is None:
            self._pending.append(item)
            first = self._pending[0]
            if isinstance(item, Frame):
                self._open(item.rgb.shape)
            elif item.t_s - first.t_s > WAIT_FOR_VIDEO_S:
                self._open(None)
            return
        self._mux(item)

    def _open(self, shape) -> None:
        import av

        # flush_packets and 1-s clusters: a killed session loses at most about a second of recording
        options = {"flush_packets": "1", "cluster_time_limit": "1000"}
        self._box = av.open(str(self.path), "w", format="matroska", options=options)
        if shape is not None:
            self._video = self._box.add_stream("ffv1", rate=1000)
            self._video.width, self._video.height = int(shape[1]), int(shape[0])
            self._video.pix_fmt = "bgr0"  # lossless from RGB
            self._video.time_base = MS
        self._audio = self._box.add_stream("pcm_f32le", rate=SAMPLE_RATE, layout="mono")
        self._audio.time_base = Fraction(1, SAMPLE_RATE)
        pending, self._pending = self._pending, []
        for item in pending:
            self._mux(item)

    def _mux(self, item) -> None:
        import av

        if isinstance(item, Frame):
            if self._video is None or item.rgb.shape[:2] != (self._video.height, self._video.width):
                return  # audio-only recording, or a camera that changed size: not representable, skipped
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(item.rgb), format="rgb24").reformat(format="bgr0")
            frame.pts, frame.time_base = int(round(item.t_s * 1000)), MS
            packets = self._video.encode(frame)
            self.frames += 1
        else:
            frame = av.AudioFrame.from_ndarray(item.samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts, frame.time_base = int(round(item.t_s * SAMPLE_RATE)), Fraction(1, SAMPLE_RATE)
            packets = self._audio.encode(frame)
            self.samples += len(item.samples)
        for packet in packets:
            self._box.mux(packet)

    def _finish(self) -> None:
        if self._box is None:  # nothing came: cmd_live removes the empty file it reserved
            return
        for stream in (self._video, self._audio):
            if stream is not None:
                for packet in stream.encode(None):
                    self._box.mux(packet)
        self._box.close()


class RecordingSource:
    """A live source whose frames and audio are also recorded; times made exact for replay (see module doc)."""

    def __init__(self, source, recorder: Recorder):
        self.source = source
        self.recorder = recorder
        self._audio_t: float | None = None

    @property
    def missing(self) -> list[str]:
        # read through: a device source learns what is missing only when it starts, after this wraps it
        return getattr(self.source, "missing", [])

    def __getattr__(self, name: str):
        return getattr(self.source, name)

    def __iter__(self) -> Iterator[Frame | AudioBlock | SourceEvent]:
        for item in self.source:
            if isinstance(item, Frame):
                item = Frame(round(item.t_s * 1000) / 1000, item.rgb)
            elif isinstance(item, AudioBlock):
                item = self._place(item)
            else:
                yield item
                continue
            self.recorder.put(item)
            yield item

    def _place(self, block: AudioBlock) -> AudioBlock:
        """Back to back on the audio clock (what replay reconstructs); a stall re-anchors on a ms boundary.
        A microphone's blocks arrive placed on that clock already (``DeviceSource.places_audio``: the same
        rule, and a drift correction that needs the capture times): they are kept as the session saw them."""
        if getattr(self.source, "places_audio", False):
            return block
        t_s, self._audio_t = place_block(self._audio_t, block.t_s, len(block.samples), SAMPLE_RATE)
        return AudioBlock(t_s, block.samples)

    def close(self) -> None:
        self.source.close()
