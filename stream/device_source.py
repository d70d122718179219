"""``DeviceSource``: a camera (OpenCV: index, device path or URL) and a microphone (sounddevice), each in its
own thread, stamped on one clock, as an iterator of ``Frame | AudioBlock | SourceEvent`` like every source
(``sources.py``). The devices are opened by ``capture``; a device that stalls or goes away is said, waited
for and opened again while the other goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from merclip.errors import MerClipError

from .capture import MIC_LATENCY_S, camera_name, camera_target, opencv_camera, sounddevice_microphone, with_latency
from .records import AudioBlock, Frame, SourceEvent
from .sources import SAMPLE_RATE, Item, place_block

log = logging.getLogger(__name__)

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
