"""The paper's recipe, reproducible: masked audio, the task a dataset supports, selection by its metric,
the verified MOSEI label join, complete splits, and `--recipe paper`."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from media_util import write_video

from merclip.errors import MerClipError

MERCLIP = [sys.executable, "-m", "merclip.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

ROOT = Path(__file__).resolve().parents[1]


# ---- masked audio ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attend", ["tokens", "pooled"])
def test_a_clip_scores_the_same_alone_and_beside_a_longer_clip(tokenizer, attend):
    from merclip.model import MerClipConfig, build_model, build_prompts
    from merclip.train.data import Collate

    torch.manual_seed(0)
    model = build_model(MerClipConfig(attend=attend)).eval()
    prompts = build_prompts(model.cfg, tokenizer)
    rng = np.random.default_rng(0)
    short = {"frames": rng.integers(0, 255, (2, 224, 224, 3), dtype=np.uint8), "text": "what a day",
             "audio": (0.1 * rng.standard_normal(int(16000 * 2.5))).astype(np.float32)}  # fmt: skip
    long = {"frames": rng.integers(0, 255, (2, 224, 224, 3), dtype=np.uint8), "text": "i lost my keys again",
            "audio": (0.1 * rng.standard_normal(16000 * 7)).astype(np.float32)}  # fmt: skip
    targets = {"emotion": np.zeros(6, np.float32), "sentiment": 0, "score": 1.0}
    collate = Collate(tokenizer, model.arch.image_mean, model.arch.image_std, False, trim=True)

    def run(items):
        b = collate([it | targets for it in items])
        assert b["audio_lengths"].tolist() == [len(it["audio"]) for it in items]
        with torch.no_grad():
            out = model(frames=b["frames"], audio=b["audio"], text=b["text"], prompts=prompts,
                        audio_lengths=b["audio_lengths"])  # fmt: skip
        return out.emotion_probs[0], out.sentiment_probs[0]

    alone, beside = run([short]), run([short, long])
    for a, b in zip(alone, beside, strict=True):
        assert (a - b).abs().max() <= 1e-5
    # without the lengths the padding segments would change the reading: the test can tell
    b = collate([short | targets, long | targets])
    with torch.no_grad():
        unmasked = model(frames=b["frames"], audio=b["audio"], text=b["text"], prompts=prompts)
    assert (unmasked.emotion_probs[0] - alone[0]).abs().max() > 1e-5


# ---- MMSA miniatures in the real layouts ---------------------------------------------------------------------
def _mmsa(root, rows, videos=True):
    """``label.csv`` (video_id, clip_id, text, label, mode, ...) + ``Raw/<video>/<clip>.mp4``."""
    root.mkdir(parents=True)
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"])
        for vid, clip, text, score, mode in rows:
            w.writerow([vid, clip, text, score, score, score, score, "Positive" if score > 0 else "Negative", mode])
    if videos:
        for vid, clip, *_ in rows:
            write_video(root / "Raw" / vid / f"{clip}.mp4")


def _csd(path, segments):
    """CMU-MultimodalSDK's own .csd (HDF5): <name>/data/<video>/{features,intervals} + <name>/metadata."""
    import h5py

    with h5py.File(path, "w") as f:
        top = f.create_group("All Labels")
        data = top.create_group("data")
        for vid, rows in segments.items():
            g = data.create_group(vid)
            g.create_dataset("features", data=np.array([r[1] for r in rows], np.float32))
            g.create_dataset("intervals", data=np.array([r[0] for r in rows], np.float64))
        meta = top.create_group("metadata")
        for key, value in (("root name", "All Labels"), ("computational sequence version", "1.0")):
            meta.create_dataset(key, data=value)


MOSEI_ROWS = [("vidA", 0, "i love it", 2.0, "train"), ("vidA", 1, "awful day", -1.5, "valid"),
              ("vidA", 3, "fine", 0.3333, "train"), ("vidB", 0, "okay", 0.6667, "test"),
              ("vidB", 1, "so sad", -2.0, "train")]  # fmt: skip
# per video: (interval, [sentiment, happy, sad, anger, surprise, disgust, fear]), written out of order
MOSEI_CSD = {
    "vidA": [((9.0, 12.0), [0.33333, 0, 0, 0, 1, 0, 0]), ((0.0, 4.0), [2.0, 1, 0, 0, 0, 0, 0]),
             ((4.0, 9.0), [-1.5, 0, 2, 1, 0, 0, 0])],
    "vidB": [((3.0, 6.0), [-2.0, 0, 3, 0, 0, 0, 0.5]), ((0.0, 3.0), [0.66667, 0.5, 0, 0, 0, 0, 0])],
}  # fmt: skip


def test_correct_csd_joins_every_clip(tmp_path):
    from merclip.train.datasets import read_mmsa_joined

    _mmsa(tmp_path / "M", MOSEI_ROWS, videos=False)
    _csd(tmp_path / "M" / "CMU_MOSEI_Labels.csd", MOSEI_CSD)
    clips, report = read_mmsa_joined(tmp_path / "M", "mosei")
    assert (report.matched, report.mismatched, report.missing) == (5, 0, 0)
    report.require()
    by = {c.clip_id: c for c in clips}
    # vidA's clips 0, 1, 3 are its segments in interval order; clip 3 is the third (a gap in clip_ids)
    assert by["vidA_0"].emotions["happy"] == 1 and by["vidA_1"].emotions["sad"] == 2
    assert by["vidA_3"].emotions["surprise"] == 1 and by["vidB_1"].emotions["fear"] == 0.5
    assert "5 of 5 clips matched (100.0 %)" in report.summary()


def test_shuffled_or_missing_csd_is_refused(tmp_path):
    from merclip.train.datasets import read_mmsa_joined

    _mmsa(tmp_path / "M", MOSEI_ROWS, videos=False)
    shuffled = {v: [(iv, feats) for (iv, _), (_, feats) in zip(rows, rows[1:] + rows[:1], strict=True)]
                for v, rows in MOSEI_CSD.items()}  # fmt: skip
    _csd(tmp_path / "M" / "CMU_MOSEI_Labels.csd", shuffled)
    clips, report = read_mmsa_joined(tmp_path / "M", "mosei")
    assert report.matched == 0 and report.mismatched == 5
    assert not any(c.emotions for c in clips)  # an unverified row attaches nothing
    with pytest.raises(MerClipError, match=r"refusing the emotion task: 5 of 5 clips \(100.0 %\) did not join"):
        report.require()
    (tmp_path / "M" / "CMU_MOSEI_Labels.csd").unlink()
    _, report = read_mmsa_joined(tmp_path / "M", "mosei")
    with pytest.raises(MerClipError, match="needs CMU-MOSEI's emotion labels: .* not found"):
        report.require()


def test_shuffled_csd_refused_by_train_in_one_line(tmp_path):
    _mmsa(tmp_path / "M", MOSEI_ROWS, videos=False)
    shuffled = {v: [(iv, feats) for (iv, _), (_, feats) in zip(rows, rows[::-1], strict=True)]
                for v, rows in MOSEI_CSD.items()}  # fmt: skip
    _csd(tmp_path / "M" / "CMU_MOSEI_Labels.csd", shuffled)
    out = subprocess.run([*MERCLIP, "train", "--model", "tiny", "--dataset", "mosei", "--data-root",
                          str(tmp_path / "M"), "--modalities", "L", "--allow-partial", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, env=ENV)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: refusing the emotion task")


def _mosi_rows(n_train=24, n_valid=12):
    rng = np.random.default_rng(0)
    words = {1: ["great", "lovely", "wonderful"], -1: ["awful", "terrible", "boring"]}
    rows = []
    for i in range(n_train + n_valid + 4):
        sign = 1 if rng.random() < 0.5 else -1
        text = " ".join(rng.choice(words[sign], 3))
        mode = "train" if i < n_train else ("valid" if i < n_train + n_valid else "test")
        rows.append((f"v{i // 4}", i % 4, text, float(sign * rng.integers(1, 4)), mode))
    return rows


def test_mosi_trains_sentiment_by_default_and_best_follows_acc2(tmp_path):
    _mmsa(tmp_path / "MOSI", _mosi_rows(), videos=False)
    base = [*MERCLIP, "train", "--model", "tiny", "--dataset", "mosi", "--data-root", str(tmp_path / "MOSI"),
            "--modalities", "L", "--epochs", "4", "--batch-size", "8", "--lr", "3e-4"]  # fmt: skip
    refused = subprocess.run([*base, "--out", str(tmp_path / "x")], capture_output=True, text=True, env=ENV)
    assert refused.returncode == 2 and "mosi splits are incomplete" in refused.stderr
    assert "--allow-partial" in refused.stderr.strip().splitlines()[-1]
    run = subprocess.run([*base, "--allow-partial", "--out", str(tmp_path / "r")], capture_output=True, text=True,
                         env=ENV)  # fmt: skip
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["task"] == "sentiment" and metrics["selected_by"] == "acc2" and metrics["recipe"] == "merclip"
    assert "micro_f1" not in metrics["best"]  # MOSI has no emotion labels: no emotion metrics
    with open(tmp_path / "r" / "metrics.csv") as f:
        history = list(csv.DictReader(f))
    acc2 = [float(h["val_acc2"]) for h in history]
    assert metrics["best_epoch"] == 1 + int(np.argmax(acc2))  # the first epoch of the highest ACC2
    from merclip.model.checkpoint import read_checkpoint_config

    assert read_checkpoint_config(tmp_path / "r" / "best.safetensors")[1]["epoch"] == metrics["best_epoch"]
    both = subprocess.run([*base, "--allow-partial", "--task", "both", "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, env=ENV)  # fmt: skip
    assert both.returncode == 2 and "CMU-MOSI has no emotion labels" in both.stderr
    ev = subprocess.run([*MERCLIP, "eval", "--checkpoint", str(tmp_path / "r" / "best.safetensors"), "--dataset",
                         "mosi", "--data-root", str(tmp_path / "MOSI"), "--split", "valid", "--allow-partial"],
                        capture_output=True, text=True, env=ENV)  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    assert "scoring 12 windows of 12 clips" in ev.stderr and "partial" in ev.stdout
    assert "notice" not in ev.stderr
    # a config asking for another reading is scored as the checkpoint is read, and says so once per value
    (tmp_path / "c.toml").write_text('[capture]\nwindow_s = 3.0\nhop_s = 3.0\ncontext = "window"\n')
    asked = subprocess.run([*MERCLIP, "eval", "--checkpoint", str(tmp_path / "r" / "best.safetensors"), "--dataset",
                            "mosi", "--data-root", str(tmp_path / "MOSI"), "--split", "valid", "--allow-partial",
                            "--config", str(tmp_path / "c.toml")], capture_output=True, text=True, env=ENV)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert "scoring 12 windows of 12 clips (2-s windows every 2 s" in asked.stderr
    notices = [line for line in asked.stderr.splitlines() if line.startswith("notice:")]
    assert [n.split(" ignored")[0] for n in notices] == ["notice: capture.window_s = 3.0",
                                                        "notice: capture.hop_s = 3.0",
                                                        "notice: capture.context = 'window'"]  # fmt: skip


def test_unannotated_clips_contribute_no_bce():
    from merclip.model import MerClipConfig, build_model
    from merclip.train.loop import compute_loss

    model = build_model(MerClipConfig())
    logits = torch.randn(4, 6, requires_grad=True)
    out = type("O", (), {"emotion_logits": logits, "sentiment_logits": torch.randn(4, 2)})()
    batch = {"emotion": torch.zeros(4, 6), "has_emotion": torch.tensor([True, False, True, False]),
             "sentiment": torch.full((4,), -100)}  # fmt: skip
    compute_loss(model, out, batch, "both").backward()
    assert logits.grad[[1, 3]].abs().sum() == 0 and logits.grad[[0, 2]].abs().sum() > 0


def test_paper_recipe_fixes_the_gain_and_uses_one_group(tmp_path):
    from merclip.model import MerClipConfig, build_model
    from merclip.train.data import ClipDataset
    from merclip.train.loop import RunOptions, train
    from merclip.train.synthetic import generate

    generate(tmp_path / "c", 24, frames=1, size=224)
    kw = {"modalities": "L", "emotion_labels": ["happy", "sad", "angry", "surprise", "disgust", "fear"],
          "sentiment_labels": ["positive", "negative"], "emotion_mode": "multi_label"}  # fmt: skip
    tr, va = (ClipDataset.from_cache(tmp_path / "c", s, **kw) for s in ("train", "valid"))
    torch.manual_seed(0)
    model = build_model(MerClipConfig(modalities="L", attend="pooled"))
    summary = train(model, tr, va, RunOptions(out=str(tmp_path / "r"), epochs=1, batch_size=8, lr=1e-3,
                                              recipe="paper"))  # fmt: skip
    assert summary["recipe"] == "paper" and summary["selected_by"] == "emotion_accuracy"
    assert float(model.emotion_log_scale) == 0.0 and not model.emotion_log_scale.requires_grad
    from merclip.train.loop import load_optimizer

    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.requires_grad]}])
    load_optimizer(opt, tmp_path / "r" / "last.optim.safetensors")
    (group,) = opt.param_groups
    assert group["lr"] == 1e-3 and group["weight_decay"] == 1e-3


def test_paper_recipe_config():
    from types import SimpleNamespace

    from merclip.train.training import train_config
    from merclip.train.windows import training_reading

    args = SimpleNamespace(config=None, lr=None, epochs=None, batch_size=None, frames=None, weights=None,
                           model="tiny", variant=None, modalities=None, emotion_labels=None, dataset="mosi",
                           data_root="x", task=None, seed=None, out=None, recipe="paper",
                           allow_partial=False)  # fmt: skip
    cfg = train_config(args)
    assert (cfg.model.attend, cfg.train.frames, cfg.labels.prompt_context) == ("pooled", 12, 8)
    assert cfg.train.recipe == "paper" and cfg.train.lr == pytest.approx(2.2e-5)  # the paper's MOSI lr
    with pytest.raises(MerClipError, match="12 frames"):
        train_config(SimpleNamespace(**{**vars(args), "frames": 4}))
    # our recipe reads the monitor's windows: --frames is a window's frame count, which the checkpoint records
    ours = train_config(SimpleNamespace(**{**vars(args), "recipe": None, "frames": 8}))
    assert training_reading(ours)[0].frames_per_window == 8
    assert training_reading(train_config(SimpleNamespace(**{**vars(args), "recipe": None})))[0].frames_per_window == 4


def test_a_value_written_out_is_used_even_where_it_is_the_packaged_one(tmp_path):
    """The dataset's values (MELD's labels and single-label head) and a random start's lr fill only what the
    config leaves unset: the shipped config.toml leaves them unset, a file that writes the packaged value
    asks for it (before, "asked" meant "differs from the packaged value", and such a file was overridden)."""
    from types import SimpleNamespace

    from merclip.train.training import train_config

    from merclip.config import Config

    args = SimpleNamespace(config=str(ROOT / "config.toml"), lr=None, epochs=None, batch_size=None, frames=None,
                           weights=None, model="tiny", variant=None, modalities=None, emotion_labels=None,
                           dataset="meld", data_root="x", task=None, seed=None, out=None, recipe=None,
                           allow_partial=False)  # fmt: skip
    shipped = train_config(args)
    assert shipped.labels.emotion[0] == "neutral" and len(shipped.labels.emotion) == 7
    assert shipped.model.emotion_mode == "single_label" and shipped.train.lr == pytest.approx(5e-4)
    packaged = Config()
    written = tmp_path / "c.toml"
    written.write_text(
        f"[labels]\nemotion = {json.dumps(list(packaged.labels.emotion))}\n"  # a JSON list of strings is TOML
        f'[model]\nemotion_mode = "{packaged.model.emotion_mode}"\n[train]\nlr = {packaged.train.lr!r}\n'
    )
    cfg = train_config(SimpleNamespace(**{**vars(args), "config": str(written)}))
    assert cfg.labels.emotion == packaged.labels.emotion and cfg.model.emotion_mode == "multi_label"
    assert cfg.train.lr == packaged.train.lr
    assert cfg.labels.sentiment == shipped.labels.sentiment  # not written: MELD's three
    # a flag at the packaged value is asked too: --epochs 20 beats the synthetic set's 6
    flagged = train_config(SimpleNamespace(**{**vars(args), "dataset": "synthetic", "epochs": packaged.train.epochs}))
    assert flagged.train.epochs == packaged.train.epochs != 6 and flagged.train.frames == 2


def test_ablate_prints_both_tables_beside_the_papers_and_language_matters(tmp_path, capsys):
    """`merclip ablate` on the synthetic set (label in the words only), a few rows of each table so CI stays
    quick; `merclip ablate --model tiny --dataset synthetic` runs all 19 the same way."""
    from merclip.cli import main

    out = tmp_path / "ablate"
    assert main(["ablate", "--model", "tiny", "--dataset", "synthetic", "--rows", "V,L,concat_fc",
                 "--epochs", "2", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Table 3" in printed and "Table 4" in printed
    assert "83.7" in printed and "81.1" in printed  # the paper's ACC2 for L and for w/o CMD, LE
    rows = {(r["table"], r["row"]): r for r in json.loads((out / "ablation.json").read_text())["rows"]}
    assert set(rows) == {("t3", "V"), ("t3", "L"), ("t4", "w/o CMD, LE")}
    # without the words there is nothing to learn: the modality ablation costs accuracy
    assert rows[("t3", "V")]["acc2"] < rows[("t3", "L")]["acc2"] - 0.2
    assert main(["ablate", "--dataset", "synthetic", "--rows", "XYZ", "--out", str(out)]) == 2


@pytest.mark.parametrize("recipe, expected", [("merclip", 0.1), ("paper", 0.0)])
def test_our_recipe_trains_on_smoothed_labels_and_validates_on_plain_ones(tmp_path, monkeypatch, recipe, expected):
    """Label smoothing (train.label_smoothing) is ours: the paper's recipe keeps its plain cross-entropy, and
    the validation loss (best epoch, curves) is always the plain one."""
    import torch.nn.functional as F
    from merclip.model import MerClipConfig, build_model
    from merclip.train import loop
    from merclip.train.data import ClipDataset
    from merclip.train.synthetic import generate

    generate(tmp_path / "c", 16, frames=1, size=224)
    kw = {"modalities": "L", "emotion_labels": ["happy", "sad", "angry", "surprise", "disgust", "fear"],
          "sentiment_labels": ["positive", "negative"], "emotion_mode": "multi_label"}  # fmt: skip
    tr, va = (ClipDataset.from_cache(tmp_path / "c", s, **kw) for s in ("train", "valid"))
    seen, real = [], loop.compute_loss

    def spy(model, out, batch, task, smoothing=0.0):
        seen.append((model.training, smoothing))
        if model.training and smoothing:  # what the smoothed loss is: (1-e) * CE + e * mean over classes
            logp = F.log_softmax(out.sentiment_logits.float(), 1)
            plain = F.nll_loss(logp, batch["sentiment"])
            want = (1 - smoothing) * plain - smoothing * logp.mean(1).mean()
            got = F.cross_entropy(out.sentiment_logits.float(), batch["sentiment"], label_smoothing=smoothing)
            assert float(got) == pytest.approx(float(want), rel=1e-5)
        return real(model, out, batch, task, smoothing)

    monkeypatch.setattr(loop, "compute_loss", spy)
    torch.manual_seed(0)
    model = build_model(MerClipConfig(modalities="L"))
    loop.train(model, tr, va, loop.RunOptions(out=str(tmp_path / "r"), epochs=1, batch_size=8, lr=1e-3,
                                              task="sentiment", recipe=recipe, label_smoothing=0.1))  # fmt: skip
    assert {s for training, s in seen if training} == {expected}
    assert {s for training, s in seen if not training} == {0.0}


def test_the_default_label_smoothing_is_what_config_toml_says():
    from merclip.config import load_config

    assert load_config(None).train.label_smoothing == 0.1


def test_an_ablation_row_trains_with_the_whole_train_table_of_the_config(tmp_path, monkeypatch):
    """Each `merclip ablate` row is a `merclip train` run: the [train] settings a user configures (gradient
    clipping, mixed precision, loader workers, label smoothing) reach the row's training, as they reach
    `merclip train`'s (ablate used to build its own run options and drop the first three)."""
    from merclip.train import loop

    from merclip.cli import main

    class Stop(Exception):
        pass

    seen = {}

    def spy(model, train_ds, valid_ds, opts, tokenizer=None):
        seen["opts"] = opts
        raise Stop

    monkeypatch.setattr(loop, "train", spy)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\ngrad_clip = 0.25\namp = false\nnum_workers = 1\nlabel_smoothing = 0.05\n")
    with pytest.raises(Stop):
        main(["ablate", "--config", str(cfg), "--model", "tiny", "--dataset", "synthetic", "--rows", "L",
              "--epochs", "1", "--out", str(tmp_path / "abl")])  # fmt: skip
    opts = seen["opts"]
    assert (opts.grad_clip, opts.amp, opts.num_workers, opts.label_smoothing) == (0.25, False, 1, 0.05)
    assert (opts.task, opts.epochs, Path(opts.out).name) == ("sentiment", 1, "full-L")
