"""`merclip bench`: per-stage latency, real-time factor, torch-vs-ONNX and precision ratios, cross-stream
throughput, peak memory, and the speech path's accuracy and word-to-screen delay, on real sample windows
(the packaged clip: a face and JFK's speech).

CLIP models are random-weight instances of the real architectures (timing does not depend on the
weights); Whisper is the real tiny.en the monitor runs by default, so its words can be scored. Every ratio
is measured side by side in one run, because this machine is shared and noisy. It lives in ``train/``
because it needs torch (eager comparison, export) and drives the live pipeline as a client; ``stream/``
stays torch-free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from merclip.export.backends import openvino_version
from merclip.export.cpu import this_cpu
from merclip.model.reading import ReadingSetting
from merclip.stream.cache import discard_damaged
from merclip.stream.engine import BundleEngine
from merclip.stream.pipeline import LiveSession
from merclip.stream.sources import SAMPLE_RATE, FileSource, SyntheticSource, media_error, sample_path
from merclip.stream.speech import normalize
from merclip.stream.transcriber import WhisperOptions, load_whisper, open_speech
from merclip.stream.windowing import Windower, cut_windows

from merclip.config import load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    model: str = "tiny"
    checkpoint: str = ""  # a trained checkpoint instead of random weights (its arch, face setting, its bf16 gate)
    frames: int = 4
    windows: int = 5
    streams: int = 4
    providers: str = "auto"
    precision: str = "auto"  # the default runtime's (runtime.precision); fp32, bf16 and int8 are timed beside it
    asr_model: str = "tiny.en"  # size name or local CTranslate2 folder (tiny.en: the bundled real model)
    asr_mode: str = "stream"
    text_context: int = 77
    torch_compare: bool = True
    int8: bool = True
    e2e: bool = True
    soak_s: float = 0.0
    soak_speech: str | None = None  # a recording looped as the soak's audio (else synthetic tones)
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


def _export(opts: BenchOptions, precision: str, model) -> Path:
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


def _bundle(opts: BenchOptions, precision: str, model, providers: str | None = None, run_at: str = "auto"):
    from merclip.export.runtime import Bundle

    folder = _export(opts, precision, model)
    # checked just above, or just exported
    return Bundle.load(folder, providers=providers or opts.providers, precision=run_at, verify=False)


# What is said in the packaged sample clip (JFK, from the openai/whisper repository's test clip).
SAMPLE_TRANSCRIPT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(" ".join(map(normalize, reference.split())), " ".join(map(normalize, hypothesis.split()))))


class TimedFace:
    """A face tracker that records how long each frame took (detect + follow + crop)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.seconds: list[float] = []

    def __call__(self, rgb, t_s: float):
        start = time.perf_counter()
        out = self.tracker(rgb, t_s)
        self.seconds.append(time.perf_counter() - start)
        return out


def sample_windows(frames: int, face=None) -> tuple[list, float, list[float]]:
    """The packaged clip cut into windows (faces cropped as ``face``, a ``FaceSetting``, says), the decode +
    windowing time per window, and the face stage's time per frame."""
    from merclip.model.face import FaceTracker

    timed_face = TimedFace(FaceTracker(face)) if face is not None and face.on else None
    start = time.perf_counter()
    windows = list(
        cut_windows(FileSource(sample_path(), realtime=False), Windower(frames_per_window=frames, face=timed_face))
    )
    face_s = timed_face.seconds if timed_face else []
    return windows, (time.perf_counter() - start - sum(face_s)) / len(windows), face_s


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


def _asr_times(opts: BenchOptions, windows, repeats) -> tuple[dict[str, list[float]], list[str], dict]:
    """Each speech path over the whole clip, window by window as live: per-window ms, words, WER."""
    out, texts, wer = {}, [], {}
    for name, mode in (("asr", "stream"), ("asr_window_unpadded", "window-unpadded")):
        samples = []
        for _ in range(max(1, -(-repeats // len(windows)))):
            transcriber, _ = open_speech(WhisperOptions(model=opts.asr_model, mode=mode))
            finals: dict[int, str] = {}
            for w in windows:
                update = transcriber.push(w.index, w.t_start_s, w.t_end_s, w.audio)
                samples.append(update.ms / 1000)
                finals.update({f.index: f.text for f in update.final})
            finals.update({f.index: f.text for f in transcriber.finish().final})
        out[name] = samples
        words = [finals.get(w.index, "") for w in windows]
        wer[mode] = word_error_rate(SAMPLE_TRANSCRIPT, " ".join(words))
        if mode == "stream":
            texts = words
    return out, texts, wer


def read_speech(path: str) -> np.ndarray:
    """Any audio/video file as 16-kHz mono float32; an unreadable one is a one-line error."""
    import av
    from faster_whisper import decode_audio

    from merclip.errors import MerClipError

    if not Path(path).is_file():
        what = "is a folder, not a recording" if Path(path).is_dir() else "not found"
        raise MerClipError(f"speech file {what}: {path}")
    try:
        # decode_audio on a file without sound fails with "tuple index out of range": ask first
        with av.open(str(path)) as box:
            if not box.streams.audio:
                raise MerClipError(f"{path} has no audio track: pass a recording with speech")
        return decode_audio(path, SAMPLE_RATE)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise MerClipError(f"cannot read speech from {path}: {media_error(err)}") from None
    except MerClipError:
        raise
    except Exception as err:
        raise MerClipError(f"cannot read speech from {path}: {type(err).__name__}: {err}") from None


def speech_report(path: str, asr_model: str, transcript: str | None = None, window_s: float = 2.0) -> dict:
    """Each speech path over any recording, window by window as live, scored against the same model's
    offline transcript of the whole file (and against ``transcript`` when given)."""
    audio = read_speech(path)
    n = int(window_s * SAMPLE_RATE)
    model, source, _ = load_whisper(WhisperOptions(model=asr_model))
    # temperature 0 only: the default fallback samples, so the reference would change from run to run
    segments, _ = model.transcribe(audio, language="en", temperature=0.0)
    offline = " ".join(seg.text.strip() for seg in segments)
    out: dict = {"file": str(path), "seconds": len(audio) / SAMPLE_RATE, "model": source, "offline_text": offline}
    for mode in ("stream", "window-unpadded"):
        transcriber, _ = open_speech(WhisperOptions(model=asr_model, mode=mode), model=model)
        finals, shown, ms = {}, [], []
        for k in range(-(-len(audio) // n)):
            chunk = np.pad(audio[k * n : (k + 1) * n], (0, max(0, (k + 1) * n - len(audio))))
            update = transcriber.push(k, k * window_s, (k + 1) * window_s, chunk)
            ms.append(update.ms / 1000)
            shown.append(update.current.text)
            finals.update({f.index: f.text for f in update.final})
        finals.update({f.index: f.text for f in transcriber.finish().final})
        text = " ".join(finals[k] for k in sorted(finals))
        out[mode] = {"text": text, "wer_vs_offline": word_error_rate(offline, text),
                     "provisional_wer_vs_offline": word_error_rate(offline, " ".join(shown)),
                     "ms_per_window": stats_ms(ms)}  # fmt: skip
        if transcript:
            out[mode]["wer_vs_transcript"] = word_error_rate(transcript, text)
    if transcript:
        out["offline_wer_vs_transcript"] = word_error_rate(transcript, offline)
    return out


def reference_words(asr_model: str) -> list[tuple[float, float, str]]:
    """(start, end, word) of the sample clip from one offline pass over the whole file (the same model)."""
    from faster_whisper import decode_audio

    model, _, _ = load_whisper(WhisperOptions(model=asr_model))
    segments, _ = model.transcribe(
        decode_audio(str(sample_path())), language="en", word_timestamps=True, temperature=0.0
    )
    return [(w.start, w.end, normalize(w.word)) for s in segments for w in s.words or []]


def word_delays(readings: list[dict], reference: list[tuple[float, float, str]]) -> list[float]:
    """Seconds from the end of each spoken word to the first reading that shows it, on the stream clock.

    A reading reaches the screen ``latency_ms`` after its window's end was captured (provisional readings) or, for a
    final one, when it was printed; at real-time pace the stream and wall clocks run together, anchored
    on the first reading."""
    import datetime as dt

    def wall(r):
        return dt.datetime.fromisoformat(r["wall_time_utc"]).timestamp()

    first = readings[0]
    anchor = first["t_end_s"] + first["latency_ms"] / 1000 - wall(first)
    delays = []
    for start, end, word in reference:
        shown = [
            wall(r) + anchor
            for r in readings
            if r["t_start_s"] <= end and start < r["t_end_s"] and word in map(normalize, r["transcript"].split())
        ]
        if shown:
            delays.append(min(shown) - end)
    return delays


def _throughput(bundle, windows, texts, streams: int, repeats: int) -> float:
    """Windows per second of the model alone (encoders + fusion; frames already preprocessed, no decode, ASR
    or face stage) when ``streams`` windows are batched into one call per part (1: one window per call)."""
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


def _e2e(bundle_dir: Path, opts: BenchOptions, overlap: bool = True, precision: str | None = None) -> dict:
    """`merclip-live` on the sample clip at real-time pace, in a fresh process (as users run it; the bench
    process itself has torch's spinning worker threads from the eager timings)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f'[asr]\nmodel = "{opts.asr_model}"\nmode = "{opts.asr_mode}"\n'
            f'[runtime]\noverlap = {str(overlap).lower()}\nproviders = "{opts.providers}"\n'
            f'precision = "{precision or opts.precision}"\n'
        )
        cmd = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())",
               "--source", "sample", "--bundle", str(bundle_dir), "--config", str(config), "--no-ui",
               "--frames", str(opts.frames)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"end-to-end run failed: {run.stderr.strip()[-500:]}")
    readings = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    shown = [r for r in readings if not r.get("final")] or readings  # the first reading of each window
    finals = [r for r in readings if r.get("final", True)]
    delays = word_delays(readings, reference_words(opts.asr_model))
    return {
        "latency": stats_ms([r["latency_ms"] / 1000 for r in shown]),
        "readings": len(finals),
        "dropped": readings[-1]["dropped_windows"],
        "asr_ms_median": float(np.median([r["asr_ms"] for r in shown])),
        "model_ms_median": float(np.median([r["model_ms"] for r in shown])),
        "wer": word_error_rate(SAMPLE_TRANSCRIPT, " ".join(r["transcript"] for r in finals)),
        "word_to_screen_s": {
            "median": float(np.median(delays)) if delays else float("nan"),
            "p95": float(np.percentile(delays, 95)) if delays else float("nan"),
            "max": float(max(delays)) if delays else float("nan"),
            "words": len(delays),
        },
        "command": "merclip-live " + " ".join(cmd[3:]),
        "asr": {"model": opts.asr_model, "mode": opts.asr_mode},
        "overlap": overlap,
    }


class LoopedSpeechSource(SyntheticSource):
    """Synthetic frames with ``speech`` (16 kHz) looped as the audio: the streaming recogniser hears words
    all run long (the synthetic tones are skipped by its VAD, so they never fill its buffer)."""

    def __init__(self, speech: np.ndarray, duration_s: float, size: int):
        super().__init__(duration_s=duration_s, realtime=False, size=size)
        self.speech = speech

    def block(self, index: int) -> np.ndarray:
        n = int(round(self.block_s * SAMPLE_RATE))
        return np.take(self.speech, np.arange(index * n, (index + 1) * n), mode="wrap").astype(np.float32)


def soak(
    bundle,
    asr_model: str | None,
    seconds: float,
    frames: int,
    progress=lambda s: None,
    speech: np.ndarray | None = None,
) -> dict:
    """A long stream replayed as fast as possible: latency, memory and words per tenth of the run.
    Synthetic frames; the audio is synthetic tones, or ``speech`` (16 kHz) looped."""
    asr = open_speech(WhisperOptions(model=asr_model))[0] if asr_model else None
    source = (
        SyntheticSource(duration_s=seconds, realtime=False, size=320)
        if speech is None
        else LoopedSpeechSource(speech, seconds, size=320)
    )
    session = LiveSession(
        source,
        Windower(frames_per_window=frames),
        BundleEngine(bundle),
        asr,
        backpressure=True,
        reading=bundle.reading,
    )
    rows: list[tuple[float, float, float]] = []  # (t_end_s, latency_ms, rss_mb)
    words: dict[int, int] = {}  # window -> words in its final transcript
    seen: set[int] = set()

    def on_reading(r):
        if r.final or asr is None:
            words[r.window] = len(r.transcript.split())
        if r.final and r.window in seen:
            return  # each window once: its first reading
        seen.add(r.window)
        rows.append((r.t_end_s, r.model_ms + r.asr_ms, current_rss_mb()))
        if len(rows) % 100 == 0:
            progress(f"soak: {r.t_end_s:.0f} of {seconds:.0f} s of stream")

    started = time.perf_counter()
    session.run(on_reading)
    wall = time.perf_counter() - started
    tenths = np.array_split(np.asarray(rows), 10)
    word_tenths = np.array_split(np.asarray([words[w] for w in sorted(words)]), 10)
    return {
        "stream_s": seconds, "wall_s": wall, "windows": len(rows), "dropped": session.stats.dropped,
        "audio": "synthetic tones" if speech is None else f"speech looped ({len(speech) / SAMPLE_RATE:.1f} s)",
        "processing_ms_median_per_tenth": [float(np.median(t[:, 1])) for t in tenths],
        "rss_mb_per_tenth": [float(t[-1, 2]) for t in tenths],
        "words_per_tenth": [int(t.sum()) for t in word_tenths],
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

    speech = read_speech(opts.soak_speech) if opts.soak_s and opts.soak_speech else None  # bad file: said first
    torch.manual_seed(0)
    if opts.checkpoint:
        from merclip.model import load_checkpoint

        progress(f"loading {opts.checkpoint} and exporting its bundles")
        model, _ = load_checkpoint(opts.checkpoint)  # its own arch and face setting
        model = model.eval()
    else:
        progress(f"building {opts.model} (random weights) and its bundles")
        # the bench times what a user runs: a bundle that crops the face (model/face.py)
        model = build_model(MerClipConfig(arch=opts.model, text_context_length=opts.text_context, face="haar"))
    default = _bundle(opts, "fp32", model, run_at=opts.precision)  # what merclip-live runs for this bundle
    runs_fp32 = (default.plan.backend, default.plan.precision) == ("onnxruntime", "fp32")
    reference = default if runs_fp32 else _bundle(opts, "fp32", model, _ort(opts.providers), "fp32")
    windows, decode_s, face_s = sample_windows(opts.frames, default.face)
    progress(f"timing speech recognition ({opts.asr_model}: streaming vs each window unpadded)")
    asr, texts, asr_wer = _asr_times(opts, windows, opts.windows)
    progress(f"timing the default runtime's stages ({default.plan.name} {default.plan.precision})")
    stages = {"decode": [decode_s], "face": face_s} | asr | _stage_times(default, windows, texts, opts.windows)
    # per frame, as measured; the share of each window of it is frames x median
    result_face = {"windows_with_face": sum(w.face == "found" for w in windows), "windows": len(windows)}
    result: dict = {"machine": machine(), "options": opts.__dict__, "providers": default.provider_report,
                    "runtime": _runtime(default), "agreement": default.manifest.get("agreement", {}),
                    "asr_wer": asr_wer, "face": result_face}  # fmt: skip
    ratios: dict = {}
    fp32_stages = stages
    if not runs_fp32:
        progress("timing onnxruntime fp32 stages (the reference)")
        fp32_stages = _stage_times(reference, windows, texts, opts.windows)
        _compare(stages, ratios, fp32_stages, "ort_fp32", "default_speedup", reference=True)
        if default.plan.precision == "bf16":
            ratios |= {k.replace("default_", "bf16_"): v for k, v in ratios.items() if k.startswith("default_")}
    if opts.torch_compare:
        progress("timing torch eager stages")
        eager = _torch_times(model, reference, windows, texts, opts.windows)
        for key, samples in eager.items():
            stages[f"torch_{key}"] = samples
            ratios[f"onnx_vs_torch_{key}"] = statistics.median(samples) / statistics.median(fp32_stages[key])
    bf16 = None
    if default.plan.precision != "bf16" and this_cpu().bf16 and openvino_version() is not None:
        progress("timing OpenVINO bf16 stages (AMX / AVX-512-BF16)")
        bf16 = _bundle(opts, "fp32", model, "openvino", "bf16")
        _compare(stages, ratios, _stage_times(bf16, windows, texts, opts.windows), "bf16", "bf16_speedup",
                 fp32_stages)  # fmt: skip
        result["bf16_agreement"] = agreement(reference, bf16, windows, texts)
    if opts.int8:
        progress("timing int8 stages")
        int8 = _bundle(opts, "int8", model, _ort(opts.providers))
        result["int8_agreement"] = agreement(reference, int8, windows, texts)
        result["agreement"] = result["agreement"] | int8.manifest.get("agreement", {})
        _compare(stages, ratios, _stage_times(int8, windows, texts, opts.windows), "int8", "int8_speedup",
                 fp32_stages)  # fmt: skip
    ratios["asr_stream_cost_vs_unpadded"] = statistics.median(stages["asr"]) / statistics.median(
        stages["asr_window_unpadded"]
    )
    serial = ["decode", "asr", "preprocess", "vision", "audio", "text", "decoder"]
    face_window = opts.frames * statistics.median(face_s) if face_s else 0.0
    total = sum(statistics.median(stages[k]) for k in serial) + face_window
    stages["total"] = [total]
    # ASR and the encoders run side by side (stream/pipeline.py): a window waits for the slower of the two
    # the face crops are made as frames arrive (during the window), like their vision encoding
    encoders = sum(statistics.median(stages[k]) for k in ("preprocess", "vision", "audio"))
    stages["total_overlapped"] = [
        statistics.median(stages["decode"]) + max(statistics.median(stages["asr"]), encoders + face_window)
        + statistics.median(stages["text"]) + statistics.median(stages["decoder"])
    ]  # fmt: skip
    result["latency_ms"] = {k: stats_ms(v) for k, v in stages.items() if v}
    result["real_time_factor"] = total / 2.0
    progress(f"batching {opts.streams} streams")
    # Two different things, kept apart: the whole pipeline for one stream (serial sum of the stage medians),
    # and the model alone (encoders + fusion on preprocessed windows) one window per call vs N batched. The
    # batching gain is only model-vs-model; pipeline-vs-batched-model would read as a 100x gain that isn't.
    result["pipeline_windows_per_s"] = 1 / total
    result["model_windows_per_s"] = {
        str(n): _throughput(default, windows, texts, n, opts.windows) for n in sorted({1, opts.streams})
    }
    if opts.e2e:
        progress("end to end on the sample clip at real-time pace")
        result["end_to_end"] = _e2e(default.folder, opts)
        progress("end to end again, encoders after ASR instead of beside it (before/after)")
        result["end_to_end_serial"] = _e2e(default.folder, opts, overlap=False)
        p95 = result["end_to_end"]["latency"]["p95"]
        ratios["e2e_p95_serial_vs_overlapped"] = result["end_to_end_serial"]["latency"]["p95"] / p95
        others = [("bf16", default.folder, "bf16")] if bf16 is not None else []
        others += [("int8", _export(opts, "int8", model), "auto")] if opts.int8 else []
        for name, folder, run_at in others:
            progress(f"end to end with {name}")
            result[f"end_to_end_{name}"] = _e2e(folder, opts, precision=run_at)
            ratios[f"e2e_p95_default_vs_{name}"] = p95 / result[f"end_to_end_{name}"]["latency"]["p95"]
    result["ratios"] = ratios
    if opts.soak_s:
        progress(f"soak: {opts.soak_s:.0f} s of synthetic stream, as fast as possible")
        result["soak"] = soak(default, opts.asr_model, opts.soak_s, opts.frames, progress, speech)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _ort(providers: str) -> str:
    """The onnxruntime providers nearest to ``providers`` (the reference and int8 run on onnxruntime)."""
    return "cpu" if providers == "openvino" else providers


def _runtime(bundle) -> dict:
    plan = bundle.plan
    return {"line": bundle.runtime_line(), "backend": plan.backend, "precision": plan.precision, "why": plan.why,
            "cpu": this_cpu().describe()}  # fmt: skip


def _compare(stages: dict, ratios: dict, other: dict, prefix: str, ratio: str, base: dict | None = None,
             reference: bool = False) -> None:  # fmt: skip
    """Add ``other``'s stage times under ``prefix`` and the speed-up of the one against the other: fp32 over
    ``other`` (``base`` = the fp32 stages), or, ``reference`` = True, ``other`` is fp32 over the default."""
    for key, samples in other.items():
        if key == "preprocess":
            continue
        stages[f"{prefix}_{key}"] = samples
        fp32, faster = (samples, stages[key]) if reference else (base[key], samples)
        ratios[f"{ratio}_{key}"] = statistics.median(fp32) / statistics.median(faster)


def agreement(reference, other, windows, texts) -> dict:
    """How far another bundle's (e.g. int8) readings are from fp32's on the sample windows."""
    diffs, same_top = [], []
    for w, text in zip(windows, texts, strict=False):
        a = BundleEngine(reference).run(w, text)
        b = BundleEngine(other).run(w, text)
        diffs += [abs(a.emotions[k] - b.emotions[k]) for k in a.emotions]
        diffs += [abs(a.sentiment[k] - b.sentiment[k]) for k in a.sentiment]
        same_top.append(max(a.emotions, key=a.emotions.get) == max(b.emotions, key=b.emotions.get))
    return {"max_abs_diff": float(max(diffs)), "mean_abs_diff": float(np.mean(diffs)),
            "top_emotion_agreement": float(np.mean(same_top)), "windows": len(same_top)}  # fmt: skip


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


def sig3(x: float) -> str:
    """``x`` to 3 significant digits, never in e-notation (1.62, 45.6, 238, 1,230)."""
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    rounded = float(f"{x:.3g}")  # rounded first: 9.996 is 10.0, not 10.00
    return f"{rounded:,.{max(0, 2 - math.floor(math.log10(abs(rounded))))}f}"


def throughput_lines(result: dict) -> list[str]:
    """The throughput figures, each saying what it measures; batching is compared model-alone to model-alone."""
    lines = []
    if "pipeline_windows_per_s" in result:
        lines.append(
            f"whole pipeline, 1 stream (serial sum of all stages, ASR included): "
            f"{sig3(result['pipeline_windows_per_s'])} windows/s"
        )
    model = result.get("model_windows_per_s") or {}
    one = model.get("1")
    for n, rate in sorted(model.items(), key=lambda kv: int(kv[0])):
        if n == "1":
            lines.append(f"model alone (encoders + fusion), 1 window per call: {sig3(rate)} windows/s")
        else:
            gain = f" ({sig3(rate / one)}x the 1-window figure)" if one else ""
            lines.append(f"model alone (encoders + fusion), {n} windows batched: {sig3(rate)} windows/s{gain}")
    return lines


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]merclip bench[/bold] — {result['machine']}; providers: {', '.join(result['providers'])}")
    runtime = result.get("runtime") or {"line": "", "backend": "onnxruntime", "precision": "fp32"}
    if runtime["line"]:
        console.print(f"default runtime: {runtime['line']}", markup=False, highlight=False)
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
    console.print(f"real-time factor {result['real_time_factor']:.3f} (serial processing time / 2-s window)")
    for line in throughput_lines(result):
        console.print(line)
    console.print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    default = f"default runtime ({runtime['backend']} {runtime['precision']})"
    for key, what in (("end_to_end", f"{default}, encoders beside ASR"), ("end_to_end_serial", f"{default}, serial"),
                      ("end_to_end_bf16", "OpenVINO bf16, encoders beside ASR"),
                      ("end_to_end_int8", "int8 bundle, encoders beside ASR")):  # fmt: skip
        if key not in result:
            continue
        e2e = result[key]
        console.print(
            f"end to end, {what} (sample clip, real-time pace): window-end-to-reading latency median "
            f"{e2e['latency']['median']:.0f} ms, p95 {e2e['latency']['p95']:.0f} ms, "
            f"{e2e['readings']} readings, {e2e['dropped']} dropped; transcript WER {e2e['wer']:.3f}; "
            f"word-to-screen delay median {e2e['word_to_screen_s']['median']:.2f} s, "
            f"p95 {e2e['word_to_screen_s']['p95']:.2f} s ({e2e['word_to_screen_s']['words']} words)"
        )
    if "face" in result["latency_ms"]:
        f = result["face"]
        console.print(
            f"face stage (detect + follow + crop, per frame): median {result['latency_ms']['face']['median']:.1f} ms;"
            f" a face in {f['windows_with_face']} of {f['windows']} sample windows"
        )
    console.print(f"speech paths on the sample clip, WER: {result['asr_wer']}")
    for name in ("bf16", "int8"):
        if f"{name}_agreement" in result:
            console.print(f"{name} vs fp32 readings (the 6 sample windows): {result[f'{name}_agreement']}")
    for precision, record in result.get("agreement", {}).items():
        gate = "passes" if record.get("passed") else "fails"
        console.print(
            f"{precision} vs {record['reference']} ({record['readings']} readings): top emotion "
            f"{record['top_emotion_agreement']:.1%}, mean |dp| {record['mean_abs_dp']:.4f}: {gate} the gate"
        )
    if "soak" in result:
        s = result["soak"]
        console.print(
            f"soak: {s['stream_s']:.0f} s of stream in {s['wall_s']:.0f} s, {s['windows']} windows; processing "
            f"ms per tenth {[round(x) for x in s['processing_ms_median_per_tenth']]}; RSS MB per tenth "
            f"{[round(x) for x in s['rss_mb_per_tenth']]}; words per tenth {s['words_per_tenth']} ({s['audio']})"
        )


def cmd_bench(args) -> int:
    from rich.console import Console

    cfg = load_config(args.config)
    if args.server:
        from .serve_bench import cmd_serve_bench

        return cmd_serve_bench(args, cfg)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        from merclip.errors import MerClipError

        raise MerClipError(f"checkpoint not found: {args.checkpoint}")
    opts = BenchOptions(
        model=args.model, checkpoint=args.checkpoint or "", frames=args.frames or cfg.capture.frames_per_window,
        windows=args.windows,
        streams=max(args.streams), providers=args.providers or cfg.runtime.providers,
        precision=args.precision or cfg.runtime.precision,
        asr_model=args.asr_model or cfg.asr.model, asr_mode=args.asr_mode or cfg.asr.mode,
        text_context=args.text_context, torch_compare=not args.no_torch,
        int8=not args.no_int8, e2e=not args.no_e2e, soak_s=args.soak, soak_speech=args.speech if args.soak else None,
        cache_dir=str(Path(cfg.runtime.cache_dir).expanduser() / "bench"),
    )  # fmt: skip
    err = Console(stderr=True)
    if args.speech and not args.soak:
        err.print(f"[dim]speech paths on {args.speech}…[/dim]")
        print(json.dumps(speech_report(args.speech, opts.asr_model, args.transcript), indent=1))
        return 0
    result = run_bench(opts, progress=lambda s: err.print(f"[dim]{s}…[/dim]"))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
    return 0
