"""The research scripts behind RESULTS.md: the MELD hold-out keeps whole dialogues apart, the
calibration ceiling finds the temperature that synthetic logits were drawn with, and the reading ceiling
scores windows as eval does and gives each window its own utterance's whole reading."""

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


EMOTIONS = ("neutral", "joy", "anger", "sadness")
SENTIMENTS = ("neutral", "positive", "negative", "negative")
TEXT = "so what did you say {}"
CUES = ("okay fine whatever then", "wonderful great lovely happy", "hate you get out", "miss her so sad")


def _meld_test_split(root: Path, spans_s: list[float]) -> Path:
    """A MELD test CSV whose utterances last ``spans_s`` seconds (nine words each, spread over the span); the
    emotion of utterance i is ``EMOTIONS[i % 4]``, told by its last words."""
    root.mkdir(parents=True)
    with open(root / "test_sent_emo.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
                    "Season", "Episode", "StartTime", "EndTime"])  # fmt: skip
        for i, span in enumerate(spans_s):
            end_ms = 1000 + round(span * 1000)
            end = f"00:00:{end_ms // 1000:02d},{end_ms % 1000:03d}"
            w.writerow([i, TEXT.format(CUES[i % 4]), "Ross", EMOTIONS[i % 4], SENTIMENTS[i % 4], i, 0, 1, 1,
                        "00:00:01,000", end])  # fmt: skip
    return root


def test_reading_ceiling_scores_windows_as_eval_does_and_whole_utterances_per_window(tmp_path, tokenizer):
    import types

    import torch
    from merclip.model import MerClipConfig, build_model, build_prompts
    from merclip.model.reading import ReadingSetting
    from merclip.train.datasets import MELD_EMOTIONS, MELD_SENTIMENTS
    from merclip.train.evaluate import _score_checkpoint

    script = _load("reading_ceiling")
    torch.manual_seed(0)
    model = build_model(MerClipConfig(arch="tiny", modalities="L", emotion_mode="single_label",
                                      emotion_labels=MELD_EMOTIONS, sentiment_labels=MELD_SENTIMENTS,
                                      reading=ReadingSetting(context="utterance")))  # fmt: skip
    # a few steps on the four cues, so that its readings depend on the words (a random tiny model reads every
    # text alike, and would hide a window scored against another utterance's reading)
    prompts, ids = build_prompts(model.cfg, tokenizer), torch.from_numpy(tokenizer([TEXT.format(c) for c in CUES]))
    target = torch.tensor([MELD_EMOTIONS.index(e) for e in EMOTIONS])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):  # until the four are learnt: 40 steps were enough on one CPU, not on another
        loss = torch.nn.functional.cross_entropy(model(text=ids, prompts=prompts).emotion_logits, target)
        if loss.item() < 0.02:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(text=ids, prompts=prompts).emotion_logits.argmax(-1) == target).all()
    # long utterances (5.5 s: three windows, the first two holding its beginning) among short ones
    long = _meld_test_split(tmp_path / "long", [1.2, 5.5, 1.5, 5.5, 1.8, 5.5, 0.9, 5.5] * 3)
    rows = script.ceiling(model, str(long), "test")
    held, beginning = rows["windows holding the whole utterance"], rows["windows holding its beginning only"]
    assert (rows["as read"]["n"], held["n"], beginning["n"]) == (48, 12 + 12, 24)
    args = types.SimpleNamespace(config=None, dataset="meld", data_root=str(long), allow_partial=False,
                                 split="test", half=None, protocol="windows", context=None)  # fmt: skip
    metrics = _score_checkpoint(args, model)[0]
    assert rows["as read"]["emotion"] == pytest.approx(100 * metrics["weighted_f1"])
    assert rows["as read"]["sentiment"] == pytest.approx(100 * metrics["sentiment_weighted_f1"])
    # where every window's reading already holds its whole utterance, the ceiling is what the windows read
    short = _meld_test_split(tmp_path / "short", [1.2, 1.5, 1.8, 0.9] * 6)
    rows = script.ceiling(model, str(short), "test")
    assert rows["windows holding its beginning only"]["n"] == 0 and rows["as read"]["emotion"] > 90
    for task in ("emotion", "sentiment"):
        assert rows["whole utterance on every window"][task] == pytest.approx(rows["as read"][task])


def test_reading_ceiling_of_a_baseline_scores_windows_as_eval_does(tmp_path, capsys):
    """The TF-IDF rows: fitted on the train split's whole clips, its windows the ones `merclip eval --baseline
    tfidf --protocol windows` scores; the beginnings (the same first words in every line) read worse than the
    windows holding the whole utterance, whose last words tell the emotion."""
    import json
    import shutil

    from merclip.cli import main

    script = _load("reading_ceiling")
    long = _meld_test_split(tmp_path / "long", [1.2, 5.5, 1.5, 5.5, 1.8, 5.5, 0.9, 5.5] * 3)
    shutil.copyfile(long / "test_sent_emo.csv", long / "train_sent_emo.csv")
    rows = script.baseline_ceiling("tfidf", str(long), "test")
    held, beginning = rows["windows holding the whole utterance"], rows["windows holding its beginning only"]
    assert (rows["as read"]["n"], held["n"], beginning["n"]) == (48, 24, 24)
    assert held["emotion"] == 100.0 and beginning["emotion"] < 90  # the first windows hold no cue word
    assert rows["whole utterance on every window"]["emotion"] == 100.0
    out = tmp_path / "m.json"
    assert main(["eval", "--baseline", "tfidf", "--dataset", "meld", "--data-root", str(long), "--split", "test",
                 "--protocol", "windows", "--json", str(out)]) == 0  # fmt: skip
    metrics = json.loads(out.read_text())
    assert rows["as read"]["emotion"] == pytest.approx(100 * metrics["weighted_f1"])
    assert rows["as read"]["sentiment"] == pytest.approx(100 * metrics["sentiment_weighted_f1"])
