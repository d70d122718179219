"""A session put together: the model (a bundle here or a `merclip serve` service), how it reads, the source,
the transcriber, and the windower and pipeline that join them (``build_session``). `merclip-live` and
`merclip rescore` (``live.py``), `merclip bench`'s soak and its many served streams build theirs here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from merclip.model.face import FaceSetting, FaceTracker
from merclip.model.reading import ReadingSetting, ignored_asks
from rich.console import Console

from merclip.config import Config
from merclip.errors import MerClipError

from .bundles import apply_label_config, resolve_bundle
from .capture import camera_name
from .device_source import DeviceSource
from .engine import BundleEngine, Engine
from .pipeline import LiveSession
from .sources import FileSource, SyntheticSource, sample_path
from .transcriber import WhisperOptions, open_speech
from .windowing import Windower


@dataclass(frozen=True)
class SessionOptions:
    """How a session cuts and paces its stream; what it reads (the source) and what reads it (the engine)
    are given beside these."""

    reading: ReadingSetting = ReadingSetting()  # window, hop, frames and words of each reading
    face: FaceSetting | None = None  # crop each frame to the face as this says; None: whole frames
    sample_rate: int = 16000  # the model's audio rate
    queue_windows: int = 2  # windows waiting for ASR before the oldest is dropped
    context_words: int = 8  # a per-window transcriber's words of context
    duration_s: float | None = None  # stop after this much stream (None: the source's end)
    backpressure: bool = False  # replaying as fast as possible: wait instead of dropping a window
    overlap: bool = True  # the encoders run beside ASR (stream/pipeline.py)


def build_session(source, engine: Engine, transcriber, opts: SessionOptions) -> LiveSession:
    """The windower for ``opts.reading`` and the pipeline from ``source`` through ``transcriber`` and
    ``engine`` to readings (``LiveSession.run``)."""
    reading = opts.reading
    face = FaceTracker(opts.face) if opts.face is not None and opts.face.on else None
    windower = Windower(reading.window_s, reading.hop_s, reading.frames_per_window, opts.sample_rate, face=face)
    return LiveSession(source, windower, engine, transcriber, opts.queue_windows, opts.context_words,
                       opts.duration_s, backpressure=opts.backpressure, overlap=opts.overlap,
                       reading=reading)  # fmt: skip


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
        if cfg.asked("labels").keys() & {"emotion", "sentiment"}:  # flags too: they reach cfg as asked
            console.print("notice: labels are the service's (set them where `merclip serve` runs)",
                          style="yellow", markup=False, highlight=False)  # fmt: skip
        return engine.info, engine
    bundle = resolve_bundle(cfg, console)
    if explicit_labels and bundle.manifest["labels"]["fixed"]:
        raise MerClipError(f"bundle {bundle.folder} has fixed labels (exported without its label encoder): "
                           "--labels needs a bundle that can embed new ones")  # fmt: skip
    apply_label_config(bundle, cfg)
    return bundle, BundleEngine(bundle)


def session_reading(
    asked: Mapping[str, object], trained: ReadingSetting, frames_flag: int | None
) -> tuple[ReadingSetting, list[str]]:
    """How this session reads: as the bundle's model was trained to be read (window, hop, context, frames),
    and one notice per ``[capture]`` value a user asked for otherwise (``Config.asked``), which is ignored.
    Only the frame count may be changed, on the command line (``--frames``: fewer frames to keep a slow CPU
    real-time), and that is said."""
    skip = ("frames_per_window",) if frames_flag is not None else ()
    notices = ignored_asks(asked, trained, "this bundle's model", skip)
    if frames_flag is not None and frames_flag != trained.frames_per_window:
        notices.append(f"notice: reading {frames_flag} frames per window (--frames); this bundle's model was "
                       f"trained on {trained.frames_per_window}")  # fmt: skip
        trained = replace(trained, frames_per_window=frames_flag)
    return trained, notices


def face_notice(asked: str, face: FaceSetting) -> str:
    """One line when ``capture.face`` asks for other pictures than the bundle's model was trained on: the
    bundle wins, since a model run on pictures unlike its training data reads them wrongly."""
    if asked == "auto" or asked == face.mode:
        return ""
    return (f"notice: capture.face = {asked!r} ignored: this bundle's model was trained on "
            f"{face.describe()}, so that is what it is shown")  # fmt: skip


def open_source(cfg: Config, fast: bool, duration: float | None, window_s: float, exact: bool = False):
    """(source, its name). ``window_s``: the session's window (its bundle's), for which a still image is held."""
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
    return (FileSource(spec, realtime=not fast, max_fps=cfg.capture.fps, still_s=window_s, exact=exact),
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


def open_transcriber(cfg: Config, console: Console, explicit: bool, window_s: float):
    """The streaming transcriber (stream/speech.py over faster-whisper), or None when speech is off;
    ``window_s``: the session's window (its bundle's)."""
    if not cfg.asr.enabled:
        return None
    opts = WhisperOptions.from_config(cfg.asr, window_s)
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
