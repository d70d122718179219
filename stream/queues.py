"""The bounded queue between the live session's stages: drops the oldest item when full (live), or makes the
producer wait (a file replayed as fast as possible)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class Closed(Exception):
    """The queue was closed and is empty."""


class DropOldestQueue:
    """A bounded FIFO. Live (default): ``put`` never blocks; when full, the oldest item is dropped and
    counted. With ``backpressure`` (replaying a file as fast as possible) ``put`` waits instead."""

    def __init__(self, maxsize: int, backpressure: bool = False, on_drop: Callable | None = None):
        self.maxsize = maxsize
        self.backpressure = backpressure
        self.on_drop = on_drop
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self.backpressure:
                self._cond.wait_for(lambda: len(self._items) < self.maxsize or self._closed)
            elif len(self._items) >= self.maxsize:
                old = self._items.popleft()
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop(old)
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None = None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()  # wake a producer waiting for room
                return item
            raise Closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)
