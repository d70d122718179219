"""`merclip train --teachers`: distillation from earlier runs (train/distill.py)."""

import json
from types import SimpleNamespace

import pytest
import torch
from merclip.model import MerClipConfig, build_model, save_checkpoint
from merclip.train.distill import TaughtTargets, load_teachers
from merclip.train.losses import distill_loss, teacher_targets

from merclip.cli import main
from merclip.errors import MerClipError


def _out(emotion, sentiment):
    return SimpleNamespace(emotion_logits=emotion, sentiment_logits=sentiment)


@pytest.mark.parametrize("multi", [False, True])
def test_the_loss_is_zero_at_the_teachers_mean_and_pulls_the_student_to_it(multi):
    torch.manual_seed(0)
    a, b = _out(torch.randn(8, 5), torch.randn(8, 3)), _out(torch.randn(8, 5), torch.randn(8, 3))
    # one teacher: a student reading exactly as it does is taught nothing
    assert float(distill_loss(a, teacher_targets([a], multi, 2.0), multi, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(b, teacher_targets([a], multi, 2.0), multi, 2.0)) > 0.01
    # two teachers: gradient steps on the loss alone bring the student to their mean reading
    emotion, sentiment = torch.zeros(8, 5, requires_grad=True), torch.zeros(8, 3, requires_grad=True)
    opt = torch.optim.SGD([emotion, sentiment], lr=20.0 if multi else 2.0)  # BCE averages over the labels too
    for _ in range(500):
        opt.zero_grad()
        distill_loss(_out(emotion, sentiment), teacher_targets([a, b], multi, 2.0), multi, 2.0).backward()
        opt.step()
    sent = torch.stack([torch.softmax(o.sentiment_logits / 2, -1) for o in (a, b)]).mean(0)
    assert torch.allclose(torch.softmax(sentiment / 2, -1), sent, atol=1e-3)
    if multi:
        emo = torch.stack([torch.sigmoid(o.emotion_logits / 2) for o in (a, b)]).mean(0)
        mine = torch.sigmoid(emotion / 2)
    else:
        emo = torch.stack([torch.softmax(o.emotion_logits / 2, -1) for o in (a, b)]).mean(0)
        mine = torch.softmax(emotion / 2, -1)
    assert torch.allclose(mine, emo, atol=1e-3)


def test_a_teacher_that_reads_otherwise_is_refused_naming_what_differs(tmp_path):
    student = build_model(MerClipConfig(arch="tiny"), weights="random")
    other = build_model(MerClipConfig(arch="tiny", emotion_labels=("calm", "tense")), weights="random")
    save_checkpoint(other, tmp_path / "other.safetensors")
    with pytest.raises(MerClipError, match=r"teacher .*other.safetensors has emotion_labels \('calm', 'tense'\)"):
        load_teachers((str(tmp_path / "other.safetensors"),), student, torch.device("cpu"))
    with pytest.raises(MerClipError, match=r"teacher not found: .*none.safetensors"):
        load_teachers((str(tmp_path / "none.safetensors"),), student, torch.device("cpu"))


def _train(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(["train", "--model", "tiny", "--dataset", "synthetic", "--epochs", "1", "--seed", "1",
                 "--out", str(out), *extra])  # fmt: skip
    assert code == 0
    return out


def test_train_with_teachers_is_taught_by_them_each_step_and_records_them(tmp_path, monkeypatch, capsys):
    from merclip.train import loop

    teacher = _train(tmp_path, "teacher")
    calls, read = [], []

    def spy(student, targets, multi, temperature, task="both"):
        calls.append((multi, temperature, task))
        return distill_loss(student, targets, multi, temperature, task)

    class Counted(TaughtTargets):  # counts the teachers' forward passes
        def __init__(self, pairs, forward, *rest):
            super().__init__(pairs, lambda *a: read.append(len(a[1]["sentiment"])) or forward(*a), *rest)

    monkeypatch.setattr(loop, "distill_loss", spy)
    monkeypatch.setattr(loop, "TaughtTargets", Counted)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\ndistill_weight = 1.0\ndistill_temperature = 3.0\n")
    ckpt = str(teacher / "best.safetensors")
    capsys.readouterr()
    taught = _train(tmp_path, "taught", "--config", str(cfg), "--teachers", f"{ckpt},{ckpt}", "--epochs", "2")
    summary = json.loads((taught / "metrics.json").read_text())
    assert "clips as both (300 / 100 samples)" in capsys.readouterr().err  # taught: every window and clip
    # every step of both epochs is taught: the synthetic set's 300 training clips in batches of 16 (each clip
    # is one window that reads all of its words, so "both" adds no second sample of it)
    assert calls and set(calls) == {(True, 3.0, "both")} and len(calls) == 2 * 19
    # ... but the teachers read each sample once: in the first epoch, both of them
    assert sum(read) == 2 * 300
    assert summary["options"]["teachers"] == [ckpt, ckpt] and summary["options"]["distill_weight"] == 1.0


@pytest.mark.parametrize("fixed", [True, False])
def test_the_teachers_reading_of_a_sample_is_kept_only_when_the_sample_is_the_same_every_epoch(fixed):
    torch.manual_seed(0)
    logits = torch.randn(6, 5)  # what the teacher reads for samples 0..5
    read = []

    def forward(model, batch, prompts):
        read.append(batch["rows"].tolist())
        return _out(logits[batch["rows"]] * model, logits[batch["rows"], :3])

    def batch(rows):  # a batch names its samples by index only when they are the same every epoch
        rows = torch.tensor(rows)
        return {"rows": rows, "index": rows} if fixed else {"rows": rows}

    targets = TaughtTargets([(1.0, None), (2.0, None)], forward, False, 2.0, n_samples=6)
    first = targets(batch([0, 1, 2]), torch.device("cpu"))
    again = targets(batch([2, 0, 1]), torch.device("cpu"))
    expected = teacher_targets([_out(logits[[2, 0, 1]] * m, logits[[2, 0, 1], :3]) for m in (1.0, 2.0)], False, 2.0)
    for head in ("emotion", "sentiment"):
        assert torch.allclose(again[head], expected[head]) and torch.allclose(first[head][[2, 0, 1]], again[head])
    targets(batch([2, 3]), torch.device("cpu"))  # 3 is new: the batch is read again
    if fixed:
        assert read == [[0, 1, 2], [0, 1, 2], [2, 3], [2, 3]]
    else:  # views drawn anew each epoch: every batch is read
        assert read == [[0, 1, 2]] * 2 + [[2, 0, 1]] * 2 + [[2, 3]] * 2


def test_teachers_with_the_papers_recipe_are_refused(tmp_path, capsys):
    code = main(["train", "--model", "tiny", "--dataset", "synthetic", "--epochs", "1", "--recipe", "paper",
                 "--teachers", str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "r")])  # fmt: skip
    assert code == 2 and "--teachers is for recipe merclip" in capsys.readouterr().err


def test_a_taught_run_trains_on_every_window_and_clip_unless_the_config_says_otherwise():
    from dataclasses import replace

    from merclip.train.windows import training_reading

    from merclip.config import Config

    cfg = Config()
    assert training_reading(cfg)[1] == "views"  # untaught: the labels alone, one view of each clip an epoch

    def taught(**train):
        return replace(cfg, train=replace(cfg.train, teachers=("t.safetensors",), **train))

    assert training_reading(taught())[1] == "both"
    assert training_reading(taught(samples="views"))[1] == "views"  # asked for: kept
    assert training_reading(taught(recipe="paper"))[1] == "clips"  # the paper's (which then refuses teachers)


TEXT_ONLY = ("--modalities", "L")  # what a teacher is does not depend on the inputs; words train fastest


def test_teachers_n_trains_them_first_reuses_finished_ones_and_continues_an_interrupted_one(tmp_path, capsys):
    out = _train(tmp_path, "run", "--teachers", "2", *TEXT_ONLY)
    err = capsys.readouterr().err
    teachers = [out / "teachers" / f"seed-{seed}" for seed in (2, 3)]  # the run's seed is 1
    for folder in teachers:
        options = json.loads((folder / "metrics.json").read_text())["options"]
        assert options["teachers"] == [] and options["seed"] == int(folder.name[5:])  # untaught, its own seed
        assert options["lr_schedule"] == "constant"  # "auto": not measured on the synthetic set
    assert "teacher 1 of 2 (seed 2)" in err and "teacher 2 of 2 (seed 3)" in err
    assert "clips as views" in err and "clips as both" in err  # the teachers as untaught runs, the run taught
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["options"]["teachers"] == [str(t / "best.safetensors") for t in teachers]
    assert summary["options"]["lr_schedule"] == "constant" and "along a cosine" not in err

    # Ctrl-C in the second teacher's last epoch (its epoch checkpoint written, the run not finished), then
    # the same command again: the first teacher is used as it is, the second continued, the run trained
    first = (teachers[0] / "best.safetensors").stat().st_mtime_ns
    for name in ("metrics.json", "best.safetensors", "last.safetensors"):
        (out / name).unlink()
    (teachers[1] / "metrics.json").unlink()
    _train(tmp_path, "run", "--teachers", "2", *TEXT_ONLY)
    err = capsys.readouterr().err
    assert "teacher 1 of 2 (seed 2): trained already" in err and "teacher 2 of 2 (seed 3), continued" in err
    assert (teachers[0] / "best.safetensors").stat().st_mtime_ns == first
    assert (teachers[1] / "metrics.json").is_file() and (out / "best.safetensors").is_file()

    # other settings: the teachers of 1 epoch are not reused for a run of 2
    for name in ("metrics.json", "best.safetensors", "last.safetensors"):
        (out / name).unlink()
    code = main(["train", "--model", "tiny", "--dataset", "synthetic", "--epochs", "2", "--seed", "1",
                 "--out", str(out), "--teachers", "2", *TEXT_ONLY])  # fmt: skip
    assert code == 2
    assert "seed-2 holds a teacher trained with other settings (train.epochs)" in capsys.readouterr().err
    # nor for a run whose teachers attend otherwise (their record says how they attend)
    pooled = tmp_path / "pooled.toml"
    pooled.write_text('[train]\nteacher_attend = "pooled"\n')
    code = main(["train", "--model", "tiny", "--dataset", "synthetic", "--epochs", "1", "--seed", "1", "--out",
                 str(out), "--teachers", "2", "--config", str(pooled), *TEXT_ONLY])  # fmt: skip
    assert code == 2 and "other settings (train.teacher_attend)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "config", "attend"),
    [
        (["--dataset", "meld"], "", "pooled"),  # measured on MELD: pooled teachers teach windows better
        (["--dataset", "synthetic"], "", "tokens"),  # elsewhere as the run attends
        (["--dataset", "synthetic"], '[model]\nattend = "pooled"', "pooled"),
        (["--dataset", "meld"], '[train]\nteacher_attend = "tokens"', "tokens"),  # asked for: kept
    ],
)
def test_how_the_teachers_a_run_trains_first_attend(tmp_path, argv, config, attend):
    from merclip.train.training import train_config

    from merclip.parsers import build_parser

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(config + "\n")
    cfg = train_config(build_parser().parse_args(["train", "--config", str(cfg_file), "--data-root", "x", *argv]))
    assert cfg.train.teacher_attend == attend  # the run itself attends as model.attend says
    assert cfg.model.attend == ("pooled" if config.startswith("[model]") else "tokens")


@pytest.mark.parametrize(
    ("argv", "config", "message"),
    [
        (["--teachers", "2", "--recipe", "paper"], "", "--teachers is for recipe merclip"),
        ([], 'teachers = ["a.safetensors"]\nteacher_runs = 2', "set one of the two"),  # named and trained
    ],
)
def test_teachers_n_is_refused_where_it_cannot_be_meant(tmp_path, capsys, argv, config, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[train]\n{config}\n")
    code = main(["train", "--config", str(cfg), "--model", "tiny", "--dataset", "synthetic", "--epochs", "1",
                 "--out", str(tmp_path / "r"), *argv])  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r" / "teachers").exists()
    cfg.write_text("[train]\nteacher_runs = 2\n")
    code = main(["ablate", "--config", str(cfg), "--model", "tiny", "--dataset", "synthetic", "--rows", "L",
                 "--epochs", "1", "--out", str(tmp_path / "a")])  # fmt: skip
    assert code == 2 and "merclip ablate trains its rows untaught" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error
        main(["train", "--teachers", "33"])
    assert "a count of teachers to train must be 0 to 32, got 33" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "config", "runs"),
    [
        (["--dataset", "meld"], "", "5"),  # MELD, our recipe: taught by five teachers trained first
        (["--dataset", "meld", "--teachers", "0"], "", "0"),  # this one run alone
        (["--dataset", "meld", "--teachers", "3"], "", "3"),
        (["--dataset", "meld", "--teachers", "a.safetensors"], "", "0"),  # taught by the runs named
        (["--dataset", "meld", "--recipe", "paper"], "", "0"),  # the paper's plain loss
        (["--dataset", "synthetic"], "", "0"),  # measured on MELD only
        (["--dataset", "meld"], "teacher_runs = 0", "0"),
        (["--dataset", "meld"], "teacher_runs = 2", "2"),  # a TOML number
        (["--dataset", "meld", "--teachers", "4"], "teacher_runs = 2", "4"),  # the flag over the file
        (["--dataset", "meld", "--teachers", "0"], 'teachers = ["a.safetensors"]', "0"),
    ],
)
def test_how_many_teachers_a_run_trains_first(tmp_path, monkeypatch, argv, config, runs):
    from merclip.train.training import train_config

    from merclip.parsers import build_parser

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f"[train]\n{config}\n")
    args = build_parser().parse_args(["train", "--config", str(cfg_file), "--data-root", "x", *argv])
    cfg = train_config(args)
    assert cfg.train.teacher_runs == runs
    # the lr along a cosine: MELD, our recipe, taught or not (its teachers inherit the resolved value)
    assert cfg.train.lr_schedule == ("cosine" if "meld" in argv and "paper" not in argv else "constant")
    if "--teachers" in argv:  # --teachers 0 or N also drops the teachers a file names
        assert cfg.train.teachers == (() if argv[-1].isdigit() else ("a.safetensors",))
    assert train_config(args, taught_default=False).train.teacher_runs == ("0" if runs == "5" else runs)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun the default does not apply (teachers train in one process)
    assert train_config(args).train.teacher_runs == ("0" if runs == "5" else runs)


def test_a_count_of_teachers_in_the_config_must_be_a_count(tmp_path):
    from merclip.config import load_config

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[train]\nteacher_runs = "many"\n')
    with pytest.raises(MerClipError, match=r"train.teacher_runs must be \"auto\" or a count 0 to 32, got 'many'"):
        load_config(str(cfg_file))
