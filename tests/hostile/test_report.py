"""`merclip report`: hostile session logs and --out paths.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import os

import pytest

from .world import (
    GOOD_ROW,
    LONG,
    Case,
    World,
    cmd,
    run_case,
)

CASES = [
    Case("report-empty", "merclip", cmd("report", lambda w: w.file("s.csv")), "empty"),
    Case("report-header-only", "merclip", cmd("report", lambda w: w.session_csv("s.csv", [])), "no readings"),
    Case("report-binary", "merclip", cmd("report", lambda w: w.file("s.csv", os.urandom(4096) + b"\0")), "binary"),
    Case(
        "report-latin1",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW.replace("hello", "café")], "latin-1")),
        "UTF-8",
    ),  # fmt: skip
    Case("report-not-a-log", "merclip", cmd("report", lambda w: w.file("s.csv", "name,age\nann,3\n")), "not a merclip"),
    Case(
        "report-garbage-number",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW.replace("0.5000", "lots"), GOOD_ROW])),
        "emotion_happy",
    ),
    Case(
        "report-ragged-row",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", ["0,1,2", GOOD_ROW])),
        "line 2",
    ),
    Case(
        "report-probability-out-of-range",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW.replace("0.6000", "7.5")])),
        "sentiment_positive",
    ),
    Case("report-folder", "merclip", cmd("report", lambda w: w.dir("sessions")), "folder"),
    Case("report-dev-null", "merclip", cmd("report", "/dev/null"), "not a regular file"),
    Case("report-missing", "merclip", cmd("report", lambda w: str(w.root / "gone.csv")), "not found"),
    Case("report-name-too-long", "merclip", cmd("report", lambda w: str(w.root / LONG)), "too long"),
    Case("report-newline-name", "merclip", cmd("report", lambda w: w.file("a\nb.csv", "x\n1\n")), "not a merclip"),
    Case(
        "report-would-overwrite-log",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.png", [GOOD_ROW])),
        "overwrite",
    ),
    Case(
        "report-out-is-folder",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW]), "--out", lambda w: w.dir("plots")),
        "folder",
    ),
    Case(
        "report-out-missing-folder",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW]), "--out", lambda w: str(w.root / "no/p.png")),
        "does not exist",
    ),
    Case(
        "report-out-symlink-loop",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW]), "--out", lambda w: w.loop("p.png")),
        "symbolic link",
    ),
    Case(
        "report-out-bad-suffix",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW]), "--out", lambda w: str(w.root / "p.txt")),
        ".png",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)


# ---- what still works ---------------------------------------------------------------------------------------
def test_report_skips_a_torn_last_row(tmp_path):
    from merclip.stream.report import read_session

    w = World.__new__(World)
    w.root = tmp_path
    path = w.session_csv("s.csv", [GOOD_ROW, GOOD_ROW.replace("0,0.000,2.000", "1,2.000,4.000"), "2,4.000,6.0"])
    session = read_session(path)
    assert session.t_end == [2.0, 4.0] and session.emotions["happy"] == [0.5, 0.5]
