"""Readings a person can trust, with fixed logits: the zero-shot head can read every emotion low, a
multi-label reading with nothing over threshold is neutral, low confidence is uncertain, the personal
baseline shifts a constant offset to zero, and the display smoothing is a time constant."""

import csv
import math

import numpy as np
import pytest
import torch
from merclip.export.graphs import ZeroShotFuseGraph
from merclip.model.reading import ReadingSetting
from merclip.stream.csvlog import SessionLog, columns
from merclip.stream.readout import Baseline, ReadoutRule, agreement, interpret, read_emotion
from merclip.stream.records import Reading
from merclip.stream.smoothing import Smoother

EMOTIONS = ["happy", "sad", "angry", "surprise", "disgust", "fear"]


def _reading(emotions, t_end=2.0, final=True, sentiment=None, **kw):
    return Reading(0, t_end - 2.0, t_end, "t", emotions, sentiment or {"positive": 0.5, "negative": 0.5}, "", "L",
                   0, 0.0, 0.0, 0.0, final=final, **kw)  # fmt: skip


def test_zero_shot_head_can_read_every_emotion_low(tiny_model):
    dim = tiny_model.arch.embed_dim
    labels = torch.eye(dim)[:7]  # six emotion prompts + the neutral prompt (last), unit-norm
    calm = labels[6:7]  # a face whose embedding matches the neutral prompt
    graph = ZeroShotFuseGraph(tiny_model)
    emo, _ = graph(calm[:, None], torch.zeros(1, 1, dim), torch.zeros(1, 4, dim), torch.ones(1, 4, dtype=torch.bool),
                   torch.zeros(1, dim), torch.tensor([[0.0, 1.0, 0.0]]), torch.zeros(2, dim), labels,
                   torch.eye(dim)[:2])  # fmt: skip
    emo = emo[0].numpy()
    assert emo.sum() == pytest.approx(1.0, abs=1e-5)
    assert (emo[:6] < 0.6).all() and emo[:6].max() < 0.01 and emo[6] > 0.99
    # the old head (z-scores through a sigmoid) could not: whenever the similarities differ, its top
    # label reads >= sigmoid(1/sqrt(K-1)) = 0.61 with K = 6, above the 0.6 threshold
    sims = torch.randn(200, 6)
    z = (sims - sims.mean(1, keepdim=True)) / sims.std(1, keepdim=True, correction=0)
    assert float(torch.sigmoid(z).max(1).values.min()) >= 1 / (1 + math.exp(-1 / math.sqrt(5))) > 0.6
    rule = ReadoutRule(multi_label=False, threshold=0.6)
    assert read_emotion(dict(zip([*EMOTIONS, "neutral"], map(float, emo), strict=True)), rule)[0] == "neutral"


def test_multi_label_below_threshold_reads_neutral(tmp_path):
    probs = {e: p for e, p in zip(EMOTIONS, [0.55, 0.2, 0.1, 0.3, 0.05, 0.1], strict=True)}
    rule = ReadoutRule(multi_label=True, threshold=0.6, neutral="calm")
    assert read_emotion(probs, rule) == ("calm", pytest.approx(0.45))
    assert read_emotion({**probs, "sad": 0.9}, rule) == ("sad", pytest.approx(0.9))
    r = interpret(_reading(probs), rule)
    assert r.top_emotion == "calm" and r.state == "calm" and r.confidence == pytest.approx(0.45)
    assert _reading(probs).top_emotion == "happy"  # no readout rule: the arg-max, as before
    log = SessionLog(tmp_path / "s.csv", EMOTIONS, ["positive", "negative"], ReadingSetting())
    log.write(r)
    log.close()
    row = next(csv.DictReader(open(log.path)))
    assert row["top_emotion"] == "calm" and row["state"] == "calm" and row["emotion_happy"] == "0.5500"
    assert float(row["confidence"]) == pytest.approx(0.45) and row["agreement"] == ""
    assert [row[c] for c in ("reading_context", "window_s", "hop_s", "frames_per_window")] == ["window", "2", "2", "4"]


def test_low_confidence_reads_uncertain():
    rule = ReadoutRule(multi_label=False, uncertain_below=0.4)
    spread = {"neutral": 0.3, "joy": 0.25, "anger": 0.25, "sadness": 0.2}
    r = interpret(_reading(spread), rule)
    assert r.state == "uncertain" and r.top_emotion == "neutral" and r.confidence == pytest.approx(0.3)
    assert interpret(_reading({**spread, "neutral": 0.5, "joy": 0.05}), rule).state == "neutral"
    assert interpret(_reading(spread), ReadoutRule(multi_label=False)).state == "neutral"  # 0 = never uncertain


def test_agreement_of_modalities():
    a, b = {"x": 0.8, "y": 0.2}, {"x": 0.2, "y": 0.8}
    assert agreement([a, a], multi_label=False) == pytest.approx(1.0)
    assert agreement([a, b], multi_label=False) == pytest.approx(0.4)  # TV distance 0.6
    assert agreement([a, b, a], multi_label=True) == pytest.approx(1 - (0.6 + 0 + 0.6) / 3)
    assert math.isnan(agreement([a], multi_label=True))


@pytest.mark.parametrize("multi_label", [True, False])
def test_baseline_shifts_a_constant_offset_to_zero(multi_label):
    rng = np.random.default_rng(0)
    offset = rng.normal(0, 1.5, 6)  # what this person's resting face adds to every label's logit

    def probs(z):
        p = 1 / (1 + np.exp(-z)) if multi_label else np.exp(z) / np.exp(z).sum()
        return dict(zip(EMOTIONS, map(float, p), strict=True))

    rule = ReadoutRule(multi_label=multi_label, threshold=0.6)
    base = Baseline(4.0)
    for t in (2.0, 4.0):  # calibrating: resting face, logits = the offset alone
        r = interpret(_reading(probs(offset), t_end=t), rule, base)
        assert r.calibrating_s == pytest.approx(4.0 - t) and r.adjusted_emotions is None
    signal = np.array([2.0, 0, 0, 0, 0, 0])
    rest = interpret(_reading(probs(offset), t_end=6.0), rule, base)
    moved = interpret(_reading(probs(offset + signal), t_end=8.0), rule, base)
    assert rest.calibrating_s is None
    flat = 0.5 if multi_label else 1 / 6
    assert list(rest.adjusted_emotions.values()) == pytest.approx([flat] * 6, abs=1e-4)
    assert list(moved.adjusted_emotions.values()) == pytest.approx(list(probs(signal).values()), abs=1e-4)
    assert moved.emotions == probs(offset + signal)  # the raw reading is kept
    assert rest.top_emotion == ("neutral" if multi_label else rest.top_emotion)
    assert moved.top_emotion == "happy"


def test_baseline_columns(tmp_path):
    names = columns(["a"], ["p"], adjusted=True)
    assert names[-10:] == ["state", "confidence", "agreement", "reading_context", "window_s", "hop_s",
                           "frames_per_window", "calibrating", "adjusted_emotion_a",
                           "adjusted_sentiment_p"]  # fmt: skip
    log = SessionLog(tmp_path / "b.csv", ["a"], ["p"], ReadingSetting(), adjusted=True)
    rule, base = ReadoutRule(), Baseline(2.0)
    log.write(interpret(_reading({"a": 0.7}, t_end=2.0, sentiment={"p": 1.0}), rule, base))
    log.write(interpret(_reading({"a": 0.7}, t_end=4.0, sentiment={"p": 1.0}), rule, base))
    log.close()
    rows = list(csv.DictReader(open(log.path)))
    assert rows[0]["calibrating"] == "1" and rows[0]["adjusted_emotion_a"] == ""
    assert rows[1]["calibrating"] == "0" and rows[1]["adjusted_emotion_a"] == "0.5000"
    assert rows[1]["emotion_a"] == "0.7000"


def test_smoothing_is_a_time_constant():
    s = Smoother(tau_s=3.0)
    s.update({"x": 0.0}, 0.0)
    assert s.update({"x": 1.0}, 3.0)["x"] == pytest.approx(1 - math.exp(-1))  # 63 % after tau
    fast = Smoother(tau_s=3.0)  # the same 3 s in 1-s windows: the same result
    fast.update({"x": 0.0}, 0.0)
    for t in (1.0, 2.0, 3.0):
        out = fast.update({"x": 1.0}, t)
    assert out["x"] == pytest.approx(1 - math.exp(-1))
    assert Smoother(0.0).update({"x": 0.3}, 0.0) == {"x": 0.3}


def test_zero_shot_bundle_scores_a_neutral_prompt(tiny_model, tmp_path):
    from merclip.export.onnx_export import ExportOptions, export_bundle
    from merclip.export.runtime import Bundle

    export_bundle(tiny_model, ExportOptions(out=tmp_path / "zs", mode="zero-shot", neutral_label="calm"))
    bundle = Bundle.load(tmp_path / "zs", providers="cpu")
    assert bundle.emotion_labels == [*EMOTIONS, "calm"] and not bundle.multi_label
    pred = bundle.predict(text="nothing much")
    assert pred.emotion.shape == (1, 7) and pred.emotion.sum() == pytest.approx(1.0, abs=1e-4)
    bundle.set_labels(emotion=["joy", "anger"])  # new labels keep the neutral prompt
    assert bundle.emotion_labels == ["joy", "anger", "calm"]
    assert bundle.predict(text="nothing much").emotion.shape == (1, 3)


def test_a_window_without_a_reading_inside_the_baseline_period_is_calibrating():
    from merclip.stream.remote import OFFLINE_NOTE

    base, rule = Baseline(10.0), ReadoutRule()
    offline = interpret(_reading({}, t_end=4.0, sentiment={}, notes=(OFFLINE_NOTE,)), rule, base)
    assert offline.calibrating_s == pytest.approx(6.0) and offline.state == OFFLINE_NOTE
    assert not base.ready("emotion")  # nothing to learn the resting state from
    after = interpret(_reading({}, t_end=12.0, sentiment={}, notes=(OFFLINE_NOTE,)), rule, base)
    assert after.calibrating_s is None and after.adjusted_emotions is None
