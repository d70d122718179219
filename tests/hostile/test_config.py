"""`merclip config --config FILE` (and the --config flag): hostile config files.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import pytest

from .world import (
    LONG,
    Case,
    config,
    run_case,
)

CASES = [
    Case("config-binary", "merclip", config(b"\x00\x01\x02\xff" * 64), "binary"),
    Case("config-latin1", "merclip", config('[model]\narch = "café"\n'.encode("latin-1")), "UTF-8"),
    Case("config-utf16", "merclip", config('[model]\narch = "tiny"\n'.encode("utf-16")), "UTF-16"),
    Case("config-is-a-folder", "merclip", config(lambda w: w.dir("conf.d")), "folder"),
    Case("config-missing", "merclip", config(lambda w: str(w.root / "nope.toml")), "not found"),
    Case("config-dev-zero", "merclip", config(lambda w: "/dev/zero"), "not a regular file"),
    Case("config-symlink-loop", "merclip", config(lambda w: w.loop("loop.toml")), "symbolic link"),
    Case("config-name-too-long", "merclip", config(lambda w: str(w.root / LONG)), "too long"),
    Case("config-newline-in-name", "merclip", config(lambda w: str(w.root / "con\nfig.toml")), "not found"),
    Case("config-too-big", "merclip", config("# " + "x" * (2 << 20) + "\n"), "too big"),
    Case("config-not-toml", "merclip", config("[model\narch = \n"), "not valid TOML"),
    Case("config-window-nan", "merclip", config("[capture]\nwindow_s = nan\n"), "finite"),
    Case("config-hop-inf", "merclip", config("[capture]\nhop_s = inf\n"), "finite"),
    Case("config-fps-negative", "merclip", config("[capture]\nfps = -5.0\n"), "capture.fps"),
    Case("config-width-huge", "merclip", config("[capture]\nwidth = 1000000000000\n"), "capture.width"),
    Case("config-lr-huge", "merclip", config("[train]\nlr = 1e308\n"), "train.lr"),
    Case("config-lr-zero", "merclip", config("[train]\nlr = 0.0\n"), "train.lr must be > 0"),
    Case("config-epochs-2^64", "merclip", config("[train]\nepochs = 99999999999999999999\n"), "train.epochs"),
    Case("config-seed-negative", "merclip", config("[train]\nseed = -1\n"), "train.seed"),
    Case("config-wrong-type-int", "merclip", config('[capture]\nframes_per_window = "four"\n'), "integer"),
    Case("config-wrong-type-bool", "merclip", config('[asr]\nenabled = "yes"\n'), "true or false"),
    Case("config-wrong-type-float", "merclip", config("[ui]\nsmoothing_s = [0.5]\n"), "ui.smoothing_s"),
    Case("config-unknown-key", "merclip", config("[capture]\nwidht = 640\n"), "unknown key capture.widht"),
    Case("config-unknown-section", "merclip", config("[captur]\nwidth = 640\n"), "unknown section"),
    Case("config-key-outside-section", "merclip", config("window_s = 2.0\n"), "[section]"),
    Case("config-section-not-table", "merclip", config("model = 3\n"), "must be a table"),
    Case("config-empty-labels", "merclip", config("[labels]\nemotion = []\n"), "labels.emotion"),
    Case("config-duplicate-labels", "merclip", config('[labels]\nemotion = ["a", "a"]\n'), "distinct"),
    Case("config-template-no-label", "merclip", config('[export]\nemotion_template = "{mood}"\n'), "{label}"),
    Case("config-nul-in-string", "merclip", config('[model]\narch = "ti\\u0000ny"\n'), "NUL"),
    Case("config-empty-arch", "merclip", config('[model]\narch = "  "\n'), "model.arch"),
    Case(
        "config-cache-dir-is-a-file",
        "merclip",
        config(lambda w: w.file("cd.toml", f'[runtime]\ncache_dir = "{w.file("afile", "data")}"\n')),
        "runtime.cache_dir",
    ),
    Case(
        "config-cache-dir-under-a-file",
        "merclip",
        config(lambda w: w.file("cd.toml", f'[runtime]\ncache_dir = "{w.file("afile", "data")}/sub"\n')),
        "cannot be created",
    ),
    Case(
        "config-cache-dir-loop",
        "merclip",
        config(lambda w: w.file("cd.toml", f'[runtime]\ncache_dir = "{w.loop("cacheloop")}"\n')),
        "symbolic link",
    ),
    Case("config-flag-empty", "merclip", lambda w: ["config", "--config", ""], "--config"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)


# ---- what still works ---------------------------------------------------------------------------------------
# ---- what still works ---------------------------------------------------------------------------------------
def test_config_with_a_utf8_bom_is_read(tmp_path):
    from merclip.config import load_config

    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf[capture]\nframes_per_window = 8\n")
    assert load_config(path).capture.frames_per_window == 8


def test_cache_path_names_the_problem(tmp_path):
    from merclip.cache_dir import cache_path
    from merclip.errors import MerClipError

    assert cache_path(tmp_path / "c", "tensorrt").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(MerClipError, match="runtime.cache_dir: .*f/bundles"):
        cache_path(tmp_path / "f", "bundles")
