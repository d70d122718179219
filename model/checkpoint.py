"""Checkpoints: one ``.safetensors`` file, weights plus the model config as JSON metadata.

Nothing is ever unpickled from a user file. A checkpoint whose config or tensors do not match what the
caller expects is refused with a message that names the difference.

The config records what the CLIP weights were trained with (activation, image normalisation), so the
model rebuilt here (random init, then the stored tensors) computes what the saved one computed. A
checkpoint written before those were recorded was built with the architecture's own activation (open_clip
built nn.GELU for ``ViT-B-32`` even with OpenAI's weights), and is rebuilt that way.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from merclip.errors import MerClipError

from .config import CONFIG_KEYS_ADDED_LATER, Calibration, MerClipConfig
from .merclip import MerClip, build_model

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


def _json_metadata(path: Path, meta: dict, key: str, default: str | None = None):
    text = meta.get(key, default)
    if text is None:
        raise MerClipError(f"checkpoint {path} is damaged: its metadata has no {key!r} entry")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as err:
        raise MerClipError(f"checkpoint {path} is damaged: its {key!r} metadata is not valid JSON ({err})") from None


def read_checkpoint_config(path: str | Path) -> tuple[MerClipConfig, dict]:
    """Return (config, extra); a malformed or ill-shaped config is refused with a one-line MerClipError."""
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
    data = _json_metadata(path, meta, "config")
    extra = _json_metadata(path, meta, "extra", "{}")
    if not isinstance(extra, dict):
        raise MerClipError(f"checkpoint {path} is damaged: its 'extra' metadata must be a JSON object")
    try:
        cfg = MerClipConfig.from_dict(data)
        required = [f.name for f in fields(MerClipConfig) if f.name not in CONFIG_KEYS_ADDED_LATER]
        missing = [key for key in required if key not in data]
        if "mel" in data:
            missing += [f"mel.{f.name}" for f in fields(cfg.mel) if f.name not in data["mel"]]
        if missing:
            raise MerClipError(f"model config lacks {', '.join(missing)}")
    except MerClipError as err:
        raise MerClipError(f"checkpoint {path} has a malformed config: {err}") from None
    if cfg.quick_gelu is None:
        # Written before the activation was recorded: it was built with the architecture's own.
        from .factory import arch_quick_gelu

        cfg = replace(cfg, quick_gelu=arch_quick_gelu(cfg.arch))
    return cfg, extra


def load_checkpoint(path: str | Path, expect: MerClipConfig | None = None) -> tuple[MerClip, dict]:
    """Return (model, extra). With ``expect``, the stored config must equal it (a None in ``expect``'s
    quick_gelu/image_mean/image_std means "whatever the weights use", and decoder_heads 0 "as the text tower":
    both match any stored value)."""
    cfg, extra = read_checkpoint_config(path)
    if expect is not None:
        expect = replace(expect, **{k: getattr(cfg, k) for k in CONFIG_KEYS_ADDED_LATER if getattr(expect, k) is None})
        expect = replace(expect, decoder_heads=expect.decoder_heads or cfg.decoder_heads)
    if expect is not None and expect != cfg:
        diff = [k for k in cfg.to_dict() if cfg.to_dict()[k] != expect.to_dict()[k]]
        hint = ""
        if diff == ["decoder_heads"]:  # a run begun before heads followed the text tower (it has 8)
            hint = f" (it has {cfg.decoder_heads}: set model.decoder_heads = {cfg.decoder_heads} to resume it)"
        raise MerClipError(f"checkpoint {path} does not match the requested model: differs in {', '.join(diff)}{hint}")
    try:
        model = build_model(cfg, weights="random")
    except MerClipError as err:
        raise MerClipError(f"checkpoint {path}: {err}") from None
    except Exception as err:  # a config that parses but describes no buildable model
        raise MerClipError(f"checkpoint {path} has a config this version cannot build ({err})") from None
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
    try:  # written by `merclip calibrate`; absent = uncalibrated
        model.calibration = Calibration.from_dict(extra.get("calibration"))
    except MerClipError as err:
        raise MerClipError(f"checkpoint {path} is damaged: {err}") from None
    model.eval()
    return model, extra
