"""Distillation from earlier runs (``--teachers``): each training sample is also taught the teachers' mean
reading of it, softened by a temperature (Hinton et al., 2015). Several runs of other seeds read the
monitor's windows better than one (RESULTS.md, "Several runs"); taught by them, one model of the same
size keeps part of that at one model's cost live."""

from __future__ import annotations

from pathlib import Path

import torch
from merclip.model import MerClip, load_checkpoint

from merclip.errors import MerClipError

from .losses import teacher_targets
from .outputs import _short

# What a teacher must share with the run it teaches: the same inputs (model, modalities, pictures, reading
# context, frames) mean the same samples, the same label sets mean the same classes in the same order.
SHARED = ("arch", "modalities", "emotion_mode", "emotion_labels", "sentiment_labels", "text_context_length", "face")


def load_teachers(paths: tuple[str, ...], student: MerClip, device: torch.device) -> list[MerClip]:
    """The teachers, frozen, in eval mode on ``device``; one that reads otherwise than ``student`` is refused
    naming what differs."""
    teachers = []
    for path in paths:
        if not Path(path).expanduser().is_file():
            raise MerClipError(f"teacher not found: {path} (--teachers takes trained checkpoints, e.g. "
                               "runs/seed-1/best.safetensors)")  # fmt: skip
        teacher, _ = load_checkpoint(Path(path).expanduser())
        for key in SHARED:
            mine, theirs = getattr(student.cfg, key), getattr(teacher.cfg, key)
            if mine != theirs:
                raise MerClipError(f"teacher {_short(path)} has {key} {theirs!r}, this run {mine!r}: a teacher must "
                                   "read the samples this run trains on as this run reads them")  # fmt: skip
        mine, theirs = _reading(student), _reading(teacher)
        if mine != theirs:
            raise MerClipError(f"teacher {_short(path)} was trained to read {theirs}, this run {mine}: a teacher "
                               "must read the samples this run trains on as this run reads them")  # fmt: skip
        teacher.requires_grad_(False)
        teachers.append(teacher.to(device).eval())
    return teachers


def _reading(model: MerClip) -> str:
    setting = model.cfg.reading
    return "whole clips" if setting is None else setting.describe()


class TaughtTargets:
    """The teachers' mean softened reading of each training sample (``losses.teacher_targets``), kept after
    it is first read: a batch's ``index`` names samples that are the same in every epoch, so later epochs
    reuse their reading instead of running every teacher again — their forward passes were most of a taught
    epoch's time. A batch without one (views drawn anew each epoch, ``train.samples = "views"``) is read
    every time."""

    def __init__(self, teachers: list, forward, multi_label: bool, temperature: float, n_samples: int):
        self.teachers, self.forward = teachers, forward  # teachers: (model, label prompts) pairs
        self.multi_label, self.temperature = multi_label, temperature
        self.known = torch.zeros(n_samples, dtype=torch.bool)
        self.kept: dict[str, torch.Tensor] = {}

    def __call__(self, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        index = batch.get("index")
        if index is not None and bool(self.known[index].all()):
            return {head: kept[index].to(device) for head, kept in self.kept.items()}
        with torch.no_grad():
            read = [self.forward(model, batch, prompts) for model, prompts in self.teachers]
            targets = teacher_targets(read, self.multi_label, self.temperature)
        if index is not None:
            for head, target in targets.items():
                kept = self.kept.setdefault(head, torch.zeros(len(self.known), target.shape[-1]))
                kept[index] = target.detach().float().cpu()
            self.known[index] = True
        return targets
