"""`merclip bench`: per-stage latency, real-time factor, torch-vs-ONNX and precision ratios, cross-stream
throughput and peak memory, on real sample windows (the packaged clip: a face and speech).

Models are random-weight instances of the real architectures (timing does not depend on the weights).
Every ratio is measured side by side in one run, because this machine is shared and noisy.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merclip.config import load_config

from .engine import BundleEngine
from .pipeline import LiveSession
from .sources import FileSource, sample_path
from .transcriber import WhisperOptions, WhisperTranscriber
from .windowing import Windower

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    model: str = "tiny"
    frames: int = 4
    windows: int = 5
    streams: int = 4
    providers: str = "auto"
    asr_model: str | None = None  # local CTranslate2 folder; None = build a random one of ``asr_size``
    asr_size: str = "tiny"
    text_context: int = 77
    torch_compare: bool = True
    int8: bool = True
    e2e: bool = True
    soak_s: float = 0.0
    cache_dir: str = "~/.cache/merclip/bench"


def stats_ms(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000
    return {
        "min": float(arr.min()),
        "median": float(np.median(arr)),
        "p95": float(np.percentile(arr, 95)),
        "n": len(arr),
    }


def timed(fn: Callable, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _bundle(opts: BenchOptions, precision: str, model):
    from merclip.export.onnx_export import ExportOptions, export_bundle
    from merclip.export.runtime import Bundle

    folder = Path(opts.cache_dir).expanduser() / f"{opts.model}-ctx{opts.text_context}-{precision}"
    if not (folder / "manifest.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        export_bundle(model, ExportOptions(out=folder, precision=precision, frames_per_window=opts.frames))
    return Bundle.load(folder, providers=opts.providers)


def _asr_dir(opts: BenchOptions) -> Path:
    if opts.asr_model:
        return Path(opts.asr_model)
    from .asr_build import build_random_whisper

    return build_random_whisper(Path(opts.cache_dir).expanduser() / f"whisper-{opts.asr_size}-random", opts.asr_size)


def sample_windows(frames: int) -> tuple[list, float]:
    """The packaged clip cut into windows, and the decode + windowing time per window."""
    start = time.perf_counter()
    windower = Windower(frames_per_window=frames)
    windows = []
    for item in FileSource(sample_path(), realtime=False):
        windows.extend(windower.push(item))
    windows.extend(windower.flush())
    return windows, (time.perf_counter() - start) / len(windows)


def _stage_times(bundle, windows, texts, repeats) -> dict[str, list[float]]:
    w = windows[1]
    images = bundle.preprocess_frames(w.frames)
    text = texts[1] or "ask not what your country can do for you"
    vision = bundle.encode_frames(images)[None]
    audio = bundle.encode_audio(w.audio)
    tfeat = bundle.encode_text([text])
    return {
        "preprocess": timed(lambda: bundle.preprocess_frames(w.frames), repeats),
        "vision": timed(lambda: bundle.encode_frames(images), repeats),
        "vision_per_frame": timed(lambda: bundle.encode_frames(images[:1]), repeats),
        "audio": timed(lambda: bundle.encode_audio(w.audio), repeats),
        "text": timed(lambda: bundle.encode_text([text]), repeats),
        "decoder": timed(lambda: bundle.fuse(vision, audio, tfeat), repeats),
    }


def _torch_times(model, bundle, windows, texts, repeats) -> dict[str, list[float]]:
    import torch
    from merclip.model import build_prompts
    from merclip.model.merclip import Features

    w = windows[1]
    images = torch.from_numpy(bundle.preprocess_frames(w.frames))
    wave = torch.from_numpy(w.audio)[None]
    ids = torch.from_numpy(bundle.tokenizer([texts[1] or "ask not what your country can do for you"]))
    model.eval()
    with torch.no_grad():
        prompts = build_prompts(model.cfg, bundle.tokenizer)
        q, e, s = model.label_embeddings(prompts)
        vis = model.encode_frames(images)[None]
        aud = model.encode_audio(wave)
        tok, valid, pooled = model.encode_text(ids)
        feats = Features(vis, aud, tok, valid, pooled, torch.ones(1, 3))

        def run(fn):
            def call():
                with torch.no_grad():
                    fn()

            return timed(call, repeats)

        return {
            "vision": run(lambda: model.encode_frames(images)),
            "vision_per_frame": run(lambda: model.encode_frames(images[:1])),
            "audio": run(lambda: model.encode_audio(wave)),
            "text": run(lambda: model.encode_text(ids)),
            "decoder": run(lambda: model.fuse(feats, q, e, s)),
        }


def _asr_times(asr_dir: Path, windows, repeats) -> tuple[dict[str, list[float]], list[str]]:
    out, texts = {}, []
    for name, padded in (("asr", False), ("asr_padded_30s", True)):
        asr = WhisperTranscriber(WhisperOptions(model=str(asr_dir), vad=False, pad_to_30s=padded, cpu_threads=0))
        samples = []
        for _ in range(max(1, repeats // len(windows) + 1)):
            for w in windows[:repeats]:
                result = asr.transcribe(w.audio)
                samples.append(result.ms / 1000)
                if not padded and len(texts) < len(windows):
                    texts.append(result.text)
        out[name] = samples[: max(repeats, len(windows))]
    return out, texts


def _throughput(bundle, windows, texts, streams: int, repeats: int) -> float:
    """Windows per second when ``streams`` windows are batched into one call per part."""
    batch = [windows[i % len(windows)] for i in range(streams)]
    images = np.concatenate([bundle.preprocess_frames(w.frames) for w in batch])
    waves = np.stack([w.audio for w in batch])
    words = [(texts[i % len(texts)] or "hello there") for i in range(streams)]

    def step():
        vis = bundle.encode_frames(images).reshape(streams, -1, bundle.embed_dim)
        aud = bundle.encode_audio(waves)
        txt = bundle.encode_text(words)
        bundle.fuse(vis, aud, txt, batch=streams)

    return streams / statistics.median(timed(step, repeats))


def _e2e(bundle_dir: Path, asr_dir: Path, frames: int) -> dict:
    """`merclip-live` on the sample clip at real-time pace, in a fresh process (as users run it; the bench
    process itself has torch's spinning worker threads from the eager timings)."""
    import subprocess

    cmd = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())",
           "--source", "sample", "--bundle", str(bundle_dir), "--asr-model", str(asr_dir), "--no-ui",
           "--frames", str(frames)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"end-to-end run failed: {run.stderr.strip()[-500:]}")
    readings = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    lat = [r["latency_ms"] / 1000 for r in readings]
    return {
        "latency": stats_ms(lat),
        "readings": len(readings),
        "dropped": readings[-1]["dropped_windows"],
        "asr_ms_median": float(np.median([r["asr_ms"] for r in readings])),
        "model_ms_median": float(np.median([r["model_ms"] for r in readings])),
        "command": "merclip-live " + " ".join(cmd[3:]),
    }


def soak(bundle, asr_dir: Path | None, seconds: float, frames: int, progress=lambda s: None) -> dict:
    """A long synthetic stream replayed as fast as possible: latency and memory per tenth of the run."""
    from .sources import SyntheticSource

    asr = WhisperTranscriber(WhisperOptions(model=str(asr_dir), vad=False)) if asr_dir else None
    session = LiveSession(
        SyntheticSource(duration_s=seconds, realtime=False, size=320),
        Windower(frames_per_window=frames),
        BundleEngine(bundle),
        asr,
        backpressure=True,
    )
    rows: list[tuple[float, float, float]] = []  # (t_end_s, latency_ms, rss_mb)

    def on_reading(r):
        rows.append((r.t_end_s, r.model_ms + r.asr_ms, current_rss_mb()))
        if len(rows) % 100 == 0:
            progress(f"soak: {r.t_end_s:.0f} of {seconds:.0f} s of stream")

    started = time.perf_counter()
    session.run(on_reading)
    wall = time.perf_counter() - started
    tenths = np.array_split(np.asarray(rows), 10)
    return {
        "stream_s": seconds, "wall_s": wall, "windows": len(rows), "dropped": session.stats.dropped,
        "processing_ms_median_per_tenth": [float(np.median(t[:, 1])) for t in tenths],
        "rss_mb_per_tenth": [float(t[-1, 2]) for t in tenths],
    }  # fmt: skip


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(opts: BenchOptions, progress: Callable[[str], None] = lambda s: None) -> dict:
    import torch
    from merclip.model import MerClipConfig, build_model

    torch.manual_seed(0)
    progress(f"building {opts.model} (random weights) and its bundles")
    model = build_model(MerClipConfig(arch=opts.model, text_context_length=opts.text_context))
    fp32 = _bundle(opts, "fp32", model)
    windows, decode_s = sample_windows(opts.frames)
    progress("timing speech recognition (unpadded vs padded to 30 s)")
    asr_dir = _asr_dir(opts)
    asr, texts = _asr_times(asr_dir, windows, opts.windows)
    progress("timing onnxruntime stages")
    stages = {"decode": [decode_s]} | asr | _stage_times(fp32, windows, texts, opts.windows)
    result: dict = {"machine": machine(), "options": opts.__dict__, "providers": fp32.provider_report}
    ratios: dict = {}
    if opts.torch_compare:
        progress("timing torch eager stages")
        eager = _torch_times(model, fp32, windows, texts, opts.windows)
        for key, samples in eager.items():
            stages[f"torch_{key}"] = samples
            ratios[f"onnx_vs_torch_{key}"] = statistics.median(samples) / statistics.median(stages[key])
    if opts.int8:
        progress("timing int8 stages")
        for key, samples in _stage_times(_bundle(opts, "int8", model), windows, texts, opts.windows).items():
            if key != "preprocess":
                stages[f"int8_{key}"] = samples
                ratios[f"int8_speedup_{key}"] = statistics.median(stages[key]) / statistics.median(samples)
    ratios["asr_unpadded_speedup"] = statistics.median(stages["asr_padded_30s"]) / statistics.median(stages["asr"])
    serial = ["decode", "asr", "preprocess", "vision", "audio", "text", "decoder"]
    total = sum(statistics.median(stages[k]) for k in serial)
    stages["total"] = [total]
    result["latency_ms"] = {k: stats_ms(v) for k, v in stages.items()}
    result["real_time_factor"] = total / 2.0
    progress(f"batching {opts.streams} streams")
    result["windows_per_s"] = {"1": 1 / total, str(opts.streams): _throughput(fp32, windows, texts, opts.streams,
                                                                              opts.windows)}  # fmt: skip
    if opts.e2e:
        progress("end to end on the sample clip at real-time pace")
        result["end_to_end"] = _e2e(fp32.folder, asr_dir, opts.frames)
    result["ratios"] = ratios
    if opts.soak_s:
        progress(f"soak: {opts.soak_s:.0f} s of synthetic stream, as fast as possible")
        result["soak"] = soak(fp32, asr_dir, opts.soak_s, opts.frames, progress)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]merclip bench[/bold] — {result['machine']}; providers: {', '.join(result['providers'])}")
    ratios = Table(title="ratios (same run)")
    ratios.add_column("ratio")
    ratios.add_column("x", justify="right")
    for key, value in result["ratios"].items():
        ratios.add_row(key, f"{value:.2f}")
    console.print(ratios)
    table = Table(
        title=f"latency per window (ms), {result['options']['frames']} frames, model {result['options']['model']}"
    )
    for col in ("stage", "min", "median", "p95"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for stage, s in result["latency_ms"].items():
        table.add_row(stage, f"{s['min']:.1f}", f"{s['median']:.1f}", f"{s['p95']:.1f}")
    console.print(table)
    console.print(
        f"real-time factor {result['real_time_factor']:.3f} (serial processing time / 2-s window); "
        f"windows/s: {result['windows_per_s']}; peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    if "end_to_end" in result:
        e2e = result["end_to_end"]
        console.print(
            f"end to end (sample clip, real-time pace): window-end-to-reading latency median "
            f"{e2e['latency']['median']:.0f} ms, p95 {e2e['latency']['p95']:.0f} ms, "
            f"{e2e['readings']} readings, {e2e['dropped']} dropped"
        )
    if "soak" in result:
        s = result["soak"]
        console.print(
            f"soak: {s['stream_s']:.0f} s of stream in {s['wall_s']:.0f} s, {s['windows']} windows; processing "
            f"ms per tenth {[round(x) for x in s['processing_ms_median_per_tenth']]}; RSS MB per tenth "
            f"{[round(x) for x in s['rss_mb_per_tenth']]}"
        )


def cmd_bench(args) -> int:
    from rich.console import Console

    cfg = load_config(args.config)
    opts = BenchOptions(
        model=args.model, frames=args.frames or cfg.capture.frames_per_window, windows=args.windows,
        streams=args.streams, providers=args.providers or cfg.runtime.providers, asr_model=args.asr_model,
        asr_size=args.asr_size, text_context=args.text_context, torch_compare=not args.no_torch,
        int8=not args.no_int8, e2e=not args.no_e2e, soak_s=args.soak,
        cache_dir=str(Path(cfg.runtime.cache_dir).expanduser() / "bench"),
    )  # fmt: skip
    err = Console(stderr=True)
    result = run_bench(opts, progress=lambda s: err.print(f"[dim]{s}…[/dim]"))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
    return 0
