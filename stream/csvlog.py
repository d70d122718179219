"""CSV session log: one row per window, header first, flushed as written, never overwriting a file.

Columns (DESIGN §4): window, t_start_s, t_end_s, wall_time_utc, emotion_<label>…, sentiment_<label>…,
top_emotion, transcript, modalities, dropped_windows, late_items, latency_ms, asr_ms, model_ms, face_box (the window's
last face crop as normalised "x y w h", empty when no face was found or the bundle uses whole frames),
state (what the UI named: the emotion, the neutral word, or "uncertain"), confidence, agreement (of the
modalities used; empty with one), the setting every reading was computed from (reading_context,
window_s, hop_s, frames_per_window: the bundle's, frames as ``--frames`` asks if given; the same on every row,
so a row taken out of its file still says what it was read with), and with a personal baseline
(``--baseline S``) calibrating (1 while the baseline is being collected) and one adjusted_emotion_<label> /
adjusted_sentiment_<label> per label (relative to the baseline; empty while calibrating). top_emotion is the
emotion read or the neutral word; the emotion_/sentiment_ columns stay the raw (calibrated) probabilities,
never smoothed.

Formula injection (OWASP "CSV injection"): every text cell, header cells included, that starts with
``= + - @``, a tab, CR or LF is prefixed with a single quote so a spreadsheet shows it as text instead of
running it; numbers are written as plain numbers and stay numeric.

Nothing written is lost or torn: each row is one complete line written with one ``write`` call and
fsynced; if a write fails (disk full, quota, file-size limit, I/O error) the file is truncated back to
the end of the last complete row. Then logging stops for the rest of the session, which goes on (the
readings are still shown): ``failure`` says why, once, through ``on_failure``. A full disk is no reason
to stop watching, and every row that was logged stays intact and readable.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

from merclip.model.reading import ReadingSetting

from merclip.errors import MerClipError

from .records import Reading

log = logging.getLogger(__name__)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
# The first columns of every session log: an existing .csv that does not start with them is not ours.
HEADER_START = ("window", "t_start_s", "t_end_s", "wall_time_utc")
# What each reading was computed from (model/reading.py): the ReadingSetting's fields, context renamed.
READING_COLUMNS = ("reading_context", "window_s", "hop_s", "frames_per_window")


def escape_cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def columns(emotion_labels: list[str], sentiment_labels: list[str], adjusted: bool = False) -> list[str]:
    base = [
        "window", "t_start_s", "t_end_s", "wall_time_utc",
        *[f"emotion_{label}" for label in emotion_labels],
        *[f"sentiment_{label}" for label in sentiment_labels],
        "top_emotion", "transcript", "modalities", "dropped_windows", "late_items", "latency_ms", "asr_ms",
        "model_ms", "face_box", "state", "confidence", "agreement", *READING_COLUMNS,
    ]  # fmt: skip
    if adjusted:
        base += ["calibrating", *[f"adjusted_emotion_{label}" for label in emotion_labels],
                 *[f"adjusted_sentiment_{label}" for label in sentiment_labels]]  # fmt: skip
    return base


def describe_os_error(err: OSError) -> str:
    """A short, plain reason for a failed file operation."""
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EFBIG: "the file is too large (file size limit)",
        errno.ENAMETOOLONG: "the file name is too long",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "the file system is read-only",
        errno.ENOTDIR: "a part of the path is not a folder",
        errno.ENOENT: "no such file or folder (or it cannot be created there)",
        errno.EISDIR: "it is a folder",
    }
    return reasons.get(err.errno, err.strerror or str(err))


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def is_session_log(path: Path) -> bool:
    """True when ``path`` starts with a session-log header (so writing beside it as NAME-1.csv is safe)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            first = next(csv.reader([f.readline()]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return tuple(first[: len(HEADER_START)]) == HEADER_START


def new_session_path(target: str | Path, now: dt.datetime | None = None) -> Path:
    """A folder (or a path without .csv) gets a timestamped file inside; an existing file is never reused.

    Raises MerClipError (naming the path and the problem) for a target that cannot hold a session log:
    an existing file that is not a folder or not a session log, a folder that cannot be created or written,
    a file name longer than the file system allows. Nothing existing is ever overwritten."""
    given = Path(target).expanduser()
    target = given
    if target.suffix.lower() != ".csv" or target.is_dir():
        if target.exists() and not target.is_dir():
            raise MerClipError(
                f"cannot log to {given}: it exists and is not a folder (give a folder or a new .csv file name)"
            )
        stamp = (now or dt.datetime.now()).strftime("%Y-%m-%dT%H-%M-%S")
        target = target / f"{stamp}.csv"
    elif target.exists() and not is_session_log(target):
        raise MerClipError(
            f"cannot log to {given}: it exists and is not a merclip-live session log "
            "(it is left untouched: give a new .csv name or a folder)"
        )
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MerClipError(
            f"cannot log to {given}: cannot create the folder {folder}: {describe_os_error(err)}"
        ) from None
    if not folder.is_dir():
        raise MerClipError(f"cannot log to {given}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MerClipError(f"cannot log to {given}: the folder {folder} is not writable")
    candidate, n = target, 1
    while candidate.exists():
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
        n += 1
    size, limit = len(os.fsencode(candidate.name)), _name_max(folder)
    if size > limit:
        raise MerClipError(f"cannot log to {given}: the file name is too long ({size} bytes; at most {limit})")
    return candidate


def check_log_target(target: str | Path) -> Path:
    """Validate ``--log`` before the session starts (before a long first-run export); creates no file."""
    return new_session_path(target)


class SessionLog:
    def __init__(
        self,
        target: str | Path,
        emotion_labels: list[str],
        sentiment_labels: list[str],
        reading: ReadingSetting,
        on_failure: Callable[[str], None] | None = None,
        adjusted: bool = False,
    ):
        self.adjusted = adjusted  # a personal baseline is in use: add its columns
        self._reading = [escape_cell(reading.context), f"{reading.window_s:g}", f"{reading.hop_s:g}",
                         reading.frames_per_window]  # fmt: skip
        self.path = new_session_path(target)
        self.emotion_labels, self.sentiment_labels = list(emotion_labels), list(sentiment_labels)
        self.on_failure = on_failure or log.error
        self.failure = ""  # why logging stopped ("" while it works)
        self.rows = 0
        self._size = 0  # bytes of complete lines on disk
        try:
            # "x": fail rather than overwrite, even if another process created the name meanwhile.
            # Unbuffered binary: one write call per line, nothing held back in a buffer.
            self._file = open(self.path, "xb", buffering=0)
        except OSError as err:
            raise MerClipError(f"cannot log to {self.path}: {describe_os_error(err)}") from None
        header = [escape_cell(name) for name in columns(self.emotion_labels, self.sentiment_labels, self.adjusted)]
        if not self._append(self._line(header)):
            reason = self.failure
            self._close_file()
            try:
                self.path.unlink()
            except OSError:
                pass
            raise MerClipError(f"cannot log to {self.path}: {reason}")

    @staticmethod
    def _line(cells: list) -> bytes:
        buf = io.StringIO()
        csv.writer(buf).writerow(cells)
        return buf.getvalue().encode("utf-8")

    def _append(self, data: bytes) -> bool:
        """Write one complete line; on failure cut the file back to the last complete line."""
        if self.failure:
            return False
        try:
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                if not written:  # a regular file that accepts nothing: treat as full
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
            os.fsync(self._file.fileno())
        except OSError as err:
            self.failure = describe_os_error(err)
            self._rollback()
            return False
        self._size += len(data)
        return True

    def _rollback(self) -> None:
        try:
            self._file.truncate(self._size)
            self._file.seek(self._size)
            os.fsync(self._file.fileno())
        except OSError as err:  # nothing more can be done; the failure is already reported
            log.debug("could not truncate %s back to %d bytes: %s", self.path, self._size, err)

    def write(self, r: Reading) -> None:
        if self.failure:
            return
        # numbers are written as numbers; every text cell goes through escape_cell
        row = [r.window, f"{r.t_start_s:.3f}", f"{r.t_end_s:.3f}", escape_cell(r.wall_time_utc)]
        row += [_prob(r.emotions.get(label)) for label in self.emotion_labels]
        row += [_prob(r.sentiment.get(label)) for label in self.sentiment_labels]
        row += [escape_cell(r.top_emotion), escape_cell(r.transcript), escape_cell(r.modalities), r.dropped_windows,
                r.late_items, f"{r.latency_ms:.1f}", f"{r.asr_ms:.1f}", f"{r.model_ms:.1f}", _box(r.face_box),
                escape_cell(r.state or r.top_emotion), _num(r.confidence), _num(r.agreement),
                *self._reading]  # fmt: skip
        if self.adjusted:
            adj_e, adj_s = r.adjusted_emotions or {}, r.adjusted_sentiment or {}
            row += [1 if r.calibrating_s is not None else 0]
            row += [_prob(adj_e.get(label)) for label in self.emotion_labels]
            row += [_prob(adj_s.get(label)) for label in self.sentiment_labels]
        # one write call per complete row: after a SIGKILL or a full disk at most the row in flight is missing
        if self._append(self._line(row)):
            self.rows += 1
        else:
            self.on_failure(
                f"logging stopped: cannot write {self.path}: {self.failure}; the {self.rows} rows written are "
                "intact, the session goes on without logging"
            )

    def _close_file(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass

    def close(self) -> None:
        if not self._file.closed:
            if not self.failure:
                try:
                    os.fsync(self._file.fileno())
                except OSError:
                    pass
            self._close_file()


def _box(box: tuple[float, ...] | None) -> str:
    """Space-separated so the cell stays one plain text value (no quoting, never a formula)."""
    return "" if box is None else " ".join(f"{v:.4f}" for v in box)


def _prob(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _num(value: float) -> str:
    return "" if value != value else f"{value:.4f}"  # nan: empty
