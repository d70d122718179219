"""The bench's own bundles: a model exported once per precision and frame count into the bench cache, its
precisions compared with fp32 on the sample clip into its manifest, as `merclip export` does."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

from merclip.model.reading import ReadingSetting
from merclip.stream.cache import discard_damaged

from .options import BenchOptions


def export_bench_bundle(opts: BenchOptions, precision: str, model) -> Path:
    """The bench's own bundle of ``model`` at ``precision`` (exported once, cached), its precisions compared
    with fp32 on the sample clip's windows into its manifest, as `merclip export` does."""
    from merclip.export.cli import measure_at_export
    from merclip.export.onnx_export import ExportOptions, export_bundle
    from merclip.export.runtime import Bundle
    from merclip.stream.precision import SAMPLE
    from rich.console import Console

    face = "-face" if model.cfg.face != "off" else ""
    name = f"{opts.model}-ctx{opts.text_context}"
    if opts.checkpoint:  # a bundle per checkpoint file (its path, size and time say which weights)
        stat = Path(opts.checkpoint).stat()
        key = f"{Path(opts.checkpoint).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        name = f"{Path(opts.checkpoint).stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    folder = Path(opts.cache_dir).expanduser() / f"{name}-f{opts.frames}-{precision}{face}"
    if notice := discard_damaged(folder):  # the bench's own cache: rebuilt, as merclip-live does
        print(notice, file=sys.stderr)
    if not (folder / "manifest.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        # read as the checkpoint was trained to be read (random weights: each window's own words), at --frames
        reading = replace(model.cfg.reading or ReadingSetting(), frames_per_window=opts.frames)
        export_bundle(model, ExportOptions(out=folder, precision=precision, reading=reading))
        bundle = Bundle.load(folder, providers="cpu", verify=False)
        measure_at_export(model, folder, bundle, SAMPLE, Console(stderr=True, quiet=True))
    return folder


def bench_bundle(opts: BenchOptions, precision: str, model, providers: str | None = None, run_at: str = "auto"):
    from merclip.export.runtime import Bundle

    folder = export_bench_bundle(opts, precision, model)
    # checked just above, or just exported
    return Bundle.load(folder, providers=providers or opts.providers, precision=run_at, verify=False)
