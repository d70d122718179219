"""Evaluation metrics (paper §4.1), pure numpy.

Multi-label emotion (CMU-MOSEI): accuracy = sample-wise Jaccard |pred ∩ true| / |pred ∪ true| (as in
TAILOR/HHMPN; a sample with both sets empty counts 1), micro precision/recall/F1.
Sentiment: ACC2 and F1 over non-neutral samples (score != 0), positive vs negative.
Single-label (MELD): accuracy and support-weighted F1.
"""

from __future__ import annotations

import numpy as np


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    inter = (y_true & y_pred).sum(axis=1)
    union = (y_true | y_pred).sum(axis=1)
    jaccard = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    tp = float((y_true & y_pred).sum())
    precision = _safe_div(tp, y_pred.sum())
    recall = _safe_div(tp, y_true.sum())
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"accuracy": float(jaccard.mean()), "precision": precision, "recall": recall, "micro_f1": f1}


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray, positive=1) -> float:
    tp = float(((y_pred == positive) & (y_true == positive)).sum())
    precision = _safe_div(tp, (y_pred == positive).sum())
    recall = _safe_div(tp, (y_true == positive).sum())
    return _safe_div(2 * precision * recall, precision + recall)


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    total = 0.0
    for label in np.unique(y_true):
        total += binary_f1(y_true, y_pred, label) * (y_true == label).sum()
    return _safe_div(total, len(y_true))


def sentiment_metrics(scores: np.ndarray, positive_prob: np.ndarray) -> dict[str, float]:
    """``scores``: continuous sentiment (-3..3) or ±1; neutral (0) samples are left out (paper §4.1).
    ``positive_prob``: the model's probability of 'positive'."""
    scores = np.asarray(scores, float)
    keep = scores != 0
    y_true = (scores[keep] > 0).astype(int)
    y_pred = (np.asarray(positive_prob)[keep] >= 0.5).astype(int)
    if not len(y_true):
        return {"acc2": 0.0, "f1": 0.0, "n": 0}
    # F1 as the field reports it for ACC2: support-weighted over the two classes
    return {"acc2": float((y_true == y_pred).mean()), "f1": weighted_f1(y_true, y_pred), "n": int(keep.sum())}


def single_label_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {"accuracy": float((y_true == y_pred).mean()), "weighted_f1": weighted_f1(y_true, y_pred)}
