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


def distill_loss(student, teachers: list, multi_label: bool, temperature: float, task: str = "both") -> torch.Tensor:
    """T² × the divergence of the student's softened readings from the teachers' mean (per head, summed as
    the label losses are). ``student``/``teachers``: model outputs of the same batch."""
    t = temperature
    losses = []

    def soft(logits_of, single: bool):
        z = [logits_of(o).float() / t for o in teachers]
        return torch.stack([F.softmax(x, -1) if single else torch.sigmoid(x) for x in z]).mean(0)

    if task in ("both", "emotion"):
        target = soft(lambda o: o.emotion_logits, not multi_label)
        z = student.emotion_logits.float() / t
        if multi_label:
            losses.append(F.binary_cross_entropy_with_logits(z, target) - F.binary_cross_entropy(target, target))
        else:
            losses.append(F.kl_div(F.log_softmax(z, -1), target, reduction="batchmean"))
    if task in ("both", "sentiment"):
        target = soft(lambda o: o.sentiment_logits, True)
        losses.append(F.kl_div(F.log_softmax(student.sentiment_logits.float() / t, -1), target, reduction="batchmean"))
    return t * t * sum(losses)
