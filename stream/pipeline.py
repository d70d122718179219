"""The live session: capture -> windows -> (ASR || vision+audio encoders) -> fusion -> readings, each
stage in its own thread, joined by bounded queues.

Drop policy: the queue in front of ASR holds at most ``queue_windows`` windows and the one in front of
the engine one; when a stage falls behind, the *oldest* waiting window is dropped and counted, so the
reading shown is never more than a couple of windows late and latency cannot grow without bound.

Overlap: the encode thread runs the vision encoder on each frame as soon as the windower has chosen it
(during the window, while the CPU is otherwise idle), and, while Whisper transcribes a closed window, the
audio encoder (``engine.prepare``): a window's reading waits for Whisper, then the text encoder and the
fusion, not for the sum of every stage.

Two readings per window: a *provisional* one as soon as the window closed (its last words may still
change) and the *final* one a window later, when the streaming transcriber has committed the window's
words (``stream/speech.py``). A final whose words did not change reuses the provisional numbers; one
whose words changed re-runs only the text encoder and fusion. A window dropped under load has neither.
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
from merclip.model.reading import ReadingSetting

from .context import ReadingContext
from .engine import Engine, EngineResult, WindowLost
from .queues import Closed, DropOldestQueue
from .records import Reading, SourceEvent, Window
from .speech import TranscriptUpdate, WindowText
from .transcriber import PerWindow
from .windowing import Windower

log = logging.getLogger(__name__)

# At stop, windows already captured may take this long to finish (a couple of windows of model time).
DRAIN_S = 10.0
# Readings waiting for the UI/CSV thread (provisional and final: two per window).
READINGS_QUEUE = 1000


def window_age_ms(now: float, window: Window, clock_origin: float | None) -> float:
    """A reading's ``latency_ms``: how long ago its window's end was captured, on the source's clock.

    ``clock_origin`` is ``time.monotonic()`` at stream time 0 for a source on the wall clock (a device, a
    real-time replay), so a window that waited in a queue shows its real age; a replay as fast as possible
    (None) has no moment of capture, and counts from when the windower closed the window. A window is never
    captured after it was closed: the last one of a file or of a stopped session ends early (its nominal end
    lies in the future), and counts from its close too.
    """
    captured = window.closed_wall_s
    if clock_origin is not None:
        captured = min(captured, clock_origin + window.t_end_s)
    return (now - captured) * 1000


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
    late_items: int = 0  # frames and audio blocks that arrived for windows already closed (never placed)
    error: str = ""

    def latency_p95_ms(self) -> float:
        return float(np.percentile(list(self.latencies_ms), 95)) if self.latencies_ms else 0.0


@dataclass
class _Shown:
    """A provisional reading waiting for its window's final words."""

    window: Window
    text: str  # the window's own words (the CSV's transcript cell)
    read: str  # the words the reading read (its context: ReadingContext)
    result: EngineResult
    latency_ms: float
    asr_ms: float


class LiveSession:
    def __init__(
        self,
        source: Iterable,
        windower: Windower,
        engine: Engine,
        transcriber=None,
        queue_windows: int = 2,
        context_words: int = 8,
        duration_s: float | None = None,
        backpressure: bool = False,
        overlap: bool = True,
        reading: ReadingSetting | None = None,
    ):
        """``transcriber``: a streaming transcriber (``push``/``finish``, see ``stream/speech.py``), a
        per-window one (``transcribe``), or None for no words. ``reading``: what each reading reads (the
        bundle's setting); None = each window's own words."""
        self.source = source
        self.windower = windower
        self.engine = engine
        if transcriber is not None and not hasattr(transcriber, "push"):
            transcriber = PerWindow(transcriber, context_words)
        self.transcriber = transcriber
        self.duration_s = duration_s
        self.context = ReadingContext(reading or ReadingSetting())
        self.stats = SessionStats()
        self.stop_event = threading.Event()
        self._dropped_windows: set[int] = set()
        self._lost = 0  # windows the engine lost (WindowLost): counted with the dropped ones
        self._to_asr = DropOldestQueue(queue_windows, backpressure, on_drop=self._forget)
        self._to_engine = DropOldestQueue(1, backpressure, on_drop=lambda item: self._forget(item[0]))
        # the encoders run beside ASR when the engine can prepare a window ahead of its words
        self._prepare = getattr(engine, "prepare", None) if overlap else None
        # ... and the vision encoder runs during the window, on frames the windower has already chosen
        self._prepare_frames = getattr(engine, "prepare_frames", None) if self._prepare is not None else None
        self._to_encode = DropOldestQueue(4 * (queue_windows + 1), backpressure)
        # Finals travel beside the queue, never dropped: a row once shown is always logged.
        self._finals: deque[WindowText] = deque()
        self._shown: dict[int, _Shown] = {}
        # The consumer is the UI/CSV thread. Replaying a file it may be slower than the model (a row is one
        # fsync): then the model waits. Live, a stalled consumer loses the oldest rows, counted as dropped.
        self._rows_lost = 0
        self._rest: tuple[float, np.ndarray] | None = None  # the stream's end after its last window (heard)
        self.readings: DropOldestQueue = DropOldestQueue(READINGS_QUEUE, backpressure, on_drop=self._row_lost)
        self._threads: list[threading.Thread] = []
        if transcriber is None:
            self.stats.status["L"] = "off"

    def _forget(self, window: Window) -> None:
        self._dropped_windows.add(window.index)

    def _row_lost(self, reading: Reading) -> None:
        if reading.final:
            self._rows_lost += 1
            self._count_dropped()

    # ---- stages -------------------------------------------------------------------------------------
    def _capture(self) -> None:
        tracks = getattr(self.source, "tracks", None)
        if tracks is not None:  # what the windower waits for: the tracks the source delivers
            self.windower.expect(tracks)
        try:
            for item in self.source:
                if self.stop_event.is_set():
                    break
                if isinstance(item, SourceEvent) and item.status != "ended":  # a file's track ending is no news
                    self.stats.events.append(item)
                    self.stats.status[item.modality] = item.status if not item.message else item.message
                # events go to the windower too: a device lost or a track ended no longer holds windows back
                if not self._emit(self.windower.push(item)):
                    break
                self.stats.late_items = self.windower.late_items
                if self._prepare_frames is not None:
                    settled = self.windower.take_settled()
                    if settled:
                        self._to_encode.put(settled)
            # the open window is read at the end and on stop alike (Ctrl-C keeps the last words heard);
            # past --duration, _emit refuses it
            if self._emit(self.windower.flush()) and self._rest is None:  # (not cut by --duration)
                self._rest = self._heard_rest()
        except Exception as err:  # a source that dies (corrupt file, device error) ends the session cleanly
            log.error("capture stopped: %s", err)
            self.stats.error = str(err)
        finally:
            self._to_asr.close()
            self._to_encode.close()

    def _heard_rest(self) -> tuple[float, np.ndarray] | None:
        """The audio after the last window (too short to make one), up to --duration: the transcriber hears
        it with the last window (a word the stream's end cut short); no reading reads it alone."""
        rest = self.windower.rest()
        return None if rest is None else self._within_duration(*rest)

    def _within_duration(self, t_s: float, audio: np.ndarray) -> tuple[float, np.ndarray] | None:
        if self.duration_s is None:
            return t_s, audio
        keep = int(round((self.duration_s - t_s) * self.windower.sample_rate))
        return (t_s, audio[:keep]) if keep > 0 else None

    def _emit(self, windows: Iterable[Window]) -> bool:
        for window in windows:
            if self.duration_s is not None and window.t_end_s > self.duration_s + 1e-6:
                # the window --duration cuts is not read, but its audio up to the duration is heard
                if window.has_audio and self._rest is None:
                    self._rest = self._within_duration(window.t_start_s, window.audio)
                return False
            self.stats.windows += 1
            if self._prepare is not None:
                self._to_encode.put(window)
            self._to_asr.put(window)
        return True

    def _encode(self) -> None:
        try:
            while True:
                item = self._to_encode.get()
                try:
                    if isinstance(item, Window):
                        if item.index not in self._dropped_windows:  # dropped under load: never read
                            self._prepare(item)
                    else:
                        self._prepare_frames(item)
                except Exception as err:  # the engine will try again, and report, when it runs the window
                    log.debug("encoding ahead failed: %s", err)
        except Closed:
            pass

    def _transcribe(self, window: Window) -> TranscriptUpdate:
        if self.transcriber is None:
            text = WindowText(window.index, "")
            return TranscriptUpdate(text, (text,))
        if not window.has_audio:  # no microphone: nothing to hear; what was pending becomes final
            text = WindowText(window.index, "")
            return TranscriptUpdate(text, (*self.transcriber.finish().final, text))
        try:
            update = self.transcriber.push(window.index, window.t_start_s, window.t_end_s, window.audio)
            if update.error:  # a failed pass: the window's words may still come from the next ones
                self._asr_failed(window, update.error)
            else:
                self.stats.status["L"] = "ok"
            return update
        except Exception as err:  # ASR failing is a missing modality, not the end of the session
            self._asr_failed(window, str(err))
            text = WindowText(window.index, "")
            return TranscriptUpdate(text, (text,), 0.0, str(err))

    def _asr_failed(self, window: Window, err: str) -> None:
        self.stats.asr_errors += 1
        self.stats.status["L"] = f"ASR error: {err}"
        log.warning("ASR failed on window %d: %s", window.index, err)

    def _asr(self) -> None:
        try:
            while True:
                window = self._to_asr.get()
                update = self._transcribe(window)
                current_final = any(f.index == window.index for f in update.final)
                self._finals.extend(f for f in update.final if f.index != window.index)
                self._to_engine.put((window, update, current_final))
        except Closed:
            pass
        finally:
            if self.transcriber is not None:
                try:
                    rest = () if self._rest is None else self._rest  # set before the queue closed
                    update = self.transcriber.finish(*rest)
                    self._finals.extend(update.final)
                    if update.error:  # the last pass failed: the words stay as the pass before heard them
                        raise RuntimeError(update.error)
                except Exception as err:
                    self.stats.asr_errors += 1
                    log.warning("ASR failed at the end of the stream: %s", err)
            self._to_engine.close()

    def _engine(self) -> None:
        try:
            while True:
                window, update, current_final = self._to_engine.get()
                # earlier windows whose words this pass made final come first: a window heard without audio
                # makes the transcriber final all that is pending, and its own row must not overtake theirs
                self._finalize(done=False)
                self._provisional(window, update, current_final)
                self._finalize(done=False)
        except Closed:
            pass
        finally:
            self._finalize(done=True)
            self.readings.close()

    def _count_dropped(self) -> None:
        self.stats.dropped = self._to_asr.dropped + self._to_engine.dropped + self._lost + self._rows_lost

    def _lose(self, window: Window, err: Exception) -> None:
        """The model could not read this window: it is counted as dropped and gets no row; its words,
        when they become final, are let go (``_finalize``)."""
        self._lost += 1
        self._dropped_windows.add(window.index)
        if isinstance(err, WindowLost):
            log.warning("window %d lost: %s", window.index, err)
        else:
            self.stats.engine_errors += 1
            log.error("model failed on window %d: %s", window.index, err)
        self._count_dropped()

    def _provisional(self, window: Window, update: TranscriptUpdate, final: bool) -> None:
        own = update.current if update.current is not None else WindowText(window.index, "")
        text, read = own.text, self.context.text(window, own)
        try:
            result = self.engine.run(window, read)
        except Exception as err:
            self._lose(window, err)
            return
        latency = window_age_ms(time.monotonic(), window, getattr(self.source, "clock_origin", None))
        self.stats.latencies_ms.append(latency)
        if "V" in result.modalities:
            self.stats.status["V"] = "ok"
        elif window.face == "none":  # frames came, but no face was in view: the reading goes on without
            self.stats.status["V"] = "no face"
        self.stats.status["A"] = "ok" if "A" in result.modalities else self.stats.status["A"]
        self.stats.status["model"] = result.note or "ok"
        shown = _Shown(window, text, read, result, latency, update.ms)
        if not final:
            self._shown[window.index] = shown
        self._publish(shown, text, result, final)

    def _finalize(self, done: bool) -> None:
        """Turn the provisional readings whose words are now final into final readings."""
        waiting = []
        while self._finals:
            words = self._finals.popleft()
            shown = self._shown.pop(words.index, None)
            if shown is None:
                if not done and words.index not in self._dropped_windows:
                    waiting.append(words)  # its provisional reading is still on the way
                continue
            result = shown.result
            read = self.context.text(shown.window, words)
            if read != shown.read:  # the words it reads changed: text encoder and fusion again
                try:
                    result = self.engine.run(shown.window, read)
                except Exception as err:  # no row with the shown numbers next to other words: dropped
                    self._lose(shown.window, err)
                    continue
            self._publish(shown, words.text, result, True)
        self._finals.extendleft(reversed(waiting))
        if done:  # the stream ended: what never got final words keeps the words it was shown with
            for index in sorted(self._shown):
                shown = self._shown.pop(index)
                self._publish(shown, shown.text, shown.result, True)

    def _publish(self, shown: _Shown, text: str, result: EngineResult, final: bool) -> None:
        window = shown.window
        if final:
            self.stats.readings += 1
        self._count_dropped()
        self.readings.put(
            Reading(
                window=window.index,
                t_start_s=window.t_start_s,
                t_end_s=window.t_end_s,
                wall_time_utc=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                emotions=result.emotions,
                sentiment=result.sentiment,
                transcript=text,
                modalities=result.modalities,
                dropped_windows=self.stats.dropped,
                late_items=self.stats.late_items,
                latency_ms=shown.latency_ms,
                asr_ms=shown.asr_ms,
                model_ms=result.ms,
                final=final,
                face_box=window.face_box,
                face=window.face,
                agreement=result.agreement,
                notes=(result.note,) if result.note else (),
            )
        )

    # ---- control ------------------------------------------------------------------------------------
    def start(self) -> None:
        stages = [("capture", self._capture), ("asr", self._asr), ("engine", self._engine)]
        if self._prepare is not None:
            stages.append(("encode", self._encode))
        for name, target in stages:
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
