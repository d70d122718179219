"""The MER-CLIP network (paper §3): encoders, log-mel front-end, label encoder, cross-modal decoder.

No files, devices or threads here. Attributes load lazily so that the torch-free tokenizer
(``merclip.model.tokenizer``) can be imported by the live runtime without importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "MerClip": "merclip",
    "MerClipConfig": "config",
    "ModelOutput": "merclip",
    "Calibration": "config",
    "ClipArch": "factory",
    "build_model": "merclip",
    "build_prompts": "merclip",
    "LabelPrompts": "labels",
    "create_clip": "factory",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "LogMelImage": "audio",
    "MelConfig": "audio",
    "ClipTokenizer": "tokenizer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
