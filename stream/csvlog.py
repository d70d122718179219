"""CSV session log: one row per window, header first, flushed as written, never overwriting a file.

Columns (DESIGN §4): window, t_start_s, t_end_s, wall_time_utc, emotion_<label>…, sentiment_<label>…,
top_emotion, transcript, modalities, dropped_windows, latency_ms, asr_ms, model_ms.
Text cells that a spreadsheet would run as a formula are prefixed with a quote.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path

from .records import Reading

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def escape_cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def columns(emotion_labels: list[str], sentiment_labels: list[str]) -> list[str]:
    return [
        "window", "t_start_s", "t_end_s", "wall_time_utc",
        *[f"emotion_{label}" for label in emotion_labels],
        *[f"sentiment_{label}" for label in sentiment_labels],
        "top_emotion", "transcript", "modalities", "dropped_windows", "latency_ms", "asr_ms", "model_ms",
    ]  # fmt: skip


def new_session_path(target: str | Path, now: dt.datetime | None = None) -> Path:
    """A folder (or a path without .csv) gets a timestamped file inside; an existing file is never reused."""
    target = Path(target).expanduser()
    if target.suffix.lower() != ".csv":
        stamp = (now or dt.datetime.now()).strftime("%Y-%m-%dT%H-%M-%S")
        target = target / f"{stamp}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = target, 1
    while candidate.exists():
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
        n += 1
    return candidate


class SessionLog:
    def __init__(self, target: str | Path, emotion_labels: list[str], sentiment_labels: list[str]):
        self.path = new_session_path(target)
        self.emotion_labels, self.sentiment_labels = list(emotion_labels), list(sentiment_labels)
        # "x": fail rather than overwrite, even if another process created the name meanwhile
        self._file = open(self.path, "x", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(columns(self.emotion_labels, self.sentiment_labels))
        self._flush()
        self.rows = 0

    def _flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def write(self, r: Reading) -> None:
        row = [r.window, f"{r.t_start_s:.3f}", f"{r.t_end_s:.3f}", r.wall_time_utc]
        row += [_prob(r.emotions.get(label)) for label in self.emotion_labels]
        row += [_prob(r.sentiment.get(label)) for label in self.sentiment_labels]
        row += [r.top_emotion, escape_cell(r.transcript), r.modalities, r.dropped_windows,
                f"{r.latency_ms:.1f}", f"{r.asr_ms:.1f}", f"{r.model_ms:.1f}"]  # fmt: skip
        # one write call per row: after a SIGKILL at most the row in flight is missing
        self._writer.writerow(row)
        self._flush()
        self.rows += 1

    def close(self) -> None:
        if not self._file.closed:
            self._flush()
            self._file.close()


def _prob(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
