"""The training losses: the labels' (cross-entropies with label smoothing, BCE over annotated clips) and the
teachers' (distillation, ``--teachers``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from merclip.model import MerClip

from .data import IGNORE


def compute_loss(model: MerClip, out, batch: dict, task: str, smoothing: float = 0.0) -> torch.Tensor:
    """The training loss; ``smoothing``: label smoothing of the single-label cross-entropies (training only:
    validation reports the plain loss)."""
    losses = []
    if task in ("both", "emotion"):
        if model.cfg.emotion_mode == "single_label":
            if (batch["emotion"] != IGNORE).any():
                losses.append(
                    F.cross_entropy(
                        out.emotion_logits, batch["emotion"], ignore_index=IGNORE, label_smoothing=smoothing
                    )
                )
        else:
            # only annotated clips: an unannotated one (MOSI, an unverified MOSEI row) is not "no emotion"
            keep = batch.get("has_emotion")
            keep = (
                torch.ones(len(batch["emotion"]), dtype=torch.bool, device=out.emotion_logits.device)
                if keep is None
                else keep
            )
            if keep.any():
                losses.append(F.binary_cross_entropy_with_logits(out.emotion_logits[keep], batch["emotion"][keep]))
    if task in ("both", "sentiment") and (batch["sentiment"] != IGNORE).any():
        losses.append(
            F.cross_entropy(out.sentiment_logits, batch["sentiment"], ignore_index=IGNORE, label_smoothing=smoothing)
        )
    if not losses:
        return out.emotion_logits.sum() * 0
    return sum(losses)


def teacher_targets(teachers: list, multi_label: bool, temperature: float) -> dict[str, torch.Tensor]:
    """The teachers' mean softened reading of a batch, per head (``teachers``: their model outputs)."""

    def soft(logits: list[torch.Tensor], single: bool) -> torch.Tensor:
        z = [x.float() / temperature for x in logits]
        return torch.stack([F.softmax(x, -1) if single else torch.sigmoid(x) for x in z]).mean(0)

    return {
        "emotion": soft([o.emotion_logits for o in teachers], not multi_label),
        "sentiment": soft([o.sentiment_logits for o in teachers], True),
    }


def distill_loss(student, targets: dict, multi_label: bool, temperature: float, task: str = "both") -> torch.Tensor:
    """T² × the divergence of the student's softened readings from the teachers' mean (``targets``:
    ``teacher_targets`` of the same batch), per head, summed as the label losses are."""
    t = temperature
    losses = []
    if task in ("both", "emotion"):
        target = targets["emotion"]
        z = student.emotion_logits.float() / t
        if multi_label:
            losses.append(F.binary_cross_entropy_with_logits(z, target) - F.binary_cross_entropy(target, target))
        else:
            losses.append(F.kl_div(F.log_softmax(z, -1), target, reduction="batchmean"))
    if task in ("both", "sentiment"):
        target = targets["sentiment"]
        losses.append(F.kl_div(F.log_softmax(student.sentiment_logits.float() / t, -1), target, reduction="batchmean"))
    return t * t * sum(losses)
