"""`merclip eval`: hostile --json paths.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import pytest

from .world import (
    Case,
    cmd,
    run_case,
)

CASES = [
    Case(
        "eval-json-missing-folder",
        "merclip",
        cmd(
            "eval",
            "--baseline",
            "majority",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD"),
            "--json",
            lambda w: str(w.root / "no" / "m.json"),
        ),
        "does not exist",
    ),  # fmt: skip
    Case(
        "eval-json-is-folder",
        "merclip",
        cmd(
            "eval",
            "--baseline",
            "majority",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD"),
            "--json",
            lambda w: w.dir("metrics"),
        ),
        "folder",
    ),  # fmt: skip
    Case(
        "eval-json-under-file",
        "merclip",
        cmd(
            "eval",
            "--baseline",
            "majority",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD"),
            "--json",
            lambda w: w.file("plain") + "/m.json",
        ),
        "not a folder",
    ),  # fmt: skip
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)
