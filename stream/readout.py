"""What a reading says: an emotion, the neutral state, or "uncertain"; its confidence; the agreement of
the modalities it used; and the personal baseline. Pure numpy, no torch.

Neutral: a single-label head with a neutral class (MELD; zero-shot bundles add a neutral prompt) reads
neutral when that class wins, like any other class. A multi-label head reads neutral when no label
reaches the emotion threshold.

Confidence: single-label, the top probability; multi-label, the top label's probability when it passes
the threshold, else 1 - that probability (how sure the head is that no label applies).

Agreement of modalities: the fusion is run once more per modality present, that modality alone; the
agreement is 1 - the mean, over pairs of modalities, of the total-variation distance between their
emotion readings (single-label: half the L1 distance of the distributions; multi-label: the mean absolute
difference per label). 1 = the face, the voice and the words read the same; empty with one modality.

Personal baseline: over the first S seconds the mean logit per label is collected (logit = log p for a
softmax head, log(p / (1 - p)) for a sigmoid head); afterwards each reading's logits minus that mean go
through the softmax / sigmoid again, so whatever the resting face and voice add to every window is
removed (a constant offset reads as no offset at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

UNCERTAIN = "uncertain"
_EPS = 1e-6


@dataclass(frozen=True)
class ReadoutRule:
    multi_label: bool = True
    threshold: float = 0.6  # multi-label decision threshold (the bundle's, calibrated)
    neutral: str = "neutral"  # the word a multi-label window with no label over threshold reads as
    uncertain_below: float = 0.0  # confidence below which the UI shows "uncertain" (0 = never)


def read_emotion(emotions: dict[str, float], rule: ReadoutRule) -> tuple[str, float]:
    """(the emotion label or the neutral word, confidence); ("", nan) for no reading."""
    if not emotions:
        return "", math.nan
    top = max(emotions, key=emotions.get)
    p = float(emotions[top])
    if not rule.multi_label:
        return top, p
    if p >= rule.threshold:
        return top, p
    return rule.neutral, 1.0 - p


def shown_state(label: str, confidence: float, rule: ReadoutRule) -> str:
    """What the UI names: the label, or "uncertain" below the configured confidence."""
    if label and not math.isnan(confidence) and confidence < rule.uncertain_below:
        return UNCERTAIN
    return label


def agreement(readings: Sequence[dict[str, float]], multi_label: bool) -> float:
    """1 - mean pairwise total-variation distance of per-modality emotion readings; nan below two."""
    if len(readings) < 2:
        return math.nan
    keys = list(readings[0])
    arrays = [np.array([r.get(k, 0.0) for k in keys], float) for r in readings]
    dists = [
        float(np.abs(a - b).mean()) if multi_label else 0.5 * float(np.abs(a - b).sum())
        for a, b in combinations(arrays, 2)
    ]
    return float(np.clip(1.0 - np.mean(dists), 0.0, 1.0))


def _logits(p: np.ndarray, multi_label: bool) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p)) if multi_label else np.log(p)


def _probs(z: np.ndarray, multi_label: bool) -> np.ndarray:
    if multi_label:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z - z.max())
    return e / e.sum()


class Baseline:
    """A person's resting state: the first ``seconds`` of a session, then readings relative to it.

    ``observe`` collects a reading's logits while ``calibrating``; ``adjust`` then reads a reading relative
    to their mean. Per task (emotion, sentiment); a window counts when it ends by ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._keys: dict[str, list[str]] = {}

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def calibrating(self, t_end_s: float) -> bool:
        return self.enabled and t_end_s <= self.seconds

    def remaining_s(self, t_end_s: float) -> float:
        return max(0.0, self.seconds - t_end_s) if self.enabled else 0.0

    def ready(self, task: str) -> bool:
        return self._counts.get(task, 0) > 0

    def observe(self, task: str, values: dict[str, float], multi_label: bool) -> None:
        if not values:
            return
        keys = list(values)
        z = _logits(np.array([values[k] for k in keys], float), multi_label)
        if task not in self._sums or self._keys[task] != keys:
            self._sums[task], self._counts[task], self._keys[task] = np.zeros(len(keys)), 0, keys
        self._sums[task] += z
        self._counts[task] += 1

    def adjust(self, task: str, values: dict[str, float], multi_label: bool) -> dict[str, float]:
        """``values`` relative to the baseline (unchanged when no baseline was collected)."""
        if not values or not self.ready(task) or self._keys[task] != list(values):
            return dict(values)
        keys = list(values)
        z = _logits(np.array([values[k] for k in keys], float), multi_label)
        z = z - self._sums[task] / self._counts[task]
        return dict(zip(keys, map(float, _probs(z, multi_label)), strict=True))


def interpret(reading, rule: ReadoutRule, baseline: Baseline | None = None):
    """A pipeline ``Reading`` with its state, confidence and (with a baseline) adjusted probabilities."""
    from dataclasses import replace

    emotions = reading.emotions
    extra: dict = {}
    if baseline is not None and baseline.enabled:
        if baseline.calibrating(reading.t_end_s):  # by time alone: a window with no reading is in it too
            extra["calibrating_s"] = baseline.remaining_s(reading.t_end_s)
            if reading.final and reading.emotions:
                baseline.observe("emotion", reading.emotions, rule.multi_label)
                baseline.observe("sentiment", reading.sentiment, False)
        elif reading.emotions and baseline.ready("emotion"):
            emotions = baseline.adjust("emotion", reading.emotions, rule.multi_label)
            extra["adjusted_emotions"] = emotions
            extra["adjusted_sentiment"] = baseline.adjust("sentiment", reading.sentiment, False)
    label, confidence = read_emotion(emotions, rule)
    # no reading because the model could not be reached: the state says so (the CSV row is marked)
    state = shown_state(label, confidence, rule) or (reading.notes[0] if reading.notes else "")
    return replace(reading, emotion_state=label, confidence=confidence, state=state, **extra)
