"""Training-side commands never destroy a user's work: a finished run, a notes file, a checkpoint folder that
cannot take the output; and settings that cannot work are said as settings, in one line."""

import os
import subprocess
import sys

import pytest
from merclip.model import MerClipConfig, build_model, save_checkpoint

from merclip.cli import main
from merclip.config import load_config, weights_flag
from merclip.errors import MerClipError


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_train_refuses_a_folder_that_holds_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"the model a user trained for a week")
    assert main(["train", "--model", "tiny", "--dataset", "synthetic", "--epochs", "1", "--out", str(run)]) == 2
    assert "already holds a training run: pass --resume" in _err(capsys)
    assert (run / "best.safetensors").read_bytes() == b"the model a user trained for a week"


def test_one_train_per_folder_and_a_dead_runs_lock_is_taken_over(tmp_path):
    from merclip.train.training import LOCK_NAME, _run_lock

    out = tmp_path / "run"
    with _run_lock(out):
        assert (out / LOCK_NAME).read_text() == str(os.getpid())
        with pytest.raises(MerClipError, match=r"another merclip train \(pid \d+\) is writing to"):
            with _run_lock(out):
                pass
    assert not (out / LOCK_NAME).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(dead.stdout.strip())  # a run that was killed left its lock
    with _run_lock(out):
        assert (out / LOCK_NAME).read_text() == str(os.getpid())


def test_calibrate_and_eval_never_overwrite_a_users_file(tmp_path, capsys):
    notes = tmp_path / "notes.csv"
    notes.write_text("precious data\n")
    assert main(["calibrate", str(tmp_path / "any.safetensors"), "--dataset", "synthetic", "--out", str(notes)]) == 2
    assert "exists and is not a MER-CLIP checkpoint: not overwritten" in _err(capsys)
    assert main(["eval", "--checkpoint", str(tmp_path / "any.safetensors"), "--dataset", "synthetic",
                 "--json", str(notes)]) == 2  # fmt: skip
    assert "exists and is not a metrics file of merclip eval" in _err(capsys)
    assert notes.read_text() == "precious data\n"


def test_an_existing_checkpoint_or_metrics_file_may_be_replaced(tmp_path, tiny_model):
    from merclip.train.outputs import _check_output_file, _is_checkpoint, _is_metrics_json

    ckpt = tmp_path / "cal.safetensors"
    save_checkpoint(tiny_model, ckpt)
    _check_output_file(str(ckpt), "--out", _is_checkpoint, "a MER-CLIP checkpoint")
    metrics = tmp_path / "m.json"
    metrics.write_text('{"accuracy": 0.5, "n": 10}')
    _check_output_file(str(metrics), "--json", _is_metrics_json, "a metrics file")
    metrics.write_text('{"something": "else"}')
    with pytest.raises(MerClipError, match="not overwritten"):
        _check_output_file(str(metrics), "--json", _is_metrics_json, "a metrics file")


def test_calibrate_into_a_folder_it_cannot_write_fails_before_scoring(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(folder)) else real_access(p, mode))
    code = main(["calibrate", str(tmp_path / "never-loaded.safetensors"), "--dataset", "synthetic",
                 "--out", str(folder / "cal.safetensors")])  # fmt: skip
    assert code == 2 and "is not writable" in _err(capsys)


def test_decoder_heads_that_do_not_divide_the_width_are_a_setting_error():
    with pytest.raises(MerClipError, match=r"model.decoder_heads = 7 does not divide the decoder width \d+ of tiny"):
        build_model(MerClipConfig(arch="tiny", decoder_heads=7), weights="random")


def test_train_with_bad_decoder_heads_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\ndecoder_heads = 7\n")
    code = main(["train", "--config", str(cfg), "--model", "tiny", "--dataset", "synthetic", "--epochs", "1",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2 and "model.decoder_heads = 7" in _err(capsys)


def test_tiny_means_random_weights_for_export_too(tmp_path, monkeypatch):
    from merclip.export import cli as export_cli

    seen = {}
    monkeypatch.setattr(
        export_cli, "export_from_config", lambda cfg, out, *a, **k: seen.setdefault("w", cfg.model.weights)
    )
    assert main(["export", "--onnx", "--model", "tiny", "--out", str(tmp_path / "b")]) == 0
    assert seen["w"] == "random"
    assert weights_flag("tiny", "my.safetensors") == "my.safetensors" and weights_flag("ViT-B-32", None) is None


def test_an_unknown_whisper_compute_type_is_refused_by_the_config_check(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[asr]\ncompute_type = "int4"\n')
    with pytest.raises(MerClipError, match=r"asr.compute_type must be one of default, auto, int8"):
        load_config(cfg)


def _help(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_train_and_ablate_help_state_the_dataset_and_model_defaults(capsys):
    from merclip.train.ablate import SYNTHETIC_ABLATION
    from merclip.train.splits import DATASET_DEFAULTS
    from merclip.train.training import RANDOM_INIT_LR

    from merclip import flags as cli  # the command line's written-out defaults

    syn, mosi = DATASET_DEFAULTS["synthetic"]["train"], DATASET_DEFAULTS["mosi"]["train"]
    # the help is written out (no training import for --help): it must say what the code does
    assert cli.SYNTHETIC_TRAIN == {k: syn[k] for k in ("epochs", "frames")}
    assert cli.SYNTHETIC_ABLATE == {k: SYNTHETIC_ABLATION[k] for k in ("epochs", "frames")}
    assert (syn["lr"], mosi["lr"], mosi["batch_size"], RANDOM_INIT_LR) == (1e-3, 2.2e-5, 8, 5e-4)
    assert syn["label_smoothing"] == 0.0
    text = _help("train", capsys=capsys)
    assert "training epochs (default: train.epochs, the paper's 20; synthetic: 6)" in text
    assert "8e-6; mosi: 2.2e-5; synthetic: 1e-3; random weights, e.g. --model tiny: 5e-4" in text
    assert "synthetic 6 epochs, lr 1e-3, clips of 2 frames" in text and "mosi lr 2.2e-5, batch 8" in text
    assert "no label smoothing" in text
    text = _help("ablate", capsys=capsys)
    assert "synthetic: 3)" in text and "synthetic 3 epochs, lr 1e-3, clips of 1 frame " in text


def test_readme_and_ablate_help_count_the_rows_the_code_runs(capsys):
    from pathlib import Path

    from merclip.train.ablate import TABLE3, TABLE4

    rows = len(TABLE3) + len(TABLE4)
    assert f"default all {rows}" in _help("ablate", capsys=capsys)
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert f"runs all {rows} rows" in readme


def test_ablate_on_the_synthetic_set_runs_the_paper_recipe(tmp_path, capsys):
    code = main(["ablate", "--model", "tiny", "--dataset", "synthetic", "--recipe", "paper", "--rows", "LVA",
                 "--epochs", "1", "--out", str(tmp_path / "abl")])  # fmt: skip
    assert code == 0, _err(capsys)
    assert (tmp_path / "abl" / "ablation.json").is_file()
