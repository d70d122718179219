"""One place that turns an architecture name and a weights spec into a CLIP model.

``weights`` is an open_clip pretrained tag (``"openai"``, downloaded once when online), a local file
(``.safetensors``/``.pt`` state dict, loaded without unpickling arbitrary objects), or ``"random"``.
``tiny`` is a built-in few-M-parameter CLIP for tests and offline demos.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from merclip.errors import MerClipError

log = logging.getLogger(__name__)

TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass(frozen=True)
class ClipArch:
    """What the rest of the model needs to know about a CLIP architecture."""

    name: str
    embed_dim: int
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise MerClipError("open_clip is not installed: pip install 'merclip-live[train]'") from None
    return open_clip


def create_clip(arch: str, weights: str = "random"):
    """Return (open_clip CLIP module, ClipArch)."""
    open_clip = _open_clip()
    if arch == "tiny":
        model = open_clip.CLIP(**TINY_CLIP)
        if weights != "random":
            _load_local(open_clip, model, weights)
    else:
        if arch not in open_clip.list_models():
            raise MerClipError(f"unknown architecture {arch!r}: use 'tiny' or an open_clip name such as ViT-B-32")
        if weights == "random":
            model = open_clip.create_model(arch, pretrained=None)
        elif Path(weights).expanduser().is_file():
            model = open_clip.create_model(arch, pretrained=None)
            _load_local(open_clip, model, weights)
        else:
            model = _create_pretrained(open_clip, arch, weights)
    model.eval()
    pre = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    info = ClipArch(
        name=arch,
        embed_dim=int(
            model.text_projection.shape[-1]
            if not hasattr(model.text_projection, "out_features")
            else model.text_projection.out_features
        ),
        image_size=int(size),
        image_mean=tuple(pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        image_std=tuple(pre.get("std", open_clip.OPENAI_DATASET_STD)),
    )
    return model, info


def _load_local(open_clip, model, path: str) -> None:
    path = str(Path(path).expanduser())
    if not Path(path).is_file():
        raise MerClipError(f"weights file not found: {path} (pass a tag such as 'openai', a file, or 'random')")
    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    except Exception as err:  # corrupt file, wrong architecture, pickled objects refused
        raise MerClipError(f"cannot load weights from {path}: {str(err).splitlines()[0]}") from None


def _create_pretrained(open_clip, arch: str, tag: str):
    known = [t for name, t in open_clip.list_pretrained() if name == arch]
    if tag not in known:
        raise MerClipError(f"no pretrained weights {tag!r} for {arch} (known: {', '.join(known) or 'none'})")
    try:
        # open_clip applies the tag's own settings (e.g. QuickGELU for OpenAI weights) and caches the file.
        return open_clip.create_model(arch, pretrained=tag)
    except Exception as err:
        raise MerClipError(
            f"could not download pretrained weights {arch}/{tag} ({type(err).__name__}); offline? "
            "pass a local weights file with --weights PATH, or --weights random"
        ) from None
