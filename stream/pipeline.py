"""The live session: capture -> windows -> ASR -> engine -> readings, each stage in its own thread,
joined by bounded queues.

Drop policy: the queue in front of ASR holds at most ``queue_windows`` windows and the one in front of
the engine one; when a stage falls behind, the *oldest* waiting window is dropped and counted, so the
reading shown is never more than a couple of windows late and latency cannot grow without bound.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .engine import Engine
from .records import Reading, SourceEvent, Window
from .transcriber import Transcriber, Transcript, context_tail
from .windowing import Windower

log = logging.getLogger(__name__)

# At stop, windows already captured may take this long to finish (a couple of windows of model time).
DRAIN_S = 10.0


class Closed(Exception):
    """The queue was closed and is empty."""


class DropOldestQueue:
    """A bounded FIFO. Live (default): ``put`` never blocks; when full, the oldest item is dropped and
    counted. With ``backpressure`` (replaying a file as fast as possible) ``put`` waits instead."""

    def __init__(self, maxsize: int, backpressure: bool = False):
        self.maxsize = maxsize
        self.backpressure = backpressure
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self.backpressure:
                self._cond.wait_for(lambda: len(self._items) < self.maxsize or self._closed)
            elif len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
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


@dataclass
class SessionStats:
    windows: int = 0
    readings: int = 0
    asr_errors: int = 0
    engine_errors: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=1000))
    events: list[SourceEvent] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=lambda: {"V": "waiting", "A": "waiting", "L": "waiting"})
    started: float = field(default_factory=time.monotonic)
    dropped: int = 0
    error: str = ""

    def latency_p95_ms(self) -> float:
        return float(np.percentile(list(self.latencies_ms), 95)) if self.latencies_ms else 0.0


class LiveSession:
    def __init__(
        self,
        source: Iterable,
        windower: Windower,
        engine: Engine,
        transcriber: Transcriber | None = None,
        queue_windows: int = 2,
        context_words: int = 8,
        duration_s: float | None = None,
        backpressure: bool = False,
    ):
        self.source = source
        self.windower = windower
        self.engine = engine
        self.transcriber = transcriber
        self.context_words = context_words
        self.duration_s = duration_s
        self.stats = SessionStats()
        self.stop_event = threading.Event()
        self._to_asr = DropOldestQueue(queue_windows, backpressure)
        self._to_engine = DropOldestQueue(1, backpressure)
        self.readings: DropOldestQueue = DropOldestQueue(1000)  # consumer is the UI/CSV thread: fast
        self._threads: list[threading.Thread] = []
        if transcriber is None:
            self.stats.status["L"] = "off"

    # ---- stages -------------------------------------------------------------------------------------
    def _capture(self) -> None:
        try:
            for item in self.source:
                if self.stop_event.is_set():
                    break
                if isinstance(item, SourceEvent):
                    self.stats.events.append(item)
                    self.stats.status[item.modality] = item.status if not item.message else item.message
                    continue
                if not self._emit(self.windower.push(item)):
                    break
            else:
                self._emit(self.windower.flush())
        except Exception as err:  # a source that dies (corrupt file, device error) ends the session cleanly
            log.error("capture stopped: %s", err)
            self.stats.error = str(err)
        finally:
            self._to_asr.close()

    def _emit(self, windows: Iterable[Window]) -> bool:
        for window in windows:
            if self.duration_s is not None and window.t_end_s > self.duration_s + 1e-6:
                return False
            self.stats.windows += 1
            self._to_asr.put(window)
        return True

    def _asr(self) -> None:
        previous = ""
        try:
            while True:
                window = self._to_asr.get()
                transcript = Transcript("", 0.0)
                if self.transcriber is not None and window.has_audio:
                    try:
                        transcript = self.transcriber.transcribe(
                            window.audio, context_tail(previous, self.context_words)
                        )
                        self.stats.status["L"] = "ok"
                    except Exception as err:  # ASR failing is a missing modality, not the end of the session
                        self.stats.asr_errors += 1
                        self.stats.status["L"] = f"ASR error: {err}"
                        log.warning("ASR failed on window %d: %s", window.index, err)
                        transcript = Transcript("", 0.0, error=str(err))
                previous = transcript.text or previous
                self._to_engine.put((window, transcript))
        except Closed:
            pass
        finally:
            self._to_engine.close()

    def _engine(self) -> None:
        try:
            while True:
                window, transcript = self._to_engine.get()
                try:
                    result = self.engine.run(window, transcript.text)
                except Exception as err:
                    self.stats.engine_errors += 1
                    log.error("model failed on window %d: %s", window.index, err)
                    continue
                latency = (time.monotonic() - window.closed_wall_s) * 1000
                self.stats.latencies_ms.append(latency)
                self.stats.readings += 1
                self.stats.dropped = self._to_asr.dropped + self._to_engine.dropped
                self.stats.status["V"] = "ok" if "V" in result.modalities else self.stats.status["V"]
                self.stats.status["A"] = "ok" if "A" in result.modalities else self.stats.status["A"]
                self.readings.put(
                    Reading(
                        window=window.index,
                        t_start_s=window.t_start_s,
                        t_end_s=window.t_end_s,
                        wall_time_utc=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                        emotions=result.emotions,
                        sentiment=result.sentiment,
                        transcript=transcript.text,
                        modalities=result.modalities,
                        dropped_windows=self.stats.dropped,
                        latency_ms=latency,
                        asr_ms=transcript.ms,
                        model_ms=result.ms,
                    )
                )
        except Closed:
            pass
        finally:
            self.readings.close()

    # ---- control ------------------------------------------------------------------------------------
    def start(self) -> None:
        for name, target in (("capture", self._capture), ("asr", self._asr), ("engine", self._engine)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop capturing; windows already captured still finish."""
        self.stop_event.set()
        close = getattr(self.source, "close", None)
        if close:
            close()

    def join(self, timeout: float = 10.0) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def run(
        self,
        on_reading: Callable[[Reading], None],
        on_tick: Callable[[], None] | None = None,
        tick_s: float = 0.25,
        should_stop: Callable[[], bool] | None = None,
    ) -> SessionStats:
        """Run to the end of the source (or ``stop()``), calling ``on_reading`` in this thread."""
        self.start()
        try:
            while True:
                if should_stop is not None and should_stop():
                    self.stop()
                try:
                    on_reading(self.readings.get(timeout=tick_s))
                except TimeoutError:
                    pass
                except Closed:
                    break
                if on_tick is not None:
                    on_tick()
        finally:
            self.stop()
            # let the windows already captured finish, so nothing computed is lost
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline:
                try:
                    on_reading(self.readings.get(timeout=0.25))
                except TimeoutError:
                    continue
                except Closed:
                    break
            self.join(timeout=1.0)
        return self.stats
