"""The research scripts behind RESULTS.md: the MELD hold-out keeps whole dialogues apart, and the
calibration ceiling finds the temperature that synthetic logits were drawn with."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_meld_holdout_keeps_dialogues_whole(tmp_path):
    holdout = _load("meld_holdout")
    src = tmp_path / "meld"
    src.mkdir()
    with open(src / "train_sent_emo.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Sr No.", "Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"])
        for d in range(16):
            for u in range(3):
                w.writerow([d * 3 + u, f"line {d}-{u}", "neutral", "neutral", d, u])
    counts = holdout.split_train(src, tmp_path / "out", calibration=True)
    assert counts == {"train": 30, "test": 12, "calibration/dev": 6}
    dialogues = {
        name: {int(r["Dialogue_ID"]) for r in _read(tmp_path / "out" / f"{name}_sent_emo.csv")}
        for name in ("train", "test", "calibration/dev")
    }
    assert dialogues["test"] == {3, 7, 11, 15}
    assert dialogues["calibration/dev"] == {1, 9}
    assert not (dialogues["train"] & dialogues["test"]) and not (dialogues["train"] & dialogues["calibration/dev"])


def test_calibration_ceiling_recovers_the_true_temperature():
    ceiling = _load("calibration_ceiling")
    rng = np.random.default_rng(0)

    def draw(n):  # labels drawn from softmax(z / 2): the calibrated temperature is 2
        z = rng.normal(0, 3, (n, 5))
        p = softmax(z / 2, axis=1)
        y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
        return z, y

    r = ceiling.ceiling(draw(4000), draw(4000))
    assert r["T"] == pytest.approx(2.0, rel=0.1)
    assert r["oracle_nll_T"] == pytest.approx(2.0, rel=0.1)
    assert r["raw"] > 0.1  # T = 1 is over-confident on these logits
    assert r["ts"] < 0.03 and r["oracle_ece"] <= r["ts"] + 1e-12
    assert r["floor"] < 0.03
