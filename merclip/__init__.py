"""MER-CLIP Live: a real-time multimodal emotion monitor.

Subpackages: ``merclip.model`` (the network), ``merclip.train``, ``merclip.export`` (ONNX bundle and
runtime), ``merclip.stream`` (the live monitor). This package holds only the CLI and config glue.
"""

import os

__version__ = "0.1.0"

# Nothing leaves the user's machine: onnxruntime (1.2x+, every platform) writes a device id under
# ~/.cache/Microsoft and uploads process and session events from import on unless ORT_DISABLE_TELEMETRY is
# set before it is imported, so it is set here, before any subpackage imports it (a value the user set
# wins). OpenVINO's has no variable: export/ov_session.py. Ray needs nothing: its release wheels report no
# usage from clusters that ray.init() starts, which is what `merclip serve` does.
VENDOR_TELEMETRY_OFF = {"ORT_DISABLE_TELEMETRY": "1"}
for _name, _value in VENDOR_TELEMETRY_OFF.items():
    os.environ.setdefault(_name, _value)
