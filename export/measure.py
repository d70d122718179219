"""The bf16 agreement of a bundle, measured: onnxruntime at fp32 and OpenVINO at bf16 read the same real
windows (``agreement.py`` compares the readings and holds the gate; this module loads the runtimes, so it
sits above ``runtime.py``, which reads the recorded results).
"""

from __future__ import annotations

from pathlib import Path

from .agreement import Agreement, InputSource, bundle_readings, compare
from .backends import openvino_version
from .cpu import this_cpu
from .runtime import Bundle


def measure_bf16(folder: str | Path, inputs: InputSource, threads: int = 0) -> Agreement | None:
    """A fp32 bundle read by onnxruntime at fp32 and by OpenVINO at bf16 on ``inputs``' windows; None when
    OpenVINO could not run it here (the load said why)."""
    reference = Bundle.load(folder, providers="cpu", precision="fp32", threads=threads, verify=False)
    low = Bundle.load(folder, providers="openvino", precision="bf16", threads=threads, verify=False)
    if low.plan.backend != "openvino":
        return None
    use_audio = reference.mode != "zero-shot"  # zero-shot CLIP never reads audio (as the live engine)
    stats = compare(bundle_readings(reference, use_audio), bundle_readings(low, use_audio), inputs.windows(reference))
    on_ort = [line.split(":")[0] for line in low.provider_report if "onnxruntime" in line]
    backend = f"openvino {openvino_version()} bf16" + (f" ({', '.join(on_ort)} on onnxruntime fp32)" if on_ort else "")
    return Agreement("bf16", backend, "onnxruntime fp32", inputs.name, measured_on=this_cpu().describe(), **stats)
