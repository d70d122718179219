"""MER-CLIP Live: a real-time multimodal emotion monitor.

Subpackages: ``merclip.model`` (the network), ``merclip.train``, ``merclip.export`` (ONNX bundle and
runtime), ``merclip.stream`` (the live monitor). This package holds only the CLI and config glue.
"""

import os

__version__ = "0.1.0"

# Nothing leaves the user's machine: the libraries the monitor runs on collect usage data unless told not
# to. onnxruntime (1.2x+, every platform) writes a device id under ~/.cache/Microsoft and uploads process
# and session events when it is imported; Ray uploads cluster usage stats from `merclip serve`'s local
# cluster. Both read these variables (before import / ray.init), so they are set before any subpackage
# imports them; a value the user set wins. OpenVINO's has no variable: export/ov_session.py.
VENDOR_TELEMETRY_OFF = {"ORT_DISABLE_TELEMETRY": "1", "RAY_USAGE_STATS_ENABLED": "0"}
for _name, _value in VENDOR_TELEMETRY_OFF.items():
    os.environ.setdefault(_name, _value)
