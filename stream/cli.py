"""`merclip-live`: pick a source, a bundle and a transcriber, run the session, show and log readings."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.live import Live

from merclip.config import Config, override
from merclip.errors import MerClipError

from .csvlog import SessionLog
from .engine import BundleEngine
from .pipeline import LiveSession
from .sources import DeviceSource, FileSource, SyntheticSource, sample_path
from .transcriber import WhisperOptions, WhisperTranscriber
from .ui import UiState, banner_for, render, summary
from .windowing import Windower

log = logging.getLogger(__name__)


def apply_flags(args, cfg: Config) -> Config:
    weights = args.weights
    if args.model == "tiny" and weights is None:
        weights = "random"  # the built-in tiny model has no pretrained weights
    return override(
        cfg,
        model={"arch": args.model, "weights": weights},
        capture={
            "source": args.source or ("camera" if args.camera is not None else None),
            "camera": args.camera,
            "microphone": args.mic,
            "frames_per_window": args.frames,
            "allow_missing": True if args.allow_missing else None,
        },
        asr={"model": args.asr_model, "enabled": False if args.no_asr else None},
        runtime={"bundle": args.bundle, "providers": args.providers},
        ui={"enabled": False if args.no_ui else None},
        log={"path": args.log},
    )


def bundle_cache_dir(cfg: Config) -> Path:
    """A cache folder keyed by everything that shapes the exported bundle."""
    from merclip import __version__

    key = json.dumps([__version__, asdict(cfg.model), asdict(cfg.labels), asdict(cfg.export),
                      cfg.capture.frames_per_window, cfg.capture.window_s], sort_keys=True)  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    weights = Path(cfg.model.weights).stem if os.sep in cfg.model.weights else cfg.model.weights
    return Path(cfg.runtime.cache_dir).expanduser() / "bundles" / f"{cfg.model.arch}-{weights}-{digest}"


def resolve_bundle(cfg: Config, console: Console):
    from merclip.export.runtime import Bundle

    load = {"providers": cfg.runtime.providers, "threads": cfg.runtime.threads, "cache_dir": cfg.runtime.cache_dir}
    if cfg.runtime.bundle:
        return Bundle.load(cfg.runtime.bundle, **load)
    folder = bundle_cache_dir(cfg)
    if not (folder / "manifest.json").is_file():
        if importlib.util.find_spec("torch") is None:
            raise MerClipError(
                "no bundle given and torch is not installed to export one: pass --bundle DIR "
                "(from `merclip export --onnx`) or pip install 'merclip-live[train]'"
            )
        console.print(f"exporting {cfg.model.arch} ({cfg.model.weights} weights) to {folder} — once, then cached")
        folder.parent.mkdir(parents=True, exist_ok=True)
        export_in_subprocess(cfg, folder)
    return Bundle.load(folder, **load)


def export_in_subprocess(cfg: Config, folder: Path) -> None:
    """Run `merclip export` in its own process, so the live process never imports torch."""
    import subprocess
    import tempfile

    from merclip.config import to_toml

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(to_toml(cfg))
    try:
        cmd = [sys.executable, "-m", "merclip.cli", "export", "--onnx", "--config", f.name, "--out", str(folder)]
        run = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finally:
        os.unlink(f.name)
    if run.returncode != 0:
        lines = [line for line in run.stderr.strip().splitlines() if line.startswith("error: ")]
        message = lines[-1][len("error: ") :] if lines else run.stderr.strip()[-300:]
        if "could not download" in message:
            raise MerClipError(
                f"{cfg.model.arch} needs its pretrained weights, which could not be downloaded "
                "(offline?): pass --bundle DIR, local weights with --weights FILE, or run the "
                "offline demo model with --model tiny"
            )
        raise MerClipError(f"export failed: {message}")
    for line in run.stderr.splitlines():
        if line.startswith(("parity", "bundle")):
            log.info(line)


def open_source(cfg: Config, fast: bool, duration: float | None):
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
        )
        src.start()
        return src, f"camera {cfg.capture.camera}"
    return FileSource(spec, realtime=not fast, max_fps=cfg.capture.fps), Path(spec).name


def open_transcriber(cfg: Config, console: Console, explicit: bool):
    if not cfg.asr.enabled:
        return None
    opts = WhisperOptions(model=cfg.asr.model, device=cfg.asr.device, compute_type=cfg.asr.compute_type,
                          language=cfg.asr.language, vad=cfg.asr.vad, beam_size=cfg.asr.beam_size,
                          window_s=cfg.capture.window_s)  # fmt: skip
    try:
        return WhisperTranscriber(opts)
    except MerClipError as err:
        if explicit:
            raise
        console.print(f"[yellow]speech recognition off: {err}[/yellow]")
        return None


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


def cmd_live(args, cfg: Config) -> int:
    cfg = apply_flags(args, cfg)
    console = Console(stderr=True, soft_wrap=True)
    bundle = resolve_bundle(cfg, console)
    for line in bundle.provider_report:
        log.info("provider %s", line)
    apply_label_config(bundle, cfg)
    source, source_name = open_source(cfg, args.fast, args.duration)
    transcriber = open_transcriber(cfg, console, explicit=args.asr_model is not None)
    windower = Windower(cfg.capture.window_s, cfg.capture.hop_s, cfg.capture.frames_per_window,
                        bundle.sample_rate)  # fmt: skip
    session = LiveSession(source, windower, BundleEngine(bundle), transcriber, cfg.runtime.queue_windows,
                          cfg.asr.context_words, args.duration, backpressure=args.fast)  # fmt: skip
    csv_log = SessionLog(cfg.log.path, bundle.emotion_labels, bundle.sentiment_labels) if cfg.log.path else None
    state = UiState("MER-CLIP Live", bundle.describe(), source_name, bundle.emotion_labels, bundle.sentiment_labels,
                    bundle.emotion_threshold, banner_for(bundle), cfg.ui.smoothing)  # fmt: skip

    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    keys = KeyListener() if cfg.ui.enabled else None

    def on_reading(reading) -> None:
        if csv_log is not None:
            csv_log.write(reading)
        state.add(reading)
        if not cfg.ui.enabled:
            print(json.dumps(reading.to_json()), flush=True)

    def should_stop() -> bool:
        return stop.is_set() or (keys is not None and keys.pressed.is_set())

    try:
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
        if keys is not None:
            keys.restore()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(summary(session.stats, state, str(csv_log.path) if csv_log else None))
    if session.stats.error and session.stats.readings == 0:
        raise MerClipError(session.stats.error)
    return 0
