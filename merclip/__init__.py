"""MER-CLIP Live: a real-time multimodal emotion monitor.

Subpackages: ``merclip.model`` (the network), ``merclip.train``, ``merclip.export`` (ONNX bundle and
runtime), ``merclip.stream`` (the live monitor). This package holds only the CLI and config glue.
"""

__version__ = "0.1.0"
