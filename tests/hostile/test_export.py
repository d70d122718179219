"""`merclip export`: hostile flags, checkpoints and --out.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import pytest

from .world import (
    Case,
    _no_onnx_export,
    cmd,
    run_case,
)

CASES = [
    Case("export-precision-choice", "merclip", cmd("export", "--onnx", "--precision", "int4"), "--precision"),
    Case(
        "export-checkpoint-missing",
        "merclip",
        cmd(
            "export",
            "--onnx",
            "--checkpoint",
            lambda w: str(w.root / "best.safetensors"),
            "--out",
            lambda w: str(w.root / "b"),
        ),
        "not found",
    ),  # fmt: skip
    Case(
        "export-checkpoint-text",
        "merclip",
        cmd(
            "export",
            "--onnx",
            "--checkpoint",
            lambda w: w.file("best.safetensors", "hello"),
            "--out",
            lambda w: str(w.root / "b"),
        ),
        "safetensors",
    ),  # fmt: skip
    Case(
        "export-out-replaces-a-folder",  # lead: export (today the folder's files are deleted)
        "merclip",
        cmd(
            "export",
            "--onnx",
            "--model",
            "tiny",
            "--weights",
            "random",
            "--out",
            lambda w: w.dir("thesis", {"chapter1.txt": "years of work"}),
        ),  # fmt: skip
        "thesis",
        patch=_no_onnx_export,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)
