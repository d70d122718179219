"""Command-line entry points: ``merclip`` (config, prepare, train, eval, export, bench, report) and
``merclip-live`` (the monitor). Heavy imports happen inside the commands, so ``--help`` is instant and
the live path never imports torch unless it has to export a bundle first.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from merclip.config import Config, load_config, override, to_toml
from merclip.errors import MerClipError
from merclip.flags import _one_line
from merclip.live_parser import build_live_parser
from merclip.parsers import build_parser

log = logging.getLogger("merclip")


def _load(args) -> Config:
    return load_config(getattr(args, "config", None))


def cmd_config(args) -> int:
    print(to_toml(_load(args)), end="")
    return 0


def cmd_export(args) -> int:
    """`merclip export`, its bundle's precisions compared with fp32 on the sample clip's windows (stream/)."""
    from merclip.export.cli import cmd_export as export
    from merclip.stream.precision import SAMPLE

    return export(args, reference=SAMPLE)


def _not_built(name: str) -> Callable:
    def run(args) -> int:
        raise MerClipError(f"`merclip {name}` is not built yet in this version")

    return run


def _dispatch(name: str) -> Callable:
    """Commands live next to the code they drive; imported only when used."""
    from importlib import import_module

    table = {
        "config": lambda: cmd_config,
        "prepare": lambda: import_module("merclip.train.prepare").cmd_prepare,
        "train": lambda: import_module("merclip.train.training").cmd_train,
        "eval": lambda: import_module("merclip.train.evaluate").cmd_eval,
        "calibrate": lambda: import_module("merclip.train.calibrate").cmd_calibrate,
        "ablate": lambda: import_module("merclip.train.ablate").cmd_ablate,
        "export": lambda: cmd_export,
        "bench": lambda: import_module("merclip.train.bench.cli").cmd_bench,
        "report": lambda: import_module("merclip.stream.report").cmd_report,
        "cache": lambda: import_module("merclip.stream.cache").cmd_cache,
        "doctor": lambda: import_module("merclip.stream.doctor").cmd_doctor,
        "rescore": lambda: import_module("merclip.stream.cli").cmd_rescore,
        "serve": lambda: import_module("merclip.stream.serve_cli").cmd_serve,
    }
    try:
        return table[name]()
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("merclip"):
            return _not_built(name)
        if err.name and err.name.split(".")[0] in ("ray", "starlette"):
            raise MerClipError(f"`merclip {name}` needs Ray Serve: pip install 'merclip-live[serve]'") from None
        raise MerClipError(f"`merclip {name}` needs {err.name}: pip install 'merclip-live[train]'") from None


def _run(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except MerClipError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        # A file the user named that the system refused (name too long, permission, disk full, a file where
        # a folder should be...): the user's to fix, so one line. OSErrors without a file name still raise.
        if err.filename is None or isinstance(err, BrokenPipeError):
            raise
        log.info("details of the error below", exc_info=True)  # with -v: the traceback, for bug reports
        target = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
        print(f"error: {_one_line(target)}: {_one_line(err.strerror or err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(getattr(args, "verbose", False))
    return _run(lambda: _dispatch(args.command)(args))


def live_main(argv: Sequence[str] | None = None) -> int:
    args = build_live_parser().parse_args(argv)
    _setup_logging(args.verbose)

    def run() -> int:
        from merclip.stream.cli import cmd_live

        return cmd_live(args, _load(args))

    return _run(run)


__all__ = ["main", "live_main", "build_parser", "build_live_parser", "override"]


if __name__ == "__main__":
    sys.exit(main())
