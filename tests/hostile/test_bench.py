"""`merclip bench`: hostile flags.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import pytest

from .world import (
    Case,
    cmd,
    run_case,
)

CASES = [
    Case("bench-windows-0", "merclip", cmd("bench", "--windows", "0"), "--windows"),
    Case("bench-windows-negative", "merclip", cmd("bench", "--windows", "-3"), "--windows"),
    Case("bench-streams-0", "merclip", cmd("bench", "--streams", "0"), "--streams"),
    Case("bench-streams-text", "merclip", cmd("bench", "--streams", "many"), "--streams"),
    Case("bench-text-context", "merclip", cmd("bench", "--text-context", "5"), "--text-context"),
    Case("bench-soak-nan", "merclip", cmd("bench", "--soak", "nan"), "--soak"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)
