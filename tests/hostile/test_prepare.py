"""`merclip prepare`: hostile dataset files (manifest CSV/JSONL, MMSA, MOSEI, MELD) and flags.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import pytest

from .world import (
    MANIFEST_HEADER,
    MELD_HEADER,
    MMSA_HEADER,
    Case,
    cmd,
    run_case,
)

CASES = [
    Case(
        "manifest-csv-no-text",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.csv", "id,split\na,train\n")),
        "text",
    ),  # fmt: skip
    Case(
        "manifest-csv-bad-split",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,training,,hi,1,0\n"),
        ),  # fmt: skip
        "split",
    ),
    Case(
        "manifest-csv-bad-sentiment",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,train,,hi,great,0\n"),
        ),  # fmt: skip
        "sentiment",
    ),
    Case(
        "manifest-csv-bad-emotion",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,train,,hi,1,very\n"),
        ),  # fmt: skip
        "emotion_happy",
    ),
    Case(
        "manifest-csv-start-after-end",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", "split,text,start_s,end_s\ntrain,hi,5,2\n"),
        ),  # fmt: skip
        "start_s",
    ),
    Case(
        "manifest-csv-ragged",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,train,,hi\n"),
        ),  # fmt: skip
        "cells",
    ),
    Case(
        "manifest-csv-header-only",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.csv", MANIFEST_HEADER + "\n")),
        "no clips",
    ),
    Case(
        "manifest-csv-binary",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.csv", b"\x00\x9f" * 99)),
        "binary",
    ),  # fmt: skip
    Case(
        "manifest-csv-latin1",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,train,,café,1,0\n".encode("latin-1")),
        ),
        "UTF-8",
    ),  # fmt: skip
    Case(
        "manifest-is-folder",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.dir("data")),
        "folder",
    ),  # fmt: skip
    Case(
        "manifest-jsonl-bad-line",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.jsonl", '{"split": "train", "text": "a"}\n{"split": "train", "text"\n'),
        ),
        "line 2",
    ),  # fmt: skip
    Case(
        "manifest-jsonl-not-object",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.jsonl", '["train", "a"]\n')),
        "JSON object",
    ),  # fmt: skip
    Case(
        "manifest-jsonl-no-split",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.jsonl", '{"text": "a"}\n')),
        "split",
    ),  # fmt: skip
    Case(
        "mmsa-wrong-columns",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "mosi",
            "--data-root",
            lambda w: w.dir("MOSI", {"label.csv": "id,sentence,score\n1,hi,2\n"}),
        ),  # fmt: skip
        "video_id",
    ),
    Case(
        "mmsa-label-not-number",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "mosi",
            "--data-root",
            lambda w: w.dir("MOSI", {"label.csv": f"{MMSA_HEADER}\nv,0,hi,positive,train\n"}),
        ),  # fmt: skip
        "label",
    ),
    Case(
        "mmsa-bad-mode",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "mosi",
            "--data-root",
            lambda w: w.dir("MOSI", {"label.csv": f"{MMSA_HEADER}\nv,0,hi,1.0,holdout\n"}),
        ),  # fmt: skip
        "split",
    ),
    Case(
        "mosei-csd-not-hdf5",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "mosei",
            "--data-root",
            lambda w: w.dir(
                "MOSEI", {"label.csv": f"{MMSA_HEADER}\nv,0,hi,1.0,train\n", "CMU_MOSEI_Labels.csd": "not hdf5"}
            ),
        ),  # fmt: skip
        "HDF5",
    ),
    Case(
        "mmsa-root-is-file",
        "merclip",
        cmd("prepare", "--dataset", "mosei", "--data-root", lambda w: w.file("label.csv", MMSA_HEADER)),
        "is a file",
    ),
    Case(
        "mmsa-root-missing",
        "merclip",
        cmd("prepare", "--dataset", "mosei", "--data-root", lambda w: str(w.root / "nodata")),
        "does not exist",
    ),
    Case(
        "meld-wrong-columns",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD", {"train_sent_emo.csv": "Utterance,Emotion\nhi,joy\n"}),
        ),  # fmt: skip
        "Dialogue_ID",
    ),
    Case(
        "meld-bad-ids",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD", {"train_sent_emo.csv": f"{MELD_HEADER}\n1,hi,Ross,joy,positive,one,0\n"}),
        ),
        "Dialogue_ID",
    ),  # fmt: skip
    Case("prepare-synthetic-0", "merclip", cmd("prepare", "--synthetic", "0"), "--synthetic"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)
