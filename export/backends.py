"""Which runtime runs a bundle, and at which precision: chosen once at load, and said in one line.

The order (``runtime.providers = "auto"``): a GPU through onnxruntime first (TensorRT, then CUDA); on a CPU
with bf16 matrix units (AMX, AVX-512-BF16) OpenVINO at bf16, when the bundle's bf16 readings were measured
to agree with fp32 (``export/agreement.py``); else onnxruntime's CPU provider at the bundle's own precision
(fp32, or int8 for a bundle exported so). Every choice can be forced: ``providers`` (tensorrt, cuda,
openvino, cpu = onnxruntime's CPU provider) and ``precision`` (fp32, bf16, int8). A forced choice that
cannot run here is an error naming why; an automatic one falls back and says why it did.

Measured (BENCHMARKS.md, Intel Xeon with AMX, 2 cores): ViT-B-32's vision graph runs 3.6-5x faster in
OpenVINO bf16 than in onnxruntime fp32 (4-12 frames per call); OpenVINO f32 ~1.2x; onnxruntime int8 2.3-2.9x.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from merclip.errors import MerClipError

from .agreement import gate
from .cpu import CpuInfo

PROVIDERS = ("auto", "tensorrt", "cuda", "openvino", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
ORT_EPS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
ORT_ORDER = ("tensorrt", "cuda", "cpu")
OPENVINO_INSTALL = "pip install 'merclip-live[openvino]'"


@dataclass(frozen=True)
class Plan:
    """What runs the bundle: ``backend`` "onnxruntime" (with ``providers``) or "openvino" (CPU), at
    ``precision``; ``why``: why nothing faster was chosen ("" when nothing faster exists here)."""

    backend: str
    precision: str
    providers: tuple = ()  # onnxruntime's providers: the backend's, or the fallback of an OpenVINO part
    why: str = ""
    skipped: str = ""  # onnxruntime providers this build lacks ("cuda: not in this onnxruntime build")

    @property
    def name(self) -> str:
        if self.backend == "openvino":
            return "OpenVINO"
        first = self.providers[0] if self.providers else "CPUExecutionProvider"
        first = first[0] if isinstance(first, tuple) else first
        return f"onnxruntime {first.replace('ExecutionProvider', '')}"


def runnable_precisions(bundle_precision: str) -> tuple[str, ...]:
    """What a bundle's graphs can compute in: fp32 graphs at fp32 or (OpenVINO) bf16; the others as stored."""
    return ("fp32", "bf16") if bundle_precision == "fp32" else (bundle_precision,)


def openvino_version() -> str | None:
    """The installed OpenVINO runtime's version, without importing it (None: not installed)."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return "unknown"


def ort_chain(requested: str, precision: str, available: set[str], cache_dir: str | Path | None) -> tuple[list, str]:
    """onnxruntime's providers from ``requested`` down to CPU, and a one-line note of those skipped."""
    wanted = ORT_ORDER if requested == "auto" else ORT_ORDER[ORT_ORDER.index(requested) :]
    chosen, skipped = [], []
    for name in wanted:
        ep = ORT_EPS[name]
        if ep not in available:
            skipped.append(f"{name}: not in this onnxruntime build")
            continue
        if name == "tensorrt":
            cache = Path(cache_dir or "~/.cache/merclip").expanduser() / "tensorrt"
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise MerClipError(f"runtime.cache_dir: cannot create {cache}: {err.strerror}") from None
            options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                       "trt_fp16_enable": precision == "fp16"}  # fmt: skip
            chosen.append((ep, options))
        else:
            chosen.append(ep)
    if requested != "auto" and ORT_EPS[requested] not in available:
        raise MerClipError(
            f"provider {requested} is not available in this onnxruntime build "
            f"(available: {', '.join(sorted(available))}); for GPUs install onnxruntime-gpu"
        )
    return chosen, "; ".join(skipped)


def choose_plan(
    providers: str,
    precision: str,
    bundle_precision: str,
    cpu: CpuInfo,
    ort_available: set[str],
    openvino: str | None,
    agreement: dict,
    cache_dir: str | Path | None = None,
) -> Plan:
    """The backend and precision for a bundle stored at ``bundle_precision`` on ``cpu``; ``openvino``: the
    installed OpenVINO version or None; ``agreement``: the bundle's measured agreement per precision."""
    if providers not in PROVIDERS:
        raise MerClipError(f"providers must be one of {', '.join(PROVIDERS)}, got {providers!r}")
    if precision not in PRECISIONS:
        raise MerClipError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    can = runnable_precisions(bundle_precision)
    if precision != "auto" and precision not in can:
        hint = ("int8 needs a bundle exported with `merclip export --precision int8`" if precision == "int8" else
                "export it again at fp32 for fp32 or bf16")  # fmt: skip
        raise MerClipError(f"this bundle holds {bundle_precision} graphs, it cannot run at {precision}: {hint}")
    if precision == "bf16" or providers == "openvino":
        return _openvino_forced(providers, precision, bundle_precision, cpu, openvino, agreement, ort_available)

    chain, skipped = ort_chain("auto" if providers == "auto" else providers, bundle_precision, ort_available,
                               cache_dir)  # fmt: skip
    on_gpu = chain and chain[0] != ORT_EPS["cpu"]
    skipped = "" if on_gpu else skipped
    if providers != "auto" or on_gpu or precision != "auto" or bundle_precision != "fp32":
        return Plan("onnxruntime", bundle_precision, tuple(chain), skipped=skipped)
    # auto, on the CPU, with fp32 graphs: bf16 where the CPU has the units, OpenVINO is there, and it agrees
    ok, why = _bf16_usable(cpu, openvino, agreement)
    if ok:
        return Plan("openvino", "bf16", tuple(chain), skipped=skipped)
    return Plan("onnxruntime", "fp32", tuple(chain), why, skipped)


def _bf16_usable(cpu: CpuInfo, openvino: str | None, agreement: dict) -> tuple[bool, str]:
    if not cpu.bf16:
        return False, ""  # nothing faster exists here: not worth a word
    if openvino is None:
        return False, f"bf16 not used: OpenVINO is not installed ({OPENVINO_INSTALL}; this CPU has {cpu.bf16_unit})"
    ok, why = gate(agreement.get("bf16"))
    return ok, "" if ok else f"bf16 not used: {why}"


def _openvino_forced(providers, precision, bundle_precision, cpu, openvino, agreement, ort_available) -> Plan:
    if providers not in ("auto", "openvino"):
        raise MerClipError(f"bf16 runs on OpenVINO: use --providers openvino or auto, not {providers}")
    if bundle_precision != "fp32":
        raise MerClipError(f"OpenVINO runs fp32 bundles (at fp32 or bf16); this one is {bundle_precision}: "
                           "use --providers cpu, or export it at fp32")  # fmt: skip
    if openvino is None:
        raise MerClipError(f"OpenVINO is not installed: {OPENVINO_INSTALL}")
    fallback = (ORT_EPS["cpu"],) if ORT_EPS["cpu"] in ort_available else ()
    if precision == "bf16":
        if not cpu.bf16:
            has = " ".join(cpu.isa) or "none of them"
            raise MerClipError(f"this CPU has no bf16 units (amx_bf16 or avx512_bf16; it has {has}): run at fp32")
        ok, why = gate(agreement.get("bf16"))
        return Plan("openvino", "bf16", fallback, "" if ok else f"bf16 forced although {why}")
    if precision == "auto" and cpu.bf16:
        ok, why = gate(agreement.get("bf16"))
        if ok:
            return Plan("openvino", "bf16", fallback, "")
        return Plan("openvino", "fp32", fallback, f"bf16 not used: {why}")
    return Plan("openvino", "fp32", fallback, "")
