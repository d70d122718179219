"""`merclip train`: hostile flags and --out.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import pytest

from .world import (
    Case,
    cmd,
    run_case,
)

CASES = [
    Case("train-epochs-0", "merclip", cmd("train", "--epochs", "0"), "--epochs"),
    Case("train-lr-nan", "merclip", cmd("train", "--lr", "nan"), "--lr"),
    Case("train-lr-negative", "merclip", cmd("train", "--lr", "-0.1"), "--lr"),
    Case("train-batch-negative", "merclip", cmd("train", "--batch-size", "-4"), "--batch-size"),
    Case("train-dataset-choice", "merclip", cmd("train", "--dataset", "imagenet"), "--dataset"),
    Case(
        "train-out-is-a-file",
        "merclip",
        cmd("train", "--model", "tiny", "--dataset", "synthetic", "--out", lambda w: w.file("notes.txt", "keep me")),
        "is a file",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)
