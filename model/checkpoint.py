"""Checkpoints: one ``.safetensors`` file, weights plus the model config as JSON metadata.

Nothing is ever unpickled from a user file. A checkpoint whose config or tensors do not match what the
caller expects is refused with a message that names the difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from merclip.errors import MerClipError

from .merclip import MerClip, MerClipConfig, build_model

FORMAT = "merclip-checkpoint/1"


def save_checkpoint(model: MerClip, path: str | Path, extra: dict | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(model.cfg.to_dict()), "extra": json.dumps(extra or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_checkpoint_config(path: str | Path) -> tuple[MerClipConfig, dict]:
    path = Path(path)
    if not path.is_file():
        raise MerClipError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise MerClipError(f"{path} is not a safetensors checkpoint ({str(err).splitlines()[0]})") from None
    if meta.get("format") != FORMAT:
        raise MerClipError(f"{path} is not a MER-CLIP checkpoint (format {meta.get('format')!r}, expected {FORMAT})")
    return MerClipConfig.from_dict(json.loads(meta["config"])), json.loads(meta.get("extra", "{}"))


def load_checkpoint(path: str | Path, expect: MerClipConfig | None = None) -> tuple[MerClip, dict]:
    """Return (model, extra). With ``expect``, the stored config must equal it."""
    cfg, extra = read_checkpoint_config(path)
    if expect is not None and expect != cfg:
        diff = [k for k in cfg.to_dict() if cfg.to_dict()[k] != expect.to_dict()[k]]
        raise MerClipError(f"checkpoint {path} does not match the requested model: differs in {', '.join(diff)}")
    model = build_model(cfg, weights="random")
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        what = (
            (missing and f"missing {missing[:3]}")
            or (unexpected and f"unexpected {unexpected[:3]}")
            or f"shape of {bad_shape[:3]}"
        )
        raise MerClipError(f"checkpoint {path} does not fit its own config ({what})")
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    model.eval()
    return model, extra
