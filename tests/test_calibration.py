"""Calibration measures against hand-computed values and scikit-learn; the fit keeps the arg-max; the
calibration travels in the checkpoint and the bundle, whose outputs are the calibrated probabilities."""

import copy
import json

import numpy as np
import pytest
import torch
from merclip.model import load_checkpoint, save_checkpoint
from merclip.model.config import Calibration
from merclip.train.calibration import (
    _ece,
    calibrated,
    fit_platt,
    fit_temperature,
    multi_label_calibration,
    single_label_calibration,
)
from sklearn.metrics import brier_score_loss, log_loss

from merclip.errors import MerClipError


def test_single_label_measures_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.05, 0.05, 0.9], [0.4, 0.35, 0.25]])
    y = np.array([0, 2, 2, 1])
    m = single_label_calibration(probs, y, bins=15)
    # top confidences 0.7 (right), 0.5 (wrong), 0.9 (right), 0.4 (wrong): bins 10, 7, 13, 5 -> one each
    assert m["ece"] == pytest.approx((0.3 + 0.5 + 0.1 + 0.4) / 4)
    brier = [
        (0.3**2 + 0.2**2 + 0.1**2),
        (0.2**2 + 0.5**2 + 0.7**2),
        (0.05**2 * 2 + 0.1**2),
        (0.4**2 + 0.65**2 + 0.25**2),
    ]
    assert m["brier"] == pytest.approx(np.mean(brier))
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.9, 0.35])))
    assert m["nll"] == pytest.approx(log_loss(y, probs, labels=[0, 1, 2]))
    assert m["accuracy"] == 0.5 and m["confidence"] == pytest.approx(0.625)


def test_shared_bin_and_multi_label_measures():
    # two confidences in one bin: |mean outcome - mean confidence| weighted by the bin's share
    assert _ece(np.array([0.61, 0.65, 0.95]), np.array([1, 0, 1]), bins=15) == pytest.approx(
        2 / 3 * abs(0.5 - 0.63) + 1 / 3 * 0.05
    )
    rng = np.random.default_rng(0)
    p, y = rng.uniform(0.01, 0.99, (50, 4)), rng.integers(0, 2, (50, 4))
    m = multi_label_calibration(p, y)
    assert m["brier"] == pytest.approx(4 * brier_score_loss(y.ravel(), p.ravel()))
    assert m["nll"] == pytest.approx(4 * log_loss(y.ravel(), p.ravel()))


def test_temperature_fit_recovers_t_and_keeps_argmax():
    rng = np.random.default_rng(1)
    true = rng.normal(0, 2, (4000, 5))
    y = np.array([rng.choice(5, p=row) for row in calibrated(true, False)])
    over = true * 2.5  # an over-confident model: logits 2.5x too large
    scale = fit_temperature(over, y)
    assert scale == pytest.approx(1 / 2.5, rel=0.1)
    before, after = calibrated(over, False), calibrated(over, False, scale)
    assert (before.argmax(1) == after.argmax(1)).all()
    assert single_label_calibration(after, y)["ece"] < single_label_calibration(before, y)["ece"]
    assert single_label_calibration(after, y)["ece"] < 0.03


def test_platt_fit_and_threshold_keep_the_decisions():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, (3000, 6))
    y = rng.uniform(size=z.shape) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.5, rel=0.15) and b == pytest.approx(-1.0, abs=0.15)
    cal = Calibration(emotion_scale=a, emotion_bias=b)
    raw, after = calibrated(z, True), calibrated(z, True, a, b)
    assert ((raw >= 0.6) == (after >= cal.map_threshold(0.6))).all()
    assert multi_label_calibration(after, y)["ece"] < multi_label_calibration(raw, y)["ece"]


def test_calibration_values_are_checked():
    assert Calibration.from_dict(None).identity
    with pytest.raises(MerClipError):
        Calibration.from_dict({"sentiment_scale": -1})
    with pytest.raises(MerClipError):
        Calibration.from_dict({"emotion_scale": "hot"})


def test_checkpoint_and_bundle_carry_the_calibration(tiny_model, tiny_prompts, tokenizer, tmp_path):
    from merclip.export.onnx_export import ExportOptions, export_bundle
    from merclip.export.runtime import Bundle

    model = copy.deepcopy(tiny_model)
    model.calibration = Calibration(emotion_scale=0.5, emotion_bias=-0.2, sentiment_scale=0.7)
    save_checkpoint(model, tmp_path / "c.safetensors", extra={"calibration": model.calibration.to_dict()})
    loaded, _ = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded.calibration == model.calibration
    text = torch.from_numpy(tokenizer(["what a day", "fine"], context_length=model.cfg.text_context_length))
    with torch.no_grad():
        raw = tiny_model(text=text, prompts=tiny_prompts)
        cal = loaded(text=text, prompts=tiny_prompts)
    assert torch.equal(raw.emotion_logits, cal.emotion_logits)
    expect = torch.sigmoid(raw.emotion_logits * 0.5 - 0.2)
    assert torch.allclose(cal.emotion_probs, expect, atol=1e-6)
    assert (cal.sentiment_probs.argmax(1) == raw.sentiment_probs.argmax(1)).all()
    export_bundle(loaded, ExportOptions(out=tmp_path / "b"))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["calibration"] == loaded.calibration.to_dict()
    assert manifest["thresholds"]["emotion"] == pytest.approx(loaded.calibration.map_threshold(0.6))
    bundle = Bundle.load(tmp_path / "b", providers="cpu")
    got = bundle.predict(text="what a day")
    assert np.allclose(got.emotion, cal.emotion_probs[:1].numpy(), atol=1e-4)
    assert np.allclose(got.sentiment, cal.sentiment_probs[:1].numpy(), atol=1e-4)
