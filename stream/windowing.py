"""2-s windows from timestamped frames and audio, aligned on the stream clock.

Window k covers [k * hop, k * hop + window). Its audio is exactly ``window_s`` of 16 kHz samples taken by
timestamp (silence where none arrived); its frames are the ``frames_per_window`` frames nearest to evenly
spaced times inside it.

When a window closes (DESIGN §3): once every track that is still delivering has sent an item at or past
its end, so no item that belongs inside it can still come. Which tracks hold windows back is said by the
source, never guessed from timestamps:
- the source's ``tracks`` hold windows from the start, before their first item (a microphone whose first
  block arrives 2 s after the camera's first frame, an audio track that starts 1 s into the video);
- a ``SourceEvent`` with status lost, absent or ended lets a track go: a device's watchdog says "lost" when
  it has sent nothing for a while on the wall clock (``device_source.DEVICE_SILENT_S``), a file says "ended" at
  the end of a track. A new item (or an "ok" event) from the track makes it hold windows again.
No track is judged stale by stream time: a file's tracks arrive in its muxer's order (video commonly 1 s or
more ahead of the audio that plays with it) and a device's with its own latency. An item that arrives for
a window already closed cannot be placed: it is counted in ``late_items``, never dropped silently.

Buffer policy: audio and frames older than the oldest open window are trimmed at every close, so memory
stays flat however long the session runs.

Frames are chosen before the window closes: a slot's frame is settled as soon as a frame at or past the
slot's time has arrived (timestamps only grow, so no later frame can be nearer). ``take_settled`` hands
those frames out, so the vision encoder can run during the window instead of after it; the window that
closes later holds the very same frame objects.

Face crop (``model/face.py``): with a tracker, each chosen frame goes through it once, in time order, as
it is settled (or at close, for a slot never settled): the window holds the followed face's crops, and
``take_settled`` hands out those same crops. A window none of whose chosen frames had a detection has no
frames (vision is absent) and ``face`` "none"; otherwise a slot without a face takes the nearest slot's
crop (``face.window_crops``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
from merclip.model.face import FaceCrop, window_crops

from .records import AudioBlock, Frame, SourceEvent, Window

_EPS = 1e-6  # clock comparisons: block times are sums of floats
MODALITIES = ("V", "A")
# A track in one of these states no longer holds windows back (SourceEvent.status).
RELEASED = ("lost", "absent", "ended")
# At the end of a stream, a trailing window is read when it holds at least this much: more than the padding an
# encoder leaves at the end of a track (AAC: 1024 samples, 64 ms at 16 kHz; a last video frame: 40 ms), less
# than a spoken word. It used to take half a window, and the last second of speech of a file was never heard.
MIN_TRAILING_S = 0.25


class Windower:
    def __init__(
        self,
        window_s: float = 2.0,
        hop_s: float = 2.0,
        frames_per_window: int = 4,
        sample_rate: int = 16000,
        clock=time.monotonic,
        face=None,
        tracks: str = "VA",
    ):
        """``face``: a ``FaceTracker`` (or any callable (rgb, t_s) -> ``FaceCrop``); None = whole frames.
        ``tracks``: what the source delivers ("V", "A" or both; ``expect`` sets it from a source)."""
        if hop_s <= 0 or hop_s > window_s:
            raise ValueError("hop_s must be in (0, window_s]")
        self.window_s, self.hop_s = window_s, hop_s
        self.frames_per_window = frames_per_window
        self.sample_rate = sample_rate
        self.window_samples = int(round(window_s * sample_rate))
        self.clock = clock
        self._frames: deque[Frame] = deque()
        self._audio: deque[AudioBlock] = deque()
        self._last: dict[str, float | None] = {m: None for m in MODALITIES}  # newest stream time per track
        self._holding: dict[str, bool] = {}
        self.expect(tracks)
        self._next_index = 0
        self.late_items = 0  # frames and audio blocks that came for windows already closed
        self.face = face
        # (window, slot) -> what the tracker made of the frame chosen for that slot
        self._settled: dict[tuple[int, int], FaceCrop] = {}
        self._ready_frames: list[np.ndarray] = []

    def expect(self, tracks: str) -> None:
        """The tracks the source will deliver: each holds windows back until it delivers or is let go."""
        self._holding = {m: m in tracks for m in MODALITIES}

    def _window_bounds(self, index: int) -> tuple[float, float]:
        start = index * self.hop_s
        return start, start + self.window_s

    def push(self, item: Frame | AudioBlock | SourceEvent) -> Iterator[Window]:
        """Add a frame, an audio block or a source's event; yield every window that is now complete."""
        if isinstance(item, SourceEvent):
            if item.modality in self._holding:
                self._holding[item.modality] = item.status not in RELEASED
        elif isinstance(item, Frame):
            self._holding["V"] = True
            self._last["V"] = max(self._last["V"] or item.t_s, item.t_s)
            if self._is_late(item.t_s):
                self.late_items += 1
            else:
                self._frames.append(item)
                self._settle(item.t_s)
        else:
            self._holding["A"] = True
            end = item.t_s + len(item.samples) / self.sample_rate
            self._last["A"] = max(self._last["A"] or end, end)
            if self._is_late(item.t_s):
                self.late_items += 1  # counted even when its tail still lands in an open window
            self._audio.append(item)
        yield from self._ready()

    def _is_late(self, t_s: float) -> bool:
        """Stream time ``t_s`` lies in a window already closed (before the first window it is pre-roll, such
        as an encoder's priming samples, and not a loss)."""
        return self._next_index > 0 and t_s < self._window_bounds(self._next_index)[0] - _EPS

    def flush(self) -> Iterator[Window]:
        """At the end of a source: close the trailing windows that hold at least ``MIN_TRAILING_S`` of data
        (padding their audio with silence), so the last words of a file or of a stopped session are read; a
        sliver such as an encoder's padding makes no reading."""
        latest = max((t for t in self._last.values() if t is not None), default=None)
        while latest is not None:
            start, _ = self._window_bounds(self._next_index)
            if latest - start < min(MIN_TRAILING_S, self.window_s / 2) - _EPS:  # short test windows: half
                break
            yield self._close()

    def rest(self) -> tuple[float, np.ndarray] | None:
        """After ``flush``: the audio past the last window, too short to make one (a stream's end under
        ``MIN_TRAILING_S``), as (stream time, samples); None when there is none. Not read, but heard: the
        transcriber hears it with the last window, so a word the stream's end cut short is heard whole."""
        start, _ = self._window_bounds(self._next_index)
        end = self._last["A"]
        if end is None or end - start <= _EPS:
            return None
        audio, heard = self._cut_audio(start)
        n = min(len(audio), int(round((end - start) * self.sample_rate)))
        return (start, audio[:n]) if heard and n > 0 else None

    def _ready(self) -> Iterator[Window]:
        while True:
            _, end = self._window_bounds(self._next_index)
            if any(self._holding[m] and (self._last[m] or -math.inf) < end - _EPS for m in MODALITIES):
                return  # a track still delivering may send items inside this window
            if max((t for t in self._last.values() if t is not None), default=-math.inf) < end - _EPS:
                return  # no track is held, but no data has passed the window's end either
            yield self._close()

    def _close(self) -> Window:
        index = self._next_index
        start, end = self._window_bounds(index)
        self._next_index += 1
        audio, has_audio = self._cut_audio(start)
        frames, times, box, face = self._pick_frames(index, start, end)
        self._trim(self._window_bounds(self._next_index)[0])
        self._settled = {key: v for key, v in self._settled.items() if key[0] >= self._next_index}
        return Window(index, start, end, frames, times, audio, has_audio, self.clock(), box, face)

    def _cut_audio(self, start: float) -> tuple[np.ndarray, bool]:
        out = np.zeros(self.window_samples, np.float32)
        first = int(round(start * self.sample_rate))
        heard = False
        for block in self._audio:
            offset = int(round(block.t_s * self.sample_rate)) - first
            lo, hi = max(0, offset), min(self.window_samples, offset + len(block.samples))
            if lo < hi:
                out[lo:hi] = block.samples[lo - offset : hi - offset]
                heard = True
        return out, heard

    def _pick_frames(self, index: int, start: float, end: float) -> tuple[tuple, tuple, tuple | None, str]:
        inside = [f for f in self._frames if start <= f.t_s < end]
        if not inside:
            return (), (), None, ""
        times = np.array([f.t_s for f in inside])
        chosen = [inside[int(np.abs(times - t).argmin())] for t in self._targets(start)]
        if self.face is None:
            return tuple(f.rgb for f in chosen), tuple(f.t_s for f in chosen), None, ""
        faces = [self._choose(index, slot, frame) for slot, frame in enumerate(chosen)]
        crops = window_crops(faces)
        if crops is None:
            return (), (), None, "none"
        box = [f.box for f in faces if f.box is not None][-1]
        return tuple(crops), tuple(f.t_s for f in chosen), box, "found"

    def _choose(self, index: int, slot: int, frame: Frame) -> FaceCrop:
        """The picture for a slot (the face crop, or the frame itself), computed once."""
        key = (index, slot)
        if key not in self._settled:
            self._settled[key] = (
                self.face(frame.rgb, frame.t_s) if self.face is not None else FaceCrop(frame.rgb, None, True)
            )
        return self._settled[key]

    def take_settled(self) -> list[np.ndarray]:
        """Frames whose place in an open window is decided, each once (for early encoding)."""
        out, self._ready_frames = self._ready_frames, []
        return out

    def _targets(self, start: float) -> list[float]:
        step = self.window_s / self.frames_per_window
        return [start + (i + 0.5) * step for i in range(self.frames_per_window)]

    def _settle(self, now_s: float) -> None:
        index = self._next_index
        while True:
            start, end = self._window_bounds(index)
            if start > now_s:
                break
            inside = [f for f in self._frames if start <= f.t_s < end]
            for slot, target in enumerate(self._targets(start)):
                if target > now_s + _EPS or (index, slot) in self._settled or not inside:
                    continue
                times = np.array([f.t_s for f in inside])
                picture = self._choose(index, slot, inside[int(np.abs(times - target).argmin())]).crop
                if picture is not None:
                    self._ready_frames.append(picture)
            index += 1

    def _trim(self, keep_from: float) -> None:
        while self._frames and self._frames[0].t_s < keep_from:
            self._frames.popleft()
        rate = self.sample_rate
        while self._audio and self._audio[0].t_s + len(self._audio[0].samples) / rate <= keep_from:
            self._audio.popleft()

    @property
    def buffered(self) -> tuple[int, int]:
        """(frames, audio blocks) held: bounded by about one window (test hook for flat memory)."""
        return len(self._frames), len(self._audio)


def cut_windows(source: Iterable, windower: Windower) -> Iterator[Window]:
    """Every window of a source, as a session cuts them (no model, no pacing): for tests, ``bench`` and
    ``eval --protocol windows``. The source's ``tracks`` (when it says) tell the windower what to wait for."""
    tracks = getattr(source, "tracks", None)
    if tracks is not None:
        windower.expect(tracks)
    for item in source:
        yield from windower.push(item)
    yield from windower.flush()


def windows_in(duration_s: float, window_s: float, hop_s: float) -> int:
    """How many full windows a stream of ``duration_s`` holds."""
    return max(0, math.floor((duration_s - window_s) / hop_s + 1e-9) + 1)
