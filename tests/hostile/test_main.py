"""`merclip` itself: an unknown command or flag.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import pytest

from .world import (
    Case,
    run_case,
)

CASES = [
    Case("no-command-flag", "merclip", lambda w: ["--frobnicate"], "unrecognized"),
    Case("unknown-command", "merclip", lambda w: ["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)
