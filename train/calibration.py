"""Calibration: measures (ECE, Brier, NLL), the reliability diagram, and the post-hoc fit.

Single-label (softmax) heads: ECE is the top-label ECE of Guo et al. (2017): 15 equal-width bins over the
top probability, sum over bins of (bin size / n) * |accuracy - mean confidence|; Brier is the multi-class
Brier score, mean over samples of sum_k (p_k - y_k)^2; NLL is the mean of -log p_true.
Multi-label (sigmoid) heads: every (sample, label) pair is one binary prediction; ECE bins the label
probabilities and compares their mean with the fraction of positives; Brier is the per-sample sum over
labels of (p - y)^2 and NLL the per-sample sum of binary cross-entropies, both averaged over samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax, softmax

BINS = 15
EPS = 1e-12


def _ece(confidence: np.ndarray, outcome: np.ndarray, bins: int = BINS) -> float:
    confidence, outcome = np.asarray(confidence, float).ravel(), np.asarray(outcome, float).ravel()
    if not len(confidence):
        return float("nan")
    # equal-width bins (0, 1/B], ..., ((B-1)/B, 1]; a probability of exactly 0 goes in the first
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(outcome[mask].mean() - confidence[mask].mean())
    return float(total)


def single_label_calibration(probs: np.ndarray, targets: np.ndarray, bins: int = BINS) -> dict[str, float]:
    """probs (N, K) rows summing to 1, targets (N,) class indices."""
    probs, targets = np.asarray(probs, float), np.asarray(targets, int)
    onehot = np.eye(probs.shape[1])[targets]
    correct = probs.argmax(1) == targets
    return {
        "ece": _ece(probs.max(1), correct, bins),
        "brier": float(((probs - onehot) ** 2).sum(1).mean()),
        "nll": float(-np.log(np.clip(probs[np.arange(len(targets)), targets], EPS, 1.0)).mean()),
        "confidence": float(probs.max(1).mean()),
        "accuracy": float(correct.mean()),
    }


def multi_label_calibration(probs: np.ndarray, targets: np.ndarray, bins: int = BINS) -> dict[str, float]:
    """probs (N, K) independent label probabilities, targets (N, K) in {0, 1}."""
    p, y = np.clip(np.asarray(probs, float), EPS, 1 - EPS), (np.asarray(targets) > 0).astype(float)
    return {
        "ece": _ece(p, y, bins),
        "brier": float(((p - y) ** 2).sum(1).mean()),
        "nll": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(1).mean()),
        "confidence": float(np.maximum(p, 1 - p).mean()),
        "accuracy": float(((p >= 0.5) == (y > 0)).mean()),
    }


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The scale s = 1/T minimising the NLL of softmax(logits * s): a 1-D search over log s."""
    logits, targets = np.asarray(logits, float), np.asarray(targets, int)
    rows = np.arange(len(targets))

    def nll(log_s: float) -> float:
        return float(-log_softmax(logits * np.exp(log_s), axis=1)[rows, targets].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded").x))


def fit_platt(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """(scale, bias) minimising the BCE of sigmoid(logits * scale + bias), one pair for all labels."""
    z, y = np.asarray(logits, float).ravel(), (np.asarray(targets) > 0).astype(float).ravel()

    def loss(params: np.ndarray) -> float:
        a = z * np.exp(params[0]) + params[1]
        return float((np.logaddexp(0.0, a) - y * a).mean())

    res = minimize(loss, np.zeros(2), method="L-BFGS-B")
    return float(np.exp(res.x[0])), float(res.x[1])


def calibrated(logits: np.ndarray, multi_label: bool, scale: float = 1.0, bias: float = 0.0) -> np.ndarray:
    z = np.asarray(logits, float) * scale + bias
    return expit(z) if multi_label else softmax(z, axis=1)


def reliability_bins(confidence: np.ndarray, outcome: np.ndarray, bins: int = BINS):
    confidence, outcome = np.asarray(confidence, float).ravel(), np.asarray(outcome, float).ravel()
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append(((b + 0.5) / bins, confidence[mask].mean(), outcome[mask].mean(), int(mask.sum())))
    return rows


def plot_reliability(panels: list[tuple[str, np.ndarray, np.ndarray]], path: str | Path, bins: int = BINS) -> None:
    """One panel per (title, confidence, outcome): observed frequency vs mean confidence per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, confidence, outcome) in zip(axes[0], panels, strict=True):
        rows = reliability_bins(confidence, outcome, bins)
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect")
        if rows:
            centre, conf, freq, count = map(np.array, zip(*rows, strict=True))
            ax.bar(centre, freq, width=1 / bins, edgecolor="black", alpha=0.6, label="observed")
            ax.plot(conf, freq, "o-", color="C3", ms=3, label="observed at the bin's mean confidence")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed frequency",
               title=f"{title}\nECE {_ece(confidence, outcome, bins):.3f}")  # fmt: skip
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
