"""One place that turns an architecture name and a weights spec into a CLIP model.

``weights`` is an open_clip pretrained tag (``"openai"``, downloaded once when online, read from the
Hugging Face cache when offline), a local file (``.safetensors``/``.pt`` state dict, loaded without
unpickling arbitrary objects), or ``"random"``. ``tiny`` is a built-in few-M-parameter CLIP for tests and
offline demos.

A pretrained tag carries settings the weights were trained with (open_clip records them per tag in
``open_clip.pretrained``): the activation (``quick_gelu``: OpenAI's CLIP and a few others use QuickGELU,
x * sigmoid(1.702 x)) and the image normalisation (``mean``/``std``). ``open_clip.create_model`` applies
only the normalisation; it builds nn.GELU for e.g. ``ViT-B-32`` + ``openai`` and merely warns
"QuickGELU mismatch". This module applies both, and reports them in ``ClipArch`` so that a checkpoint can
record them: a model rebuilt from a checkpoint (random init, then the stored weights) computes the same
function. A local copy of QuickGELU weights is declared with the ``-quickgelu`` architecture name
(``ViT-B-32-quickgelu`` + ``--weights FILE``).
"""

from __future__ import annotations

import logging
import os
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
    """What the rest of the model needs to know about a CLIP architecture (and the weights it was built for)."""

    name: str
    embed_dim: int
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    quick_gelu: bool = False
    text_heads: int = 8  # attention heads of the text tower (the cross-modal decoder's default)

    @property
    def activation(self) -> str:
        return activation_name(self.quick_gelu)


def activation_name(quick_gelu: bool) -> str:
    return "quick_gelu" if quick_gelu else "gelu"


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise MerClipError("open_clip is not installed: pip install 'merclip-live[train]'") from None
    return open_clip


def arch_quick_gelu(arch: str) -> bool:
    """The activation an architecture name builds by itself (no tag): QuickGELU for ``*-quickgelu`` names."""
    if arch == "tiny":
        return False
    cfg = _open_clip().get_model_config(arch) or {}
    return bool(cfg.get("quick_gelu", False))


WEIGHTS_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def looks_like_file(weights: str) -> bool:
    """A ``weights`` value meant as a file (a path separator, ``~`` or a weights-file suffix): never a tag."""
    has_path = "/" in weights or os.sep in weights or weights.startswith("~")
    return has_path or weights.lower().endswith(WEIGHTS_FILE_SUFFIXES)


def weights_file_not_found(weights: str) -> MerClipError:
    return MerClipError(f"weights file not found: {weights} (pass a tag such as 'openai', a file, or 'random')")


def _tag_settings(open_clip, arch: str, weights: str) -> dict | None:
    """open_clip's record for a pretrained tag of ``arch``, or None when ``weights`` is no tag."""
    if arch == "tiny" or weights == "random" or Path(weights).expanduser().is_file():
        return None
    if looks_like_file(weights):  # a mistyped path is "not found", not "no such tag" with 20 tags listed
        raise weights_file_not_found(weights)
    known = [t for name, t in open_clip.list_pretrained() if name == arch]
    if weights not in known:
        raise MerClipError(f"no pretrained weights {weights!r} for {arch} (known: {', '.join(known) or 'none'})")
    return open_clip.get_pretrained_cfg(arch, weights)


def _settle(what: str, asked, from_weights, source: str):
    """An explicit setting must agree with the one the weights were trained with."""
    if asked is None or from_weights is None:
        return from_weights if asked is None else asked
    same = tuple(asked) == tuple(from_weights) if isinstance(asked, tuple | list) else asked == from_weights
    if not same:
        raise MerClipError(f"{what}={asked!r} contradicts {source}, which use {what}={from_weights!r}")
    return asked


def create_clip(
    arch: str,
    weights: str = "random",
    quick_gelu: bool | None = None,
    image_mean: tuple[float, float, float] | None = None,
    image_std: tuple[float, float, float] | None = None,
):
    """Return (open_clip CLIP module, ClipArch).

    ``quick_gelu``/``image_mean``/``image_std`` default (None) to what the weights were trained with: the
    tag's record, else the architecture's own config. Explicit values (a checkpoint's record) must agree
    with a tag's."""
    open_clip = _open_clip()
    if arch != "tiny" and arch not in open_clip.list_models():
        raise MerClipError(f"unknown architecture {arch!r}: use 'tiny' or an open_clip name such as ViT-B-32")
    tag = _tag_settings(open_clip, arch, weights)
    source = f"pretrained weights {arch}/{weights}"
    by_name = arch_quick_gelu(arch)
    if quick_gelu is not None and by_name and not quick_gelu:
        raise MerClipError(f"quick_gelu=False contradicts the architecture name {arch!r}")
    quick = _settle("quick_gelu", quick_gelu, bool(tag.get("quick_gelu", False)) if tag else None, source)
    quick = bool(by_name if quick is None else quick)
    if tag:
        image_mean = _settle("image_mean", image_mean, tuple(tag["mean"]) if "mean" in tag else None, source)
        image_std = _settle("image_std", image_std, tuple(tag["std"]) if "std" in tag else None, source)
    if arch == "tiny":
        model = open_clip.CLIP(**TINY_CLIP, quick_gelu=quick)
        if weights != "random":
            _load_local(open_clip, model, weights)
    elif tag is None:
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick)
        if weights != "random":
            if not quick and f"{arch}-quickgelu" in open_clip.list_models():
                log.warning(
                    "%s: building %s with nn.GELU; if these are OpenAI's weights (trained with QuickGELU), "
                    "use the architecture %s-quickgelu",
                    weights,
                    arch,
                    arch,
                )
            _load_local(open_clip, model, weights)
    else:
        model = _create_pretrained(open_clip, arch, weights, quick)
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
        image_mean=_triple(image_mean or pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        image_std=_triple(image_std or pre.get("std", open_clip.OPENAI_DATASET_STD)),
        quick_gelu=quick,
        text_heads=int(model.transformer.resblocks[0].attn.num_heads),
    )
    return model, info


def _triple(values) -> tuple[float, float, float]:
    return tuple(float(v) for v in values)


def _load_local(open_clip, model, path: str) -> None:
    path = str(Path(path).expanduser())
    if not Path(path).is_file():
        raise weights_file_not_found(path)
    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    except Exception as err:  # corrupt file, wrong architecture, pickled objects refused
        raise MerClipError(f"cannot load weights from {path}: {str(err).splitlines()[0]}") from None


def _create_pretrained(open_clip, arch: str, tag: str, quick_gelu: bool):
    try:
        # open_clip applies the tag's normalisation but not its activation: it builds the architecture's
        # own (nn.GELU for ViT-B-32) and only warns on a mismatch, so QuickGELU is forced here.
        return open_clip.create_model(arch, pretrained=tag, force_quick_gelu=quick_gelu)
    except Exception as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        reason = reason if len(reason) <= 160 else reason[:159] + "…"
        raise MerClipError(
            f"could not get pretrained weights {arch}/{tag} ({reason}); offline? HF_HUB_OFFLINE=1 reads the "
            "Hugging Face cache without retrying; or pass a local weights file with --weights PATH, or --weights random"
        ) from None
