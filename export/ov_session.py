"""A bundle graph compiled by OpenVINO, behind the few ``onnxruntime.InferenceSession`` methods the bundle uses.

OpenVINO reads the bundle's ONNX files as they are (no conversion step, no second file) and compiles each
for this CPU at the asked precision: ``bf16`` (``INFERENCE_PRECISION_HINT``: weights and activations in
bf16 on AMX / AVX-512-BF16 units, accumulation in fp32) or ``f32``. Compiling takes a few seconds per
start (ViT-B-32: 4-6 s; onnxruntime 2.5 s). OpenVINO's compile cache (``CACHE_DIR``) is not used: it saved
~4 s of a start but wrote 1.2 GB per ViT-B-32 bundle and raised a start's peak memory from 2.0 to 2.6 GB.

Infer requests are not thread-safe and the live engine encodes frames in one thread while it reads
another window's words in the next: each thread gets its own request on the shared compiled model.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HINTS = {"bf16": "bf16", "fp32": "f32"}
# OpenVINO 2026.4's CPU plugin fails to compile the fusion graph with its "snippets" (fused subgraph
# kernels) on ("... passes can't be merged"); with them off it compiles and runs. Tried second, not first:
# the encoders are faster with snippets.
_RETRY_CONFIG = {"SNIPPETS_MODE": "DISABLE"}


@dataclass(frozen=True)
class _Arg:
    """Like onnxruntime's NodeArg: a name and a shape of ints (static) and strings (dynamic)."""

    name: str
    shape: list


class OpenVinoError(Exception):
    """OpenVINO could not read or compile a graph (the part then runs on onnxruntime)."""


def _onnx_name(port) -> str:
    # A port may carry several tensor names (the ONNX name and names of the ops around it): the graph's
    # own input/output name is the one without a path ("waveform", not "/audio_frontend/Pad_output_0").
    names = sorted(port.get_names())
    plain = [n for n in names if not n.startswith("/")]
    return (plain or names or [""])[0]


def _shape(port) -> list:
    return [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]


class OpenVinoSession:
    """``run(None, feeds)``, ``get_inputs()``, ``get_outputs()``, ``get_providers()`` of an OpenVINO model."""

    def __init__(self, compiled, precision: str, retried: bool):
        self.compiled = compiled
        self.precision = precision
        self.retried = retried  # compiled only with snippets off (see _RETRY_CONFIG)
        self._inputs = [_Arg(_onnx_name(p), _shape(p)) for p in compiled.inputs]
        self._outputs = [_Arg(_onnx_name(p), _shape(p)) for p in compiled.outputs]
        self._local = threading.local()

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, output_names, feeds: dict) -> list[np.ndarray]:
        # share_outputs=False (the default): the arrays are copies, a later call cannot overwrite them
        results = self._request().infer(feeds)
        return [np.asarray(results[port]) for port in self.compiled.outputs]

    def get_inputs(self) -> list[_Arg]:
        return self._inputs

    def get_outputs(self) -> list[_Arg]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return ["OpenVINO"]


def import_openvino():
    """``openvino``, with its usage telemetry left out. Importing openvino imports its model converter, which
    (unless the user ran OpenVINO's opt-out) writes ``~/intel/openvino_ga_cid`` and sends an "import" event to
    Google Analytics; a monitor that runs on the user's machine sends nothing anywhere. The converter uses
    its own no-op stub when ``openvino_telemetry`` cannot be imported, which a ``None`` in ``sys.modules``
    makes so for this process (we never convert models with it)."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


class OpenVinoCompiler:
    """One OpenVINO ``Core`` for a bundle's graphs (importing openvino takes ~0.1 s; done once here)."""

    def __init__(self, precision: str, threads: int):
        try:
            ov = import_openvino()
        except Exception as err:  # a broken install raises anything from ImportError to OSError
            raise OpenVinoError(f"openvino cannot be imported: {str(err).splitlines()[0][:160]}") from None
        self.version = ov.get_version().split("-")[0]
        self.core = ov.Core()
        self.config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.precision = precision

    def compile(self, path: Path) -> OpenVinoSession:
        try:
            model = self.core.read_model(str(path))
        except Exception as err:
            raise OpenVinoError(f"cannot read {path.name}: {_first_line(err)}") from None
        try:
            return OpenVinoSession(self.core.compile_model(model, "CPU", self.config), self.precision, False)
        except Exception as first:
            log.info("OpenVINO: %s did not compile (%s); again with snippets off", path.name, _first_line(first))
            try:
                compiled = self.core.compile_model(model, "CPU", self.config | _RETRY_CONFIG)
            except Exception as err:
                raise OpenVinoError(f"cannot compile {path.name}: {_first_line(err)}") from None
            return OpenVinoSession(compiled, self.precision, True)


def _first_line(err: Exception) -> str:
    # OpenVINO's messages start with source locations ("Exception from src/...:117:"): keep the last line
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]
