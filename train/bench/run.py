"""One stream's bench (`merclip bench` without ``--server``): every part in order into one result."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from merclip.export.backends import openvino_version
from merclip.export.cpu import this_cpu

from .bundles import bench_bundle, export_bench_bundle
from .end_to_end import end_to_end
from .measure import machine, peak_rss_mb, stats_ms
from .options import BenchOptions
from .soak import soak
from .speech import asr_times, read_speech
from .stages import (
    agreement,
    compare_stages,
    model_throughput,
    ort_providers,
    runtime_record,
    sample_windows,
    stage_times,
    torch_times,
)


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
    default = bench_bundle(opts, "fp32", model, run_at=opts.precision)  # what merclip-live runs for this bundle
    runs_fp32 = (default.plan.backend, default.plan.precision) == ("onnxruntime", "fp32")
    reference = default if runs_fp32 else bench_bundle(opts, "fp32", model, ort_providers(opts.providers), "fp32")
    windows, decode_s, face_s = sample_windows(opts.frames, default.face)
    progress(f"timing speech recognition ({opts.asr_model}: streaming vs each window unpadded)")
    asr, texts, asr_wer = asr_times(opts, windows, opts.windows)
    progress(f"timing the default runtime's stages ({default.plan.name} {default.plan.precision})")
    stages = {"decode": [decode_s], "face": face_s} | asr | stage_times(default, windows, texts, opts.windows)
    # per frame, as measured; the share of each window of it is frames x median
    result_face = {"windows_with_face": sum(w.face == "found" for w in windows), "windows": len(windows)}
    result: dict = {"machine": machine(), "options": opts.__dict__, "providers": default.provider_report,
                    "runtime": runtime_record(default), "agreement": default.manifest.get("agreement", {}),
                    "asr_wer": asr_wer, "face": result_face}  # fmt: skip
    ratios: dict = {}
    fp32_stages = stages
    if not runs_fp32:
        progress("timing onnxruntime fp32 stages (the reference)")
        fp32_stages = stage_times(reference, windows, texts, opts.windows)
        compare_stages(stages, ratios, fp32_stages, "ort_fp32", "default_speedup", reference=True)
        if default.plan.precision == "bf16":
            ratios |= {k.replace("default_", "bf16_"): v for k, v in ratios.items() if k.startswith("default_")}
    if opts.torch_compare:
        progress("timing torch eager stages")
        eager = torch_times(model, reference, windows, texts, opts.windows)
        for key, samples in eager.items():
            stages[f"torch_{key}"] = samples
            ratios[f"onnx_vs_torch_{key}"] = statistics.median(samples) / statistics.median(fp32_stages[key])
    bf16 = None
    if default.plan.precision != "bf16" and this_cpu().bf16 and openvino_version() is not None:
        progress("timing OpenVINO bf16 stages (AMX / AVX-512-BF16)")
        bf16 = bench_bundle(opts, "fp32", model, "openvino", "bf16")
        compare_stages(stages, ratios, stage_times(bf16, windows, texts, opts.windows), "bf16", "bf16_speedup",
                 fp32_stages)  # fmt: skip
        result["bf16_agreement"] = agreement(reference, bf16, windows, texts)
    if opts.int8:
        progress("timing int8 stages")
        int8 = bench_bundle(opts, "int8", model, ort_providers(opts.providers))
        result["int8_agreement"] = agreement(reference, int8, windows, texts)
        result["agreement"] = result["agreement"] | int8.manifest.get("agreement", {})
        compare_stages(stages, ratios, stage_times(int8, windows, texts, opts.windows), "int8", "int8_speedup",
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
        str(n): model_throughput(default, windows, texts, n, opts.windows) for n in sorted({1, opts.streams})
    }
    if opts.e2e:
        progress("end to end on the sample clip at real-time pace")
        result["end_to_end"] = end_to_end(default.folder, opts)
        progress("end to end again, encoders after ASR instead of beside it (before/after)")
        result["end_to_end_serial"] = end_to_end(default.folder, opts, overlap=False)
        p95 = result["end_to_end"]["latency"]["p95"]
        ratios["e2e_p95_serial_vs_overlapped"] = result["end_to_end_serial"]["latency"]["p95"] / p95
        others = [("bf16", default.folder, "bf16")] if bf16 is not None else []
        others += [("int8", export_bench_bundle(opts, "int8", model), "auto")] if opts.int8 else []
        for name, folder, run_at in others:
            progress(f"end to end with {name}")
            result[f"end_to_end_{name}"] = end_to_end(folder, opts, precision=run_at)
            ratios[f"e2e_p95_default_vs_{name}"] = p95 / result[f"end_to_end_{name}"]["latency"]["p95"]
    result["ratios"] = ratios
    if opts.soak_s:
        progress(f"soak: {opts.soak_s:.0f} s of synthetic stream, as fast as possible")
        result["soak"] = soak(default, opts.asr_model, opts.soak_s, opts.frames, progress, speech)
    result["peak_rss_mb"] = peak_rss_mb()
    return result
