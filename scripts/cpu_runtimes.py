"""Time one bundle graph in every CPU runtime this Python has, side by side (BENCHMARKS.md, issue #24).

    python scripts/cpu_runtimes.py BUNDLE [--part vision] [--frames 4] [--threads 2] [--repeats 7]

Runtimes, each where importable: onnxruntime's CPU provider (fp32), OpenVINO's own runtime at f32 and bf16
(``INFERENCE_PRECISION_HINT``), and onnxruntime's OpenVINO execution provider at f32 and bf16 (only in the
``onnxruntime-openvino`` build, which replaces the ``onnxruntime`` module: run this script again in a venv
that has it). Prints the median and min per call and the largest |difference| relative to the largest
|output| of the first runtime timed. Inputs are seeded random tensors (timing does not depend on them;
agreement on real windows is `merclip export`'s job).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from merclip.export.ov_session import import_openvino

SIZES = {"batch": 1, "segments": 1, "k_emotion": 7, "k_sentiment": 3}


def feeds_for(inputs, frames: int, rng) -> dict:
    """Inputs for a graph from its (name, shape, type): images get ``frames`` in the batch axis."""
    out = {}
    for name, shape, kind in inputs:
        dims = [d if isinstance(d, int) else frames if name == "images" else SIZES.get(d, 1) for d in shape]
        if "int64" in kind:
            ids = np.zeros(dims, np.int64)
            ids[..., :6] = [49406, 320, 1125, 533, 786, 49407]  # "<start> a happy day . <end>"
            out[name] = ids
        elif "bool" in kind:
            out[name] = np.ones(dims, bool)
        else:
            out[name] = (rng.standard_normal(dims) * (0.1 if name == "waveform" else 1.0)).astype(np.float32)
    return out


def runtimes(path: Path, threads: int) -> dict:
    """name -> a callable(feeds) -> first output, for every runtime importable here."""
    found = {}
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        available = ort.get_available_providers()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        if "OpenVINOExecutionProvider" in available:
            for hint in ("f32", "bf16"):
                config = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                                             "PERFORMANCE_HINT": "LATENCY"}})  # fmt: skip
                options = {"device_type": "CPU", "load_config": config}
                sess = ort.InferenceSession(str(path), opts, providers=[("OpenVINOExecutionProvider", options)])
                found[f"onnxruntime {ort.__version__} OpenVINO EP {hint}"] = _ort_call(sess)
        elif "CPUExecutionProvider" in available:
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            found[f"onnxruntime {ort.__version__} CPU provider"] = _ort_call(sess)
    try:
        ov = import_openvino()
    except ImportError:
        ov = None
    if ov is not None:
        core = ov.Core()
        for hint in ("f32", "bf16"):
            config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
            request = compiled.create_infer_request()
            found[f"OpenVINO {ov.get_version().split('-')[0]} runtime {hint}"] = lambda feeds, r=request, c=compiled: (
                np.asarray(r.infer(feeds)[c.outputs[0]])
            )
    return found


def _ort_call(sess):
    return lambda feeds: sess.run(None, feeds)[0]


def graph_inputs(path: Path) -> list:
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        provider = "CPUExecutionProvider" if "CPUExecutionProvider" in ort.get_available_providers() else None
        if provider:
            sess = ort.InferenceSession(str(path), opts, providers=[provider])
            return [(i.name, i.shape, i.type) for i in sess.get_inputs()]
    except ImportError:
        pass
    ov = import_openvino()
    model = ov.Core().read_model(str(path))
    return [(p.get_any_name(), [d.get_length() if d.is_static else "?" for d in p.get_partial_shape()],
             str(p.get_element_type())) for p in model.inputs]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--part", default="vision")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    path = args.bundle / f"{args.part}.onnx"
    feeds = feeds_for(graph_inputs(path), args.frames, np.random.default_rng(0))
    found = runtimes(path, args.threads)
    if not found:
        print("no runtime found (install onnxruntime and/or openvino)", file=sys.stderr)
        return 1
    reference = None
    times = {name: [] for name in found}
    for run in found.values():
        run(feeds)  # warm-up
    for _ in range(args.repeats):  # interleaved, so load on a shared machine falls on every runtime alike
        for name, run in found.items():
            start = time.perf_counter()
            run(feeds)
            times[name].append(time.perf_counter() - start)
    stored = json.loads((args.bundle / "manifest.json").read_text(encoding="utf-8"))["precision"]
    print(f"{path} ({args.part}, {stored} graph, {args.frames} frames where it takes images), {args.threads} threads")
    for name, run in found.items():
        out = run(feeds).astype(np.float32)
        if reference is None:
            reference = out
        err = float(np.abs(out - reference).max() / np.abs(reference).max())
        median, low = statistics.median(times[name]) * 1000, min(times[name]) * 1000
        print(f"  {name:45s} median {median:8.1f} ms  min {low:8.1f} ms  max rel. diff {err:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
