"""2-s windows from timestamped frames and audio, aligned on the stream clock.

Window k covers [k * hop, k * hop + window). Its audio is exactly ``window_s`` of 16 kHz samples taken by
timestamp (silence where none arrived); its frames are the ``frames_per_window`` frames nearest to evenly
spaced times inside it. A window closes once every *active* modality's clock has passed its end; a
modality that has sent nothing for ``stale_s`` stops holding windows back, so a lost camera never stalls
the session.

Buffer policy: audio and frames older than the oldest open window are trimmed on every push, so memory
stays flat however long the session runs.

Frames are chosen before the window closes: a slot's frame is settled as soon as a frame at or past the
slot's time has arrived (timestamps only grow, so no later frame can be nearer). ``take_settled`` hands
those frames out, so the vision encoder can run during the window instead of after it; the window that
closes later holds the very same frame objects.

Face crop (``model/face.py``): with a tracker, each chosen frame goes through it once, in time order, as
it is settled (or at close, for a slot never settled): the window holds the followed face's crops, and
``take_settled`` hands out those same crops. A slot where no face is in view takes the nearest slot's
crop; a window with no face at all has no frames (vision is absent) and ``face`` "none".
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator

import numpy as np
from merclip.model.face import fill_missing

from .records import AudioBlock, Frame, Window

_EPS = 1e-6  # clock comparisons: block times are sums of floats


class Windower:
    def __init__(
        self,
        window_s: float = 2.0,
        hop_s: float = 2.0,
        frames_per_window: int = 4,
        sample_rate: int = 16000,
        stale_s: float = 0.5,
        clock=time.monotonic,
        face=None,
    ):
        """``face``: a ``FaceTracker`` (or any callable rgb -> (crop | None, box | None)); None = whole frames."""
        if hop_s <= 0 or hop_s > window_s:
            raise ValueError("hop_s must be in (0, window_s]")
        self.window_s, self.hop_s = window_s, hop_s
        self.frames_per_window = frames_per_window
        self.sample_rate = sample_rate
        self.window_samples = int(round(window_s * sample_rate))
        self.stale_s = stale_s
        self.clock = clock
        self._frames: deque[Frame] = deque()
        self._audio: deque[AudioBlock] = deque()
        self._last = {"V": None, "A": None}  # latest timestamp seen per modality
        self._next_index = 0
        self.face = face
        # (window, slot) -> (crop or None, normalised box or None) of the frame chosen for that slot
        self._settled: dict[tuple[int, int], tuple[np.ndarray | None, tuple | None]] = {}
        self._ready_frames: list[np.ndarray] = []

    def _window_bounds(self, index: int) -> tuple[float, float]:
        start = index * self.hop_s
        return start, start + self.window_s

    def push(self, item: Frame | AudioBlock) -> Iterator[Window]:
        """Add a frame or audio block; yield every window that is now complete."""
        if isinstance(item, Frame):
            self._frames.append(item)
            self._last["V"] = max(self._last["V"] or item.t_s, item.t_s)
            self._settle(item.t_s)
        else:
            self._audio.append(item)
            end = item.t_s + len(item.samples) / self.sample_rate
            self._last["A"] = max(self._last["A"] or end, end)
        yield from self._ready()

    def flush(self) -> Iterator[Window]:
        """At the end of a source: close the trailing windows that hold at least half a window of data
        (padding their audio with silence); a sliver such as an encoder's padding makes no reading."""
        latest = max((t for t in self._last.values() if t is not None), default=None)
        while latest is not None:
            start, _ = self._window_bounds(self._next_index)
            if latest - start < 0.5 * self.window_s - _EPS:
                break
            yield self._close()

    def _ready(self) -> Iterator[Window]:
        seen = [t for t in self._last.values() if t is not None]
        newest = max(seen)
        active = [t for t in seen if newest - t <= self.stale_s]
        while True:
            _, end = self._window_bounds(self._next_index)
            if min(active) < end - _EPS:
                return
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
        slots = [self._choose(index, slot, frame)[0] for slot, frame in enumerate(chosen)]
        crops = [c for c, _ in slots]
        boxes = [b for _, b in slots if b is not None]
        filled = fill_missing(crops)
        if filled is None:
            return (), (), None, "none"
        return tuple(filled), tuple(f.t_s for f in chosen), boxes[-1], "found"

    def _choose(self, index: int, slot: int, frame: Frame) -> tuple[tuple[np.ndarray | None, tuple | None], bool]:
        """The picture for a slot (the face crop, or the frame itself), computed once; True if new."""
        key = (index, slot)
        if key in self._settled:
            return self._settled[key], False
        picture = self.face(frame.rgb) if self.face is not None else (frame.rgb, None)
        self._settled[key] = picture
        return picture, True

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
                (picture, _), _ = self._choose(index, slot, inside[int(np.abs(times - target).argmin())])
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


def windows_in(duration_s: float, window_s: float, hop_s: float) -> int:
    """How many full windows a stream of ``duration_s`` holds."""
    return max(0, math.floor((duration_s - window_s) / hop_s + 1e-9) + 1)
