"""`merclip-live` and `merclip rescore` from the command line: flags and config -> checks -> the session
(``live.run_live``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console

from merclip.config import Config, override, weights_flag
from merclip.errors import MerClipError

from .csvlog import check_log_target
from .live import LiveRequest, run_live
from .record import release_reserved, reserve_record_target
from .transcriber import check_model_name


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
    request = LiveRequest(fast=args.fast, duration_s=args.duration, frames=getattr(args, "frames", None),
                          explicit_asr=args.asr_model is not None)  # fmt: skip
    return _run_checked(cfg, console, request, getattr(args, "asr_model", None), getattr(args, "record", None))


def _run_checked(cfg: Config, console: Console, request: LiveRequest, asr_flag: str | None, record_flag: str | None
                 ) -> int:  # fmt: skip
    """Refuse a bad --log, --asr-model or --record before anything is loaded, then run the session."""
    if cfg.log.path:
        notice = log_folder_notice(cfg.log.path)  # before the check, which creates the folder
        check_log_target(cfg.log.path)  # a bad --log fails now, not after a first-run export
        if notice:
            console.print(notice, style="yellow", markup=False, highlight=False)
    if cfg.asr.enabled and asr_flag:
        check_model_name(cfg.asr.model)  # so does a misspelt --asr-model
    record = None
    if record_flag:
        # created now, exclusively: a folder that cannot take it is refused before the session (not a warning
        # once it runs), an existing recording is never overwritten, two sessions never share one file
        record = reserve_record_target(record_flag)
    try:
        return run_live(cfg, console, replace(request, record=record, record_asked=record_flag or ""))
    finally:
        if record is not None:
            release_reserved(record)  # only while still empty: an error before the first frame leaves nothing


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
    from merclip.config import load_config

    path = Path(args.recording).expanduser()
    if not path.is_file():
        raise MerClipError(f"recording not found: {path}")
    cfg = load_config(args.config)
    emotion = _label_list(args.labels, "--labels")
    sentiment = _label_list(args.sentiment_labels, "--sentiment-labels")
    cfg = override(
        cfg,
        labels={"emotion": emotion, "sentiment": sentiment},
        model=model_flags(args),
        capture={"source": str(path), "frames_per_window": args.frames},
        asr={"model": args.asr_model, "enabled": False if args.no_asr else None},
        runtime={"bundle": args.bundle, "providers": args.providers, "precision": args.precision},
        ui={"enabled": False},
        log={"path": args.log},
    )
    check_flag_conflicts(args, cfg.capture.source)
    request = LiveRequest(fast=True, exact=True, frames=args.frames, explicit_labels=bool(emotion or sentiment),
                          explicit_asr=args.asr_model is not None, quiet_json=not args.json)  # fmt: skip
    return _run_checked(cfg, Console(stderr=True, soft_wrap=True), request, args.asr_model, None)
