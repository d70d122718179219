"""The live monitor's session from start to summary: the model, the devices, the source, the words, the
session (``session.build_session``), and where its readings go: the terminal UI, the CSV log, JSON lines on
stdout, a recording. Ctrl-C, SIGTERM and `q` end it; the summary says what it went without.
`merclip-live` and `merclip rescore` run it (``cli.py`` parses their flags)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from merclip.model.reading import ReadingSetting
from rich.console import Console
from rich.live import Live

from merclip.config import Config
from merclip.errors import MerClipError

from .csvlog import SessionLog
from .pipeline import LiveSession
from .readout import Baseline, ReadoutRule, interpret
from .record import Recorder, RecordingSource
from .session import (
    SessionOptions,
    build_session,
    face_notice,
    open_engine,
    open_source,
    open_transcriber,
    session_reading,
    start_capture,
)
from .ui import UiState, banner_for, render, summary

log = logging.getLogger(__name__)

# Exit code when the session ran but not one reading could be made (a model failing on every window, a source
# with nothing to read); 2 stays the code of errors a user can fix, 0 a session with readings.
NO_READING_EXIT = 1


@dataclass(frozen=True)
class LiveRequest:
    """What the command line asks of a session beyond config.toml."""

    fast: bool = False  # --fast: replay as fast as possible, never dropping a window
    duration_s: float | None = None  # --duration
    frames: int | None = None  # --frames: fewer frames per window than the bundle's model was trained on
    exact: bool = False  # replay every frame at its recorded time (rescore)
    explicit_labels: bool = False  # labels given on the command line (rescore): fixed-label bundles refuse
    explicit_asr: bool = False  # --asr-model given: a Whisper model that cannot load is an error
    quiet_json: bool = False  # no JSON lines on stdout without the UI (rescore without --json)
    record: Path | None = None  # --record: the file reserved for this session's recording
    record_asked: str = ""  # --record as given (another name is taken when that file exists)


@dataclass
class _Opened:
    """A session ready to start: what runs the model, how it reads, and what it reads from."""

    bundle: object  # a Bundle, or a service's BundleInfo (``merclip serve``)
    engine: object
    reading: ReadingSetting  # how the session cuts and reads
    source: object
    source_name: str
    recorder: Recorder | None
    session: LiveSession


def _open(cfg: Config, console: Console, request: LiveRequest) -> _Opened:
    """The model, the reading (notices said), the source, a recording and Whisper, in the order that says
    a user's mistake soonest: a refusing service, then a missing device, then everything slow."""
    served = bool(cfg.runtime.server)
    if served:  # a service that refuses this client (token, CA, name, TLS) is said before a device is opened
        bundle, engine = open_engine(cfg, console, request.explicit_labels)
    if cfg.capture.source == "camera":
        # devices before models: a missing camera or microphone is said in about a second, before any export
        # or download (with --allow-missing the session goes on and says what is missing when it starts)
        from .devices import check_devices

        cap = cfg.capture
        check_devices(cap.camera, cap.microphone, cap.width, cap.height, cap.fps, cap.allow_missing,
                      cap.mic_latency_s)  # fmt: skip
    if not served:
        bundle, engine = open_engine(cfg, console, request.explicit_labels)
    for line in bundle.provider_report:
        log.info("provider %s", line)
    plan = getattr(bundle, "plan", None)  # None: the model runs at a `merclip serve` service (its own choice)
    if plan is not None:
        log.info("model runs on %s", bundle.runtime_line())
    reading, notices = session_reading(cfg.asked("capture"), bundle.reading, request.frames)
    for line in notices:
        console.print(line, style="yellow", markup=False, highlight=False)
    source, source_name = open_source(cfg, request.fast, request.duration_s, reading.window_s, exact=request.exact)
    if getattr(source, "still", False):  # one picture, held for one window: overlapping windows would read it twice
        reading = replace(reading, hop_s=reading.window_s)
    recorder = None
    if request.record:
        recorder = Recorder(request.record)
        source = RecordingSource(source, recorder)
        kept = Path(request.record_asked).expanduser()
        beside = f" ({kept} exists and is kept)" if request.record != kept else ""
        console.print(f"REC: recording camera frames and microphone audio (face and voice) to {request.record}{beside}",
                      style="bold red", markup=False, highlight=False)  # fmt: skip
    transcriber = open_transcriber(cfg, console, explicit=request.explicit_asr, window_s=reading.window_s)
    notice = face_notice(cfg.capture.face, bundle.face)
    if notice:
        console.print(notice, style="yellow", markup=False, highlight=False)
    opts = SessionOptions(reading, bundle.face, bundle.sample_rate, cfg.runtime.queue_windows, cfg.asr.context_words,
                          request.duration_s, backpressure=request.fast, overlap=cfg.runtime.overlap)  # fmt: skip
    session = build_session(source, engine, transcriber, opts)
    return _Opened(bundle, engine, reading, source, source_name, recorder, session)


def run_live(cfg: Config, console: Console, request: LiveRequest) -> int:
    """Run one session to its end; the exit code: 0, ``NO_READING_EXIT``, or 128 + the signal that ended it."""
    opened = _open(cfg, console, request)
    bundle, reading, session, recorder = opened.bundle, opened.reading, opened.session, opened.recorder
    csv_log = None
    if cfg.log.path:
        csv_log = SessionLog(cfg.log.path, bundle.emotion_labels, bundle.sentiment_labels, reading,
                             on_failure=lambda text: console.print(text, style="red", markup=False),
                             adjusted=cfg.ui.baseline_s > 0)  # fmt: skip
    json_out = JsonLines()
    title = "MER-CLIP Live  ● REC" if recorder is not None else "MER-CLIP Live"  # recording is always visible
    plan = getattr(bundle, "plan", None)
    shown = bundle.describe() + (f" · {plan.name} {plan.precision}" if plan is not None else "")  # what runs it
    state = UiState(title, shown, opened.source_name, bundle.emotion_labels, bundle.sentiment_labels,
                    bundle.emotion_threshold, banner_for(bundle), cfg.ui.smoothing_s)  # fmt: skip
    rule = ReadoutRule(bundle.multi_label, bundle.emotion_threshold, cfg.labels.neutral, cfg.ui.uncertain_below)
    baseline = Baseline(cfg.ui.baseline_s) if cfg.ui.baseline_s > 0 else None

    stop = threading.Event()
    signalled: list[int] = []  # the signal that ended the session: its exit code is 128 + it, as a shell's

    def on_signal(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        signalled.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    keys = KeyListener() if cfg.ui.enabled else None

    def on_reading(reading) -> None:
        reading = interpret(reading, rule, baseline)
        if csv_log is not None and reading.final:  # the CSV holds each window once, with its final words
            csv_log.write(reading)
        state.add(reading)
        if not cfg.ui.enabled and not request.quiet_json:
            json_out.write(reading)

    def should_stop() -> bool:
        return stop.is_set() or (keys is not None and keys.pressed.is_set())

    try:
        start_capture(opened.source, console)  # last: the transcriber, model and log are ready for its first item
        console.print(f"each reading: {reading.describe()}", style="dim", markup=False, highlight=False)
        if cfg.ui.enabled:
            with Live(render(state, session.stats), console=Console(), refresh_per_second=cfg.ui.refresh_hz,
                      transient=False) as live:  # fmt: skip
                session.run(
                    on_reading,
                    on_tick=lambda: live.update(render(state, session.stats)),
                    tick_s=1.0 / cfg.ui.refresh_hz,
                    should_stop=should_stop,
                )
                live.update(render(state, session.stats))
        else:
            session.run(on_reading, should_stop=should_stop)
    finally:
        if csv_log is not None:
            csv_log.close()
        if recorder is not None:
            recorder.close()
        if keys is not None:
            keys.restore()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return _ending(console, opened, csv_log, state, signalled, should_stop)


def _ending(
    console: Console, opened: _Opened, csv_log, state: UiState, signalled: list[int], stopped: Callable[[], bool]
) -> int:
    """The summary and the exit code of a session that has ended (``stopped()``: by the user)."""
    source, engine, recorder, session = opened.source, opened.engine, opened.recorder, opened.session
    notes = session_notes(source, csv_log)
    if signalled:
        notes.insert(0, f"interrupted by {'Ctrl-C' if signalled[0] == signal.SIGINT else 'SIGTERM'}")
    served = getattr(engine, "batch_sizes", None)
    if served:  # the operator's view of the service's batching, from this stream's side
        from .remote import mean_batch

        notes.append(f"served by {engine.url}: {len(served)} model calls, in batches of {mean_batch(served):.1f} "
                     "windows on average")  # fmt: skip
    if recorder is not None:
        notes.append(recording_note(recorder))
    console.print(summary(session.stats, state, str(csv_log.path) if csv_log else None, notes), markup=False)
    if signalled:  # every row is flushed (above); the exit code says the session did not end by itself
        return 128 + signalled[0]
    stats = session.stats
    if stats.readings == 0:
        if stats.error and not stats.engine_errors:  # the source failed: the user's to fix (exit 2)
            raise MerClipError(stats.error)
        if not (stopped() and stats.windows == 0):  # not merely stopped before the first window closed
            console.print(f"error: no reading could be made: {no_reading_reason(stats)}", markup=False)
            return NO_READING_EXIT
    return 0


class KeyListener:
    """Sets ``pressed`` when the user types q (only when stdin is a terminal)."""

    def __init__(self):
        self.pressed = threading.Event()
        self._old = None
        if sys.stdin.isatty():
            import termios
            import tty

            self._old = termios.tcgetattr(sys.stdin)
            tty.setcbreak(sys.stdin.fileno())
            threading.Thread(target=self._read, daemon=True, name="keys").start()

    def _read(self) -> None:
        while not self.pressed.is_set():
            ch = sys.stdin.read(1)
            if ch in ("q", "Q", ""):
                self.pressed.set()

    def restore(self) -> None:
        if self._old is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self._old)


class JsonLines:
    """``--no-ui``: one JSON object per reading on stdout. A reader that goes away (``... | head -1``) ends
    the printing, not the session: stdout is pointed at /dev/null (as the Python docs advise for SIGPIPE)
    and the CSV log goes on, every row."""

    def __init__(self):
        self.closed = False

    def write(self, reading) -> None:
        if self.closed:
            return
        try:
            print(json.dumps(reading.to_json()), flush=True)
        except (BrokenPipeError, ValueError):  # ValueError: stdout closed from inside this process
            self.closed = True
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
            log.info("stdout closed by its reader: JSON output stopped, the session goes on")


def recording_note(recorder: Recorder) -> str:
    if recorder.failure:
        return recorder.failure
    if not recorder.frames and not recorder.samples:
        return "nothing was recorded (no frames or audio came)"
    return (f"recorded {recorder.frames} frames and {recorder.samples / 16000:.1f} s of audio to {recorder.path} "
            f"(re-score: merclip rescore {recorder.path} --bundle DIR)")  # fmt: skip


def session_notes(source, csv_log) -> list[str]:
    """What the session went without, for the summary: missing devices or tracks, devices that stopped
    mid-session, skipped damaged packets, a log that stopped."""
    notes = [f"missing: {text}" for text in getattr(source, "missing", ())]
    outages = getattr(source, "outage_notes", None)
    notes += outages() if outages is not None else []
    skipped = getattr(source, "skipped_packets", 0)
    if skipped:
        notes.append(f"{skipped} damaged packet{'s' if skipped != 1 else ''} skipped")
    if csv_log is not None and csv_log.failure:
        notes.append(f"the log stopped after {csv_log.rows} rows: {csv_log.failure}")
    return notes


def no_reading_reason(stats) -> str:
    if stats.windows == 0:
        return "the source ended before one window was complete"
    if stats.engine_errors:
        return f"the model failed ({stats.engine_errors} errors in {stats.windows} windows; see the messages above)"
    return f"none of the {stats.windows} windows had a face, a voice or words to read"
