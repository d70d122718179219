"""`merclip bench` from the command line: flags and config -> the options record -> one part -> its report."""

from __future__ import annotations

import json
from pathlib import Path

from merclip.config import Config, load_config
from merclip.errors import MerClipError

from .options import BenchOptions
from .report import print_report, print_streams
from .run import run_bench
from .speech import speech_report
from .streams import serve_bench


def bench_frames(args, cfg: Config) -> int:
    """Frames per window timed: --frames, else as many as --checkpoint's model was trained on (as the monitor
    reads it), else the config's."""
    if args.frames:
        return args.frames
    if args.checkpoint:
        from merclip.model.checkpoint import read_checkpoint_config

        trained = read_checkpoint_config(args.checkpoint)[0].reading
        if trained is not None:
            return trained.frames_per_window
    return cfg.capture.frames_per_window


def cmd_bench(args) -> int:
    from rich.console import Console

    cfg = load_config(args.config)
    err = Console(stderr=True)

    def progress(step: str) -> None:
        err.print(f"[dim]{step}…[/dim]")

    if args.server:
        result = serve_bench(_serve_options(args, cfg), cfg, args.server, args.streams, progress)
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print_streams(result)
        return 0
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise MerClipError(f"checkpoint not found: {args.checkpoint}")
    opts = BenchOptions(
        model=args.model, checkpoint=args.checkpoint or "", frames=bench_frames(args, cfg),
        windows=args.windows,
        streams=max(args.streams), providers=args.providers or cfg.runtime.providers,
        precision=args.precision or cfg.runtime.precision,
        asr_model=args.asr_model or cfg.asr.model, asr_mode=args.asr_mode or cfg.asr.mode,
        text_context=args.text_context, torch_compare=not args.no_torch,
        int8=not args.no_int8, e2e=not args.no_e2e, soak_s=args.soak, soak_speech=args.speech if args.soak else None,
        cache_dir=_cache_dir(cfg),
    )  # fmt: skip
    if args.speech and not args.soak:
        err.print(f"[dim]speech paths on {args.speech}…[/dim]")
        print(json.dumps(speech_report(args.speech, opts.asr_model, args.transcript), indent=1))
        return 0
    result = run_bench(opts, progress=progress)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
    return 0


def _serve_options(args, cfg: Config) -> BenchOptions:
    """Many streams: the model and runtime of a local service, and windows per stream."""
    return BenchOptions(model=args.model, frames=args.frames or cfg.capture.frames_per_window, windows=args.windows,
                        providers=args.providers or cfg.runtime.providers,
                        precision=args.precision or cfg.runtime.precision, cache_dir=_cache_dir(cfg))  # fmt: skip


def _cache_dir(cfg: Config) -> str:
    return str(Path(cfg.runtime.cache_dir).expanduser() / "bench")
