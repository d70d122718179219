"""`merclip-live`: pick a source, a bundle and a transcriber, run the session, show and log readings."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from merclip.model.face import FaceSetting, FaceTracker
from merclip.model.reading import ReadingSetting
from rich.console import Console
from rich.live import Live

from merclip.config import Config, override, weights_flag
from merclip.errors import MerClipError

from .cache import discard_damaged, partial_dir, prune_cached_bundles, remove_bundle, sweep_leftovers, touch_bundle
from .capture import camera_name
from .csvlog import SessionLog, check_log_target
from .engine import BundleEngine
from .pipeline import LiveSession
from .readout import Baseline, ReadoutRule, interpret
from .record import Recorder, RecordingSource, release_reserved, reserve_record_target
from .sources import DeviceSource, FileSource, SyntheticSource, sample_path
from .transcriber import WhisperOptions, check_model_name, open_speech
from .ui import UiState, banner_for, render, summary
from .windowing import Windower

log = logging.getLogger(__name__)

# Exit code when the session ran but not one reading could be made (a model failing on every window, a source
# with nothing to read); 2 stays the code of errors a user can fix, 0 a session with readings.
NO_READING_EXIT = 1


def model_flags(args) -> dict:
    """``--model``/``--weights`` as the ``[model]`` overrides (merclip-live, rescore, serve)."""
    return {"arch": args.model, "weights": weights_flag(args.model, args.weights)}


def apply_flags(args, cfg: Config) -> Config:
    return override(
        cfg,
        model=model_flags(args),
        capture={
            "source": args.source or ("camera" if args.camera is not None else None),
            "camera": args.camera,
            "microphone": args.mic,
            "frames_per_window": args.frames,
            "allow_missing": True if args.allow_missing else None,
        },
        asr={"model": args.asr_model, "enabled": False if args.no_asr else None},
        runtime={
            "bundle": args.bundle,
            "providers": args.providers,
            "server": getattr(args, "server", None),
            "server_ca": getattr(args, "server_ca", None),
            "token_file": getattr(args, "token_file", None),
            "client_cert": getattr(args, "client_cert", None),
            "client_key": getattr(args, "client_key", None),
            "precision": getattr(args, "precision", None),
        },  # fmt: skip
        ui={"enabled": False if args.no_ui else None, "baseline_s": getattr(args, "baseline", None)},
        log={"path": args.log},
    )


def bundle_cache_dir(cfg: Config) -> Path:
    """A cache folder keyed by everything that shapes the exported bundle."""
    from merclip import __version__

    key = json.dumps([__version__, asdict(cfg.model), asdict(cfg.labels), asdict(cfg.export),
                      cfg.capture.frames_per_window, cfg.capture.window_s, cfg.capture.face,
                      cfg.capture.face_margin, cfg.capture.hop_s, cfg.capture.context], sort_keys=True)  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    weights = Path(cfg.model.weights).stem if os.sep in cfg.model.weights else cfg.model.weights
    return Path(cfg.runtime.cache_dir).expanduser() / "bundles" / f"{cfg.model.arch}-{weights}-{digest}"


def resolve_bundle(cfg: Config, console: Console):
    if cfg.runtime.precision == "int8" and cfg.export.precision == "fp32":
        cfg = override(cfg, export={"precision": "int8"})  # int8 runs int8 graphs: the cached bundle is exported so
    rt = cfg.runtime
    load = {"providers": rt.providers, "threads": rt.threads, "cache_dir": rt.cache_dir, "precision": rt.precision}
    if cfg.runtime.bundle:
        return _load_bundle(cfg.runtime.bundle, load, console)
    folder = bundle_cache_dir(cfg)
    if notice := discard_damaged(folder):  # the monitor's own copy: rebuilt, not "re-export" for the user
        console.print(notice)
    if not (folder / "manifest.json").is_file():
        if importlib.util.find_spec("torch") is None:
            raise MerClipError(
                "no bundle given and torch is not installed to export one: pass --bundle DIR "
                "(from `merclip export --onnx`) or pip install 'merclip-live[train]'"
            )
        check_weights_reachable(cfg)  # offline without the weights: said now, not after the export's retries
        console.print(f"exporting {cfg.model.arch} ({cfg.model.weights} weights) to {folder} — once, then cached")
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MerClipError(f"cannot create the bundle cache {folder.parent}: {err.strerror or err}") from None
        export_in_subprocess(cfg, folder)
        # the cache is bounded: least recently used bundles beyond cache.MAX_CACHED_BUNDLES go
        for gone in prune_cached_bundles(cfg.runtime.cache_dir, protect=(folder,)):
            log.info("bundle cache: removed %s (least recently used)", gone.name)
    touch_bundle(folder)
    return _load_bundle(folder, load, console, verify=False)  # checked by discard_damaged, or just exported


def _load_bundle(folder: str | Path, load: dict, console: Console, verify: bool = True):
    """Load with the runtime chosen for this CPU; a bundle never measured at bf16 is measured first where bf16
    could be chosen (once, cached: stream/precision.py). Its notices (fallbacks) are printed once."""
    from merclip.export.runtime import Bundle

    from .precision import check_at_first_load

    def say(text: str) -> None:
        console.print(text, style="yellow" if text.startswith("notice:") else "dim", markup=False, highlight=False)

    check_at_first_load(folder, load["providers"], load["precision"], load["threads"], load["cache_dir"], say)
    bundle = Bundle.load(folder, verify=verify, **load)
    for notice in bundle.notices:
        say(notice)
    return bundle


def weights_error(cfg: Config) -> MerClipError:
    return MerClipError(
        f"{cfg.model.arch} needs its pretrained weights, which could not be downloaded "
        "(offline?): pass --bundle DIR, local weights with --weights FILE, or run the "
        "offline demo model with --model tiny"
    )


def check_weights_reachable(cfg: Config) -> None:
    """Raise at once when the model's pretrained weights are neither cached nor downloadable from here."""
    from .weights import cached_weights, check_weights_file, needs_download, online

    check_weights_file(cfg.model.weights)
    if not needs_download(cfg.model.arch, cfg.model.weights):
        return
    folder, _, repo = cached_weights(cfg.model.arch, cfg.model.weights)
    if folder is not None or not repo:  # cached, or a tag this check does not know: the export decides
        return
    reachable, why = online()
    if not reachable:
        log.info("weights %s not cached and %s", repo, why)
        raise weights_error(cfg)


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the child killed when this process dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: nothing is imported after the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _stop_child(proc) -> None:
    """End the export child and everything it started (its own process group)."""
    import subprocess

    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def export_in_subprocess(cfg: Config, folder: Path) -> None:
    """Run `merclip export` in its own process, so the live process never imports torch.

    The export writes into a hidden work folder (``bundles/.partial-<pid>-…``, its config file inside) that
    is renamed to ``folder`` only after the child succeeded, parity check included: a visible bundle folder is
    always complete. The child runs in its own process group and dies with this process: Ctrl-C or SIGTERM
    during the export stop it at once (then the work folder is removed and "interrupted" is reported), and
    on Linux a SIGKILL of this process kills it too (its work folder is swept by the next export)."""
    import subprocess

    from merclip.config import to_toml

    sweep_leftovers(cfg.runtime.cache_dir)
    work = partial_dir(folder)
    proc, rc, stderr = None, 1, ""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        config_file = work / "config.toml"
        config_file.write_text(to_toml(cfg), encoding="utf-8")
        built = work / "bundle"
        cmd = [sys.executable, "-m", "merclip.cli", "export", "--onnx", "--config", str(config_file),
               "--out", str(built)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=_die_with_parent())  # fmt: skip
        _, stderr = proc.communicate()
        rc = proc.returncode
        if rc == 0 and not (built / "manifest.json").is_file():
            rc, stderr = 1, "error: the export wrote no bundle"
        if rc == 0:
            _install(built, folder)
    finally:
        if proc is not None:
            _stop_child(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(work, ignore_errors=True)
    if rc != 0:
        lines = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
        message = lines[-1][len("error: ") :] if lines else stderr.strip()[-300:]
        if "could not download" in message or "could not get pretrained weights" in message:
            raise weights_error(cfg)
        raise MerClipError(f"export failed: {message}")
    for line in stderr.splitlines():
        if line.startswith(("parity", "bundle")):
            log.info(line)


def _install(built: Path, folder: Path) -> None:
    """Move a finished bundle into place (one rename); another process may have finished the same first."""
    try:
        os.rename(built, folder)
    except OSError:
        if (folder / "manifest.json").is_file():
            return  # the same bundle, exported meanwhile by another session: use that one
        remove_bundle(folder)  # an incomplete folder (from an older version): never loaded, replaced
        os.rename(built, folder)


def open_source(cfg: Config, fast: bool, duration: float | None, exact: bool = False):
    spec = cfg.capture.source
    if spec == "sample":
        return FileSource(sample_path(), realtime=not fast, max_fps=cfg.capture.fps), "sample clip"
    if spec == "synthetic":
        return SyntheticSource(duration_s=duration or 20.0, realtime=not fast, fps=cfg.capture.fps), "synthetic"
    if spec == "camera":
        src = DeviceSource(
            camera=cfg.capture.camera,
            microphone=cfg.capture.microphone,
            width=cfg.capture.width,
            height=cfg.capture.height,
            fps=cfg.capture.fps,
            allow_missing=cfg.capture.allow_missing,
            mic_latency_s=cfg.capture.mic_latency_s,
        )  # not started here: cmd_live starts it last (start_capture)
        return src, camera_name(cfg.capture.camera)
    # a still image given as the source is held for one window (one vision-only reading)
    return (FileSource(spec, realtime=not fast, max_fps=cfg.capture.fps, still_s=cfg.capture.window_s, exact=exact),
            Path(spec).name)  # fmt: skip


def start_capture(source, console: Console) -> None:
    """Start a device source (a file or synthetic source starts when read) and say what it goes without.

    Called once everything else is loaded: a device started before a slow Whisper or model load fills its
    queue meanwhile, drops what comes next, and the first windows shown are as old as the load took."""
    start = getattr(source, "start", None)
    if start is not None:
        start()
    for text in getattr(source, "missing", ()):  # a partial session says so at once
        console.print(f"missing: {text}", style="yellow", markup=False, highlight=False)


def open_transcriber(cfg: Config, console: Console, explicit: bool):
    """The streaming transcriber (stream/speech.py over faster-whisper), or None when speech is off."""
    if not cfg.asr.enabled:
        return None
    opts = WhisperOptions.from_config(cfg.asr, cfg.capture.window_s)
    try:
        transcriber, notice = open_speech(opts, cfg.asr.context_words)
    except MerClipError as err:
        if explicit:
            raise
        console.print(f"[yellow]speech recognition off: {err}[/yellow]")
        return None
    if notice:
        console.print(f"[yellow]{notice}[/yellow]")
    return transcriber


def apply_label_config(bundle, cfg: Config) -> None:
    """Labels the user set in config.toml replace the bundle's (embedded through its label graph); untouched
    defaults leave a bundle trained on other labels (e.g. MELD's seven) as it is."""
    from merclip.config import LabelsSection

    if bundle.manifest["labels"]["fixed"]:
        return
    default = LabelsSection()
    bundle.set_labels(
        emotion=list(cfg.labels.emotion) if cfg.labels.emotion != default.emotion else None,
        sentiment=list(cfg.labels.sentiment) if cfg.labels.sentiment != default.sentiment else None,
    )


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


def open_engine(cfg: Config, console: Console, explicit_labels: bool = False):
    """(what the model is, the engine that runs it): a bundle run here, or a `merclip serve` service
    (``runtime.server``). The first has what the session needs to know: labels, threshold, face setting,
    window length."""
    if cfg.runtime.server:
        from .remote import ClientAuth, RemoteEngine, Transport

        auth = ClientAuth.from_config(cfg.runtime)
        if Transport(cfg.runtime.server).in_clear():
            console.print(f"notice: {cfg.runtime.server} is plain HTTP to another machine: faces, voices"
                          f"{' and the token' if auth.token else ''} cross the network in clear (use https://)",
                          style="yellow", markup=False, highlight=False)  # fmt: skip
        engine = RemoteEngine.connect(cfg.runtime.server, auth)  # unreachable, refused: one line, exit 2
        from merclip.config import LabelsSection

        default = LabelsSection()
        if explicit_labels or (cfg.labels.emotion, cfg.labels.sentiment) != (default.emotion, default.sentiment):
            console.print("notice: labels are the service's (set them where `merclip serve` runs)",
                          style="yellow", markup=False, highlight=False)  # fmt: skip
        return engine.info, engine
    bundle = resolve_bundle(cfg, console)
    if explicit_labels and bundle.manifest["labels"]["fixed"]:
        raise MerClipError(f"bundle {bundle.folder} has fixed labels (exported without its label encoder): "
                           "--labels needs a bundle that can embed new ones")  # fmt: skip
    apply_label_config(bundle, cfg)
    return bundle, BundleEngine(bundle)


def face_notice(asked: str, face: FaceSetting) -> str:
    """One line when ``capture.face`` asks for other pictures than the bundle's model was trained on: the
    bundle wins, since a model run on pictures unlike its training data reads them wrongly."""
    if asked == "auto" or asked == face.mode:
        return ""
    return (f"notice: capture.face = {asked!r} ignored: this bundle's model was trained on "
            f"{face.describe()}, so that is what it is shown")  # fmt: skip


def session_reading(capture, trained: ReadingSetting, frames_flag: int | None) -> tuple[ReadingSetting, list[str]]:
    """How this session reads: as the bundle's model was trained to be read (window, hop, context, frames),
    and one notice per ``capture`` value that asks otherwise and is ignored. Only the frame count may be
    changed, on the command line (``--frames``: fewer frames to keep a slow CPU real-time), and that is said."""
    default, notices = type(capture)(), []
    for key in ("window_s", "hop_s", "context", "frames_per_window"):
        asked = getattr(capture, key)
        if key == "frames_per_window" and frames_flag is not None:
            continue
        if asked not in ("auto", getattr(default, key), getattr(trained, key)):
            notices.append(f"notice: capture.{key} = {asked!r} ignored: this bundle's model was trained to be "
                           f"read with {key} = {getattr(trained, key)!r}, so that is how it reads")  # fmt: skip
    if frames_flag is not None and frames_flag != trained.frames_per_window:
        notices.append(f"notice: reading {frames_flag} frames per window (--frames); this bundle's model was "
                       f"trained on {trained.frames_per_window}")  # fmt: skip
        trained = replace(trained, frames_per_window=frames_flag)
    return trained, notices


def check_flag_conflicts(args, source: str | None = None) -> None:
    """Refuse two flags that ask for different things, naming both: a silent winner would run a session the
    user did not ask for (merclip-live, rescore, serve). ``source``: the session's resolved source."""

    def given(name: str) -> bool:
        return getattr(args, name, None) is not None

    if given("camera") and given("source") and args.source != "camera":
        raise MerClipError(f"--camera and --source {args.source} conflict: --camera reads a camera (it means "
                           "--source camera); give one of them")  # fmt: skip
    if given("server"):
        for flag in ("bundle", "model", "weights"):
            if given(flag):
                raise MerClipError(f"--server and --{flag} conflict: with --server the service's model runs (it is "
                                   "chosen where `merclip serve` runs); give one of them")  # fmt: skip
    for flag in ("model", "weights"):
        if given("bundle") and given(flag):
            raise MerClipError(f"--bundle and --{flag} conflict: --bundle runs that exported bundle, --{flag} "
                               "chooses a model to export; give one of them")  # fmt: skip
    if given("mic") and source is not None and source != "camera":
        raise MerClipError(f"--mic and --source {source} conflict: --mic picks the microphone of a camera "
                           "session, this source brings its own sound; drop --mic or use --source camera")  # fmt: skip


def log_folder_notice(path: str) -> str:
    """A --log path that looks like a file but not a .csv is taken as a folder: say so before one appears."""
    target = Path(path).expanduser()
    if target.suffix.lower() in ("", ".csv") or target.is_dir():
        return ""
    return (f"notice: the log path {path} does not end in .csv, so it is a folder: each session's log goes "
            "inside it as a new timestamped .csv (give NAME.csv for one file)")  # fmt: skip


def cmd_live(args, cfg: Config) -> int:
    cfg = apply_flags(args, cfg)
    console = Console(stderr=True, soft_wrap=True)
    if getattr(args, "list_devices", False):
        from .devices import format_listing

        asked = cfg.capture.camera if args.camera is not None else None
        print(format_listing(asked, cfg.capture.microphone, cfg.capture.mic_latency_s))
        return 0
    check_flag_conflicts(args, cfg.capture.source)
    for flag in ("server_ca", "token_file", "client_cert", "client_key"):
        if getattr(args, flag, None) is not None and not cfg.runtime.server:
            name = "--" + flag.replace("_", "-")
            raise MerClipError(f"{name} is for a service's client: give --server URL with it (or drop {name})")
    if cfg.log.path:
        notice = log_folder_notice(cfg.log.path)  # before the check, which creates the folder
        check_log_target(cfg.log.path)  # a bad --log fails now, not after a first-run export
        if notice:
            console.print(notice, style="yellow", markup=False, highlight=False)
    if cfg.asr.enabled and getattr(args, "asr_model", None):
        check_model_name(cfg.asr.model)  # so does a misspelt --asr-model
    record = None
    if getattr(args, "record", None):
        # created now, exclusively: a folder that cannot take it is refused before the session (not a warning
        # once it runs), an existing recording is never overwritten, two sessions never share one file
        record = reserve_record_target(args.record)
    try:
        return _run_live(args, cfg, console, record)
    finally:
        if record is not None:
            release_reserved(record)  # only while still empty: an error before the first frame leaves nothing


def _run_live(args, cfg: Config, console: Console, record: Path | None) -> int:
    served = bool(cfg.runtime.server)
    if served:  # a service that refuses this client (token, CA, name, TLS) is said before a device is opened
        bundle, engine = open_engine(cfg, console, getattr(args, "explicit_labels", False))
    if cfg.capture.source == "camera":
        # devices before models: a missing camera or microphone is said in about a second, before any export
        # or download (with --allow-missing the session goes on and says what is missing when it starts)
        from .devices import check_devices

        cap = cfg.capture
        check_devices(cap.camera, cap.microphone, cap.width, cap.height, cap.fps, cap.allow_missing,
                      cap.mic_latency_s)  # fmt: skip
    if not served:
        bundle, engine = open_engine(cfg, console, getattr(args, "explicit_labels", False))
    for line in bundle.provider_report:
        log.info("provider %s", line)
    plan = getattr(bundle, "plan", None)  # None: the model runs at a `merclip serve` service (its own choice)
    if plan is not None:
        log.info("model runs on %s", bundle.runtime_line())
    reading, notices = session_reading(cfg.capture, bundle.reading, getattr(args, "frames", None))
    for line in notices:
        console.print(line, style="yellow", markup=False, highlight=False)
    source, source_name = open_source(cfg, args.fast, args.duration, exact=getattr(args, "exact", False))
    recorder = None
    if record:
        recorder = Recorder(record)
        source = RecordingSource(source, recorder)
        kept = Path(args.record).expanduser()
        beside = f" ({kept} exists and is kept)" if record != kept else ""
        console.print(f"REC: recording camera frames and microphone audio (face and voice) to {record}{beside}",
                      style="bold red", markup=False, highlight=False)  # fmt: skip
    transcriber = open_transcriber(cfg, console, explicit=args.asr_model is not None)
    notice = face_notice(cfg.capture.face, bundle.face)
    if notice:
        console.print(notice, style="yellow", markup=False, highlight=False)
    windower = Windower(reading.window_s, reading.hop_s, reading.frames_per_window, bundle.sample_rate,
                        face=FaceTracker(bundle.face) if bundle.face.on else None)  # fmt: skip
    session = LiveSession(source, windower, engine, transcriber, cfg.runtime.queue_windows,
                          cfg.asr.context_words, args.duration, backpressure=args.fast,
                          overlap=cfg.runtime.overlap, reading=reading)  # fmt: skip
    csv_log = None
    if cfg.log.path:
        csv_log = SessionLog(cfg.log.path, bundle.emotion_labels, bundle.sentiment_labels,
                             on_failure=lambda text: console.print(text, style="red", markup=False),
                             adjusted=cfg.ui.baseline_s > 0)  # fmt: skip
    json_out = JsonLines()
    title = "MER-CLIP Live  ● REC" if recorder is not None else "MER-CLIP Live"  # recording is always visible
    shown = bundle.describe() + (f" · {plan.name} {plan.precision}" if plan is not None else "")  # what runs it
    state = UiState(title, shown, source_name, bundle.emotion_labels, bundle.sentiment_labels,
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
        if not cfg.ui.enabled and not getattr(args, "quiet_json", False):
            json_out.write(reading)

    def should_stop() -> bool:
        return stop.is_set() or (keys is not None and keys.pressed.is_set())

    try:
        start_capture(source, console)  # last: the transcriber, model and log are ready for its first item
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
        if not (should_stop() and stats.windows == 0):  # not merely stopped before the first window closed
            console.print(f"error: no reading could be made: {no_reading_reason(stats)}", markup=False)
            return NO_READING_EXIT
    return 0


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


def _label_list(text: str | None, flag: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    labels = tuple(part.strip() for part in text.split(","))
    if len(labels) < 2 or any(not label for label in labels):
        raise MerClipError(f"{flag} takes two or more comma-separated labels, e.g. happy,sad,calm")
    return labels


def cmd_rescore(args) -> int:
    """`merclip rescore FILE.mkv`: replay a `--record` recording window-exact (every frame at its recorded
    time, the audio sample for sample), as fast as the CPU allows and without dropping a window, through
    another bundle or labels: the same session, a new CSV (put side by side with `merclip report A B`)."""
    from types import SimpleNamespace

    from merclip.config import load_config

    path = Path(args.recording).expanduser()
    if not path.is_file():
        raise MerClipError(f"recording not found: {path}")
    cfg = load_config(args.config)
    emotion = _label_list(args.labels, "--labels")
    sentiment = _label_list(args.sentiment_labels, "--sentiment-labels")
    cfg = override(cfg, labels={"emotion": emotion, "sentiment": sentiment})
    live_args = SimpleNamespace(
        model=args.model, weights=args.weights, source=str(path), camera=None, mic=None, frames=None,
        allow_missing=False, asr_model=args.asr_model, no_asr=args.no_asr, bundle=args.bundle,
        providers=args.providers, precision=args.precision, no_ui=True, log=args.log, duration=None, fast=True,
        record=None, list_devices=False, exact=True, quiet_json=not args.json,
        explicit_labels=bool(emotion or sentiment),
    )  # fmt: skip
    return cmd_live(live_args, cfg)
