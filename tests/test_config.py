import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from merclip.config import Config, from_dict, load_config, override, to_toml
from merclip.errors import MerClipError

ROOT = Path(__file__).resolve().parents[1]


def test_repository_config_documents_exactly_the_defaults():
    """Every key is set to its packaged default, or shown as a ``# key = value`` line (left unset)."""
    text = (ROOT / "config.toml").read_text()
    assert load_config(ROOT / "config.toml") == Config()
    data = tomllib.loads(text)
    shown: dict[str, dict] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif match := re.fullmatch(r"# (\w+) = (true|false|[-\d.\"\[].*)", line):  # not prose ("auto = ...")
            shown.setdefault(section, {})[match[1]] = tomllib.loads(f"v = {match[2]}")["v"]
    for section, table in data.items():
        default = getattr(Config(), section)
        unset = shown.get(section, {})
        assert set(table) | set(unset) == set(default.__dataclass_fields__) and not set(table) & set(unset), section
        as_set = {k: tuple(v) if isinstance(v, list) else v for k, v in unset.items()}  # toml lists, tuple fields
        assert all(getattr(default, key) == value for key, value in as_set.items()), section


def test_a_spelled_value_is_asked_even_when_it_is_the_default(tmp_path):
    """The reading notices go by what a user wrote: the shipped file leaves the reading unset, so it asks
    for nothing a trained bundle would ignore; a file or flag that writes a default asks for it."""
    shipped = load_config(ROOT / "config.toml").asked("capture")
    assert not shipped.keys() & {"window_s", "hop_s", "frames_per_window"} and shipped["context"] == "auto"
    path = tmp_path / "c.toml"
    path.write_text("[capture]\nframes_per_window = 4\nhop_s = 1.0\n")
    cfg = load_config(path)
    assert cfg.asked("capture") == {"frames_per_window": 4, "hop_s": 1.0}
    assert override(cfg, capture={"window_s": 2.0}).asked("capture")["window_s"] == 2.0
    assert Config().asked("capture") == {}
    assert override(Config(), capture={"frames_per_window": None}).asked("capture") == {}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"archh": "x"}}, "unknown key model.archh"),
        ({"modell": {}}, r"unknown section \[modell\]"),
        ({"train": {"epochs": "ten"}}, "train.epochs must be an integer"),
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
        ({"model": {"variant": "best"}}, "model.variant must be one of"),
        ({"labels": {"emotion": "happy"}}, "labels.emotion must be a list of strings"),
        ({"model": {"modalities": "LVX"}}, "model.modalities"),
        ({"capture": {"hop_s": 3.0}}, "hop_s must be <= capture.window_s"),
        ({"ui": {"enabled": 1}}, "ui.enabled must be true or false"),
    ],
)
def test_bad_config_is_refused_with_the_key(data, message):
    with pytest.raises(MerClipError, match=message):
        from_dict(data)


def test_cli_flags_override_config():
    cfg = override(Config(), model={"arch": "tiny", "weights": None}, capture={"frames_per_window": 8})
    assert cfg.model.arch == "tiny" and cfg.model.weights == "openai" and cfg.capture.frames_per_window == 8
    with pytest.raises(MerClipError, match="capture.frames_per_window must be >= 1"):
        override(Config(), capture={"frames_per_window": 0})


def test_a_rendered_config_asks_for_what_its_source_asked(tmp_path):
    """`merclip config > my.toml` (and the config handed to an export child) must not turn the packaged
    reading into a request: written out, 4 frames would be asked of a 12-frame bundle."""
    reading = {"window_s", "hop_s", "frames_per_window"}
    for cfg in (Config(), from_dict({"capture": {"frames_per_window": 4}}), override(Config(), capture={"hop_s": 1.0})):
        again = from_dict(tomllib.loads(to_toml(cfg)))
        assert again == cfg and again.asked("capture").keys() & reading == cfg.asked("capture").keys() & reading
    assert "# window_s = 2.0" in to_toml(Config()) and "\nframes_per_window = 4" in to_toml(
        from_dict({"capture": {"frames_per_window": 4}}))  # fmt: skip
    # nor the packaged lr and labels into values asked of every dataset and bundle; written ones stay asked
    for cfg in (Config(), from_dict({"train": {"lr": 8e-6}, "labels": {"sentiment": ["positive", "negative"]}})):
        again = from_dict(tomllib.loads(to_toml(cfg)))
        for section, keys in (("train", {"lr", "epochs"}), ("labels", {"emotion", "sentiment"})):
            assert again.asked(section).keys() & keys == cfg.asked(section).keys() & keys
    assert "\n# lr = 8e-06" in to_toml(Config()) and "\nlr = 8e-06" in to_toml(from_dict({"train": {"lr": 8e-6}}))
    # each says why, as the code that follows it does: a random start's lr, a bundle's labels live
    from merclip.train.training import RANDOM_INIT_LR

    rendered = {line.split(" = ")[0].lstrip("# "): line for line in to_toml(Config()).splitlines()}
    assert float(rendered["lr"].rsplit("random weights ", 1)[1].rstrip(")")) == RANDOM_INIT_LR
    assert rendered["emotion"].endswith("live to the bundle)") and rendered["epochs"].endswith("to the dataset)")


def test_merclip_config_command_exit_codes(tmp_path):
    good = subprocess.run([sys.executable, "-m", "merclip.cli", "config"], capture_output=True, text=True, cwd=tmp_path)
    assert good.returncode == 0 and 'arch = "ViT-B-32"' in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = 'fast'\n")
    out = subprocess.run(
        [sys.executable, "-m", "merclip.cli", "config", "--config", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "error: config: train.lr must be a number, got 'fast'"
