"""`merclip calibrate`: a checkpoint scored on a split (as `merclip eval` scores it), temperature / Platt scaling
fitted on the raw scores (calibration.py) and stored in the checkpoint."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from merclip.config import load_config
from merclip.errors import MerClipError

from .evaluate import _score_checkpoint
from .outputs import _check_output_file, _is_checkpoint, _short

console = Console(stderr=True, soft_wrap=True)


def cmd_calibrate(args) -> int:
    """Fit temperature (single-label heads) / Platt scaling (multi-label emotion) on a split; store it."""
    from merclip.model import load_checkpoint, save_checkpoint
    from merclip.model.merclip import Calibration

    from .calibration import fit_platt, fit_temperature

    out = Path(args.out or args.checkpoint).expanduser()
    if out.is_dir():
        raise MerClipError(f"--out {out} is a folder: give a checkpoint file name")
    # before the scoring: a folder that cannot take it, or a user's other file in the way, is said now
    _check_output_file(str(out), "--out", _is_checkpoint, "a MER-CLIP checkpoint")
    model, extra = load_checkpoint(args.checkpoint)
    model.calibration = Calibration()  # fit on the raw logits
    _, outputs, title = _score_checkpoint(args, model)
    values = Calibration().to_dict()
    if len(outputs["emotion_targets"]):
        if outputs["multi_label"]:
            values["emotion_scale"], values["emotion_bias"] = fit_platt(outputs["emotion_logits"],
                                                                        outputs["emotion_targets"])  # fmt: skip
        else:
            values["emotion_scale"] = fit_temperature(outputs["emotion_logits"], outputs["emotion_targets"])
    if len(outputs["sentiment_targets"]):
        values["sentiment_scale"] = fit_temperature(outputs["sentiment_logits"], outputs["sentiment_targets"])
    cal = Calibration.from_dict(values)
    extra = dict(extra, calibration={**cal.to_dict(), "fitted_on": title})
    model.calibration = cal
    try:
        save_checkpoint(model, out, extra=extra)
    except Exception as err:  # OSError, or safetensors' own error for a full or read-only disk
        raise MerClipError(f"cannot write --out {_short(str(out))}: {str(err).splitlines()[0]}") from None
    temps = f"emotion T {1 / cal.emotion_scale:.3f}" + (
        f" bias {cal.emotion_bias:+.3f}" if outputs["multi_label"] else ""
    )
    console.print(f"calibrated on {title}: {temps}, sentiment T {1 / cal.sentiment_scale:.3f} -> {out}")
    if outputs["multi_label"]:
        threshold = load_config(args.config).labels.emotion_threshold
        console.print(
            f"emotion threshold {threshold} on the raw sigmoid = {cal.map_threshold(threshold):.3f} calibrated"
        )
    return 0
