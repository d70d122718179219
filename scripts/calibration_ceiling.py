"""How low can an accuracy-preserving calibration bring a checkpoint's ECE on a test set?

For each single-label head (MELD emotion, sentiment) this scores a checkpoint on a fitting split and a test
split and prints the test ECE (15 bins) of:
- the raw softmax;
- temperature scaling fitted on the fitting split by NLL (what ``merclip calibrate`` does);
- the *oracle* temperatures, fitted on the test split itself: the NLL-optimal one and the one with the
  lowest test ECE (a grid). No temperature fitted anywhere can beat the second, so when it is above a target
  temperature scaling cannot reach that target on this model;
- two richer calibrators that also keep the arg-max, fitted on the fitting split: a temperature per
  predicted class, and isotonic regression of correctness on the top probability;
- the ECE a perfectly calibrated predictor with the calibrated confidences would score at this n (the floor
  of the measure: ECE is biased upward on a finite set).

Only for research notes (RESULTS.md); the product fits temperature / Platt scaling (``merclip calibrate``).
MELD is GPL: the split folders live under runs/ (scripts/meld_holdout.py), never in the repository.

Usage: python scripts/calibration_ceiling.py CHECKPOINT --fit-root runs/meld-holdout-cal/calibration \
    --fit-split valid --test-root runs/meld-holdout-cal --test-split test
"""

from __future__ import annotations

import argparse
import types

import numpy as np
from merclip.model import load_checkpoint
from merclip.train.calibration import _ece, fit_temperature
from merclip.train.evaluate import _score_checkpoint
from scipy.special import softmax
from sklearn.isotonic import IsotonicRegression

MIN_PER_CLASS = 30  # fewer predictions of a class than this: that class keeps the shared temperature


def _logits(model, root: str, split: str, protocol=None, context=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    args = types.SimpleNamespace(config=None, dataset="meld", data_root=root, allow_partial=False, split=split,
                                 half=None, protocol=protocol, context=context)  # fmt: skip
    _, out, _ = _score_checkpoint(args, model)
    return {task: (out[f"{task}_logits"], out[f"{task}_targets"]) for task in ("emotion", "sentiment")}


def _top_ece(probs: np.ndarray, targets: np.ndarray) -> float:
    return _ece(probs.max(1), probs.argmax(1) == targets)


def _per_class_scales(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    shared, pred = fit_temperature(z, y), z.argmax(1)
    scales = np.full(z.shape[1], shared)
    for k in range(z.shape[1]):
        if (pred == k).sum() >= MIN_PER_CLASS:
            scales[k] = fit_temperature(z[pred == k], y[pred == k])
    return scales


def ceiling(fit: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int = 0) -> dict:
    (zf, yf), (zt, yt) = fit, test
    rng = np.random.default_rng(seed)
    s = fit_temperature(zf, yf)
    p = softmax(zt * s, axis=1)
    grid = np.exp(np.linspace(-1.5, 1.0, 401))
    ece_grid = [_top_ece(softmax(zt * g, axis=1), yt) for g in grid]
    oracle_nll = fit_temperature(zt, yt)
    per_class = _per_class_scales(zf, yf)
    p_class = softmax(zt * per_class[zt.argmax(1)][:, None], axis=1)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip")
    pf = softmax(zf * s, axis=1)
    iso.fit(pf.max(1), pf.argmax(1) == yf)
    confidence = p.max(1)
    floor = np.mean([_ece(confidence, rng.random(len(confidence)) < confidence) for _ in range(500)])
    return {
        "accuracy": float((zt.argmax(1) == yt).mean()),
        "raw": _top_ece(softmax(zt, axis=1), yt),
        "T": 1 / s,
        "ts": _top_ece(p, yt),
        "oracle_nll_T": 1 / oracle_nll,
        "oracle_nll": _top_ece(softmax(zt * oracle_nll, axis=1), yt),
        "oracle_ece_T": 1 / grid[int(np.argmin(ece_grid))],
        "oracle_ece": float(np.min(ece_grid)),
        "per_class": _top_ece(p_class, yt),
        "isotonic": _ece(iso.predict(confidence), p.argmax(1) == yt),
        "floor": float(floor),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--fit-root", required=True, help="folder holding the fitting split's CSV")
    parser.add_argument("--fit-split", default="valid", help="train | valid | test (default valid)")
    parser.add_argument("--test-root", required=True, help="folder holding the test split's CSV")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--protocol", choices=("windows", "clips"), help="as merclip eval (default: the model's)")
    parser.add_argument("--context", choices=("window", "utterance"), help="as merclip eval --context")
    args = parser.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    fit = _logits(model, args.fit_root, args.fit_split, args.protocol, args.context)
    test = _logits(model, args.test_root, args.test_split, args.protocol, args.context)
    print("| task | acc % | raw | T (fit) | TS (fit) | oracle T by NLL | oracle T by ECE | "
          "T per predicted class | isotonic top | floor |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for task in ("emotion", "sentiment"):
        r = ceiling(fit[task], test[task])
        print(f"| {task} | {100 * r['accuracy']:.1f} | {r['raw']:.3f} | {r['T']:.3f} | {r['ts']:.3f} | "
              f"{r['oracle_nll']:.3f} (T {r['oracle_nll_T']:.2f}) | "
              f"{r['oracle_ece']:.3f} (T {r['oracle_ece_T']:.2f}) | {r['per_class']:.3f} | {r['isotonic']:.3f} | "
              f"{r['floor']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
