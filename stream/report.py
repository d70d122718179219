"""`merclip report SESSION.csv`: a PNG timeline of a logged session and a short text summary.

``--compare OTHER.csv`` puts two runs of the same session side by side (e.g. live and `merclip rescore` of its
recording with another model or labels): both summaries, window-by-window agreement, one plot with both."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from merclip.model.reading import ReadingSetting

from merclip.errors import MerClipError

from .csvlog import READING_COLUMNS


@dataclass(frozen=True)
class Session:
    t_end: list[float]
    emotions: dict[str, list[float]]
    sentiment: dict[str, list[float]]
    transcripts: list[tuple[float, str]]
    top: list[str]
    dropped: int
    reading: str = ""  # what every reading was computed from (ReadingSetting.describe); "" in older logs


REQUIRED = ("window", "t_end_s", "top_emotion", "transcript", "dropped_windows")


def _count(x: float) -> int:
    return 0 if math.isnan(x) else int(x)


def _cell(text: str | None) -> str:
    text = "" if text is None else text
    return repr(text if len(text) <= 30 else text[:27] + "...")


def read_session(path: str | Path) -> Session:
    """Read a CSV written by ``merclip-live --log``; anything else is refused in one line naming the problem.
    A torn last row (the process was killed while writing it) is skipped."""
    path = Path(path)
    try:
        if not path.exists():
            raise MerClipError(f"session log not found: {path}")
        if path.is_dir():
            raise MerClipError(f"{path} is a folder: give one session CSV written by merclip-live --log")
        if not path.is_file():
            raise MerClipError(f"{path} is not a regular file: give a session CSV written by merclip-live --log")
        raw = path.read_bytes()
    except OSError as err:
        raise MerClipError(f"cannot read session log {path}: {err.strerror}") from None
    not_log = f"{path} is not a merclip-live session log"
    if not raw.strip():
        raise MerClipError(f"{path} is empty: no header and no readings")
    if b"\0" in raw:
        raise MerClipError(f"{not_log} (a binary file)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MerClipError(f"{not_log} (not UTF-8 text, byte {err.start})") from None
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise MerClipError(f"{not_log} (unreadable CSV: {err})") from None
    header, body = table[0], table[1:]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise MerClipError(f"{not_log} (no {', '.join(missing)} column{'s' if len(missing) > 1 else ''})")
    emo_cols = [c for c in header if c.startswith("emotion_")]
    sent_cols = [c for c in header if c.startswith("sentiment_")]
    if not emo_cols:
        raise MerClipError(f"{not_log} (no emotion_<label> columns)")
    if len(set(header)) != len(header):
        raise MerClipError(f"{not_log} (repeated column names)")
    body = [r for r in body if r]  # csv yields [] for blank lines
    if body and len(body[-1]) != len(header):
        body = body[:-1]  # the row in flight when the session was killed
    if not body:
        raise MerClipError(f"{path} has no readings (header only: the session ended before its first window)")

    def num(row: dict, column: str, line: int, lo: float = -math.inf, hi: float = math.inf) -> float:
        value = row[column].strip()
        if value == "":
            return math.nan
        try:
            x = float(value)
        except ValueError:
            x = math.nan
            ok = False
        else:
            ok = math.isfinite(x) and lo <= x <= hi
        if not ok:
            raise MerClipError(f"{path} line {line}: {column} is not a valid value: {_cell(row[column])}")
        return x

    rows = []
    for i, values in enumerate(body):
        line = i + 2
        if len(values) != len(header):
            raise MerClipError(f"{path} line {line} has {len(values)} cells, the header {len(header)}")
        rows.append((line, dict(zip(header, values, strict=True))))
    t_end = [num(r, "t_end_s", line) for line, r in rows]
    if any(math.isnan(t) for t in t_end):
        line = rows[[math.isnan(t) for t in t_end].index(True)][0]
        raise MerClipError(f"{path} line {line}: t_end_s is empty")
    return Session(
        t_end=t_end,
        emotions={c[len("emotion_") :]: [num(r, c, line, 0.0, 1.0) for line, r in rows] for c in emo_cols},
        sentiment={c[len("sentiment_") :]: [num(r, c, line, 0.0, 1.0) for line, r in rows] for c in sent_cols},
        transcripts=[
            (t, r["transcript"].lstrip("'")) for t, (_, r) in zip(t_end, rows, strict=True) if r["transcript"]
        ],
        top=[r["top_emotion"] for _, r in rows if r["top_emotion"]],
        dropped=max((_count(num(r, "dropped_windows", line, 0)) for line, r in rows), default=0),
        reading=_reading(path, header, rows),
    )


def _reading(path: Path, header: list[str], rows: list[tuple[int, dict]]) -> str:
    """The reading setting the log's rows name (a log from before those columns names none)."""
    if not all(c in header for c in READING_COLUMNS):
        return ""
    seen = {tuple(r[c] for c in READING_COLUMNS) for _, r in rows}
    if len(seen) > 1:
        return "more than one setting (rows from different sessions?)"
    line, row = rows[0]
    try:
        setting = ReadingSetting.from_json({key: row[column] for key, column in zip(
            ("context", "window_s", "hop_s", "frames_per_window"), READING_COLUMNS, strict=True)})  # fmt: skip
    except MerClipError as err:
        raise MerClipError(f"{path} line {line}: {err}") from None
    return setting.describe()


def summarize(session: Session) -> str:
    n = len(session.t_end)
    lines = [f"{n} windows, {session.t_end[-1]:.0f} s of stream, {session.dropped} dropped."]
    if session.top:
        counts: dict[str, int] = {}
        for label in session.top:
            counts[label] = counts.get(label, 0) + 1
        shares = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append(
            "Dominant emotion (share of windows): " + ", ".join(f"{k} {v / len(session.top):.0%}" for k, v in shares)
        )
    for label, values in session.sentiment.items():
        valid = [v for v in values if v == v]
        if valid:
            lines.append(f"Mean {label} sentiment: {sum(valid) / len(valid):.2f}")
            break
    lines.append(f"Windows with speech: {len(session.transcripts)} of {n}.")
    if session.reading:
        lines.append(f"Each reading: {session.reading}.")
    return "\n".join(lines)


def plot_session(session: Session, out: str | Path, title: str = "") -> Path:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # transcripts in any script
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_s) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    for label, values in session.emotions.items():
        ax_e.plot(session.t_end, values, marker="o", markersize=3, label=label)
    ax_e.set_ylim(0, 1)
    ax_e.set_ylabel("emotion probability")
    ax_e.legend(loc="upper left", ncol=min(6, len(session.emotions)), fontsize=8)
    ax_e.grid(alpha=0.3)
    for label, values in session.sentiment.items():
        ax_s.plot(session.t_end, values, label=label)
    ax_s.set_ylim(0, 1)
    ax_s.set_ylabel("sentiment")
    ax_s.set_xlabel("stream time (s, window end)")
    ax_s.legend(loc="upper left", fontsize=8)
    ax_s.grid(alpha=0.3)
    for t, text in session.transcripts:  # mark the moments speech was heard
        for ax in (ax_e, ax_s):
            ax.axvline(t, color="grey", alpha=0.25, linewidth=1)
        short = text if len(text) <= 28 else text[:25] + "…"
        ax_e.annotate(short, (t, 0.98), rotation=90, fontsize=6, va="top", ha="right", color="dimgray")
    ax_e.set_title(title or "MER-CLIP Live session")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _plot_target(session_path: Path, out: str | None) -> Path:
    """Where the plot goes; refused when it would replace the session log itself or cannot be a file."""
    target = Path(out) if out else session_path.with_suffix(".png")
    try:
        if target.resolve() == session_path.resolve():
            raise MerClipError(f"the plot would overwrite the session log {session_path}: pass --out FILE.png")
        if target.is_dir():
            raise MerClipError(f"--out {target} is a folder: give an image file name, e.g. {target / 'session.png'}")
        if target.suffix.lower() not in PLOT_SUFFIXES:
            raise MerClipError(f"--out {target}: the plot file name must end in {', '.join(PLOT_SUFFIXES)}")
        if target.exists() and not target.is_file():
            raise MerClipError(f"--out {target} is not a regular file")
        if not target.parent.is_dir():
            raise MerClipError(f"cannot write the plot {target}: folder {target.parent} does not exist")
    except OSError as err:
        raise MerClipError(f"cannot write the plot {target}: {err.strerror}") from None
    except RuntimeError:  # pathlib's resolve() on a symbolic link loop
        raise MerClipError(f"cannot write the plot {target}: a symbolic link loop") from None
    return target


def compare(a: Session, b: Session, name_a: str, name_b: str) -> str:
    """Window-by-window agreement of two runs of one session (windows matched by their end time)."""
    index_b = {round(t, 3): i for i, t in enumerate(b.t_end)}
    pairs = [(i, index_b[round(t, 3)]) for i, t in enumerate(a.t_end) if round(t, 3) in index_b]
    lines = [f"== {name_a}", summarize(a), f"== {name_b}", summarize(b), "== side by side"]
    lines.append(f"{len(pairs)} windows in both ({len(a.t_end)} in {name_a}, {len(b.t_end)} in {name_b}).")
    if a.reading and b.reading and a.reading != b.reading:
        lines.append(f"Read differently: {name_a} {a.reading}; {name_b} {b.reading}.")
    if not pairs:
        return "\n".join(lines)
    same_top = sum(a.top[i] == b.top[j] for i, j in pairs if i < len(a.top) and j < len(b.top))
    lines.append(f"Same top emotion in {same_top} of {len(pairs)} windows.")
    for kind, da, db in (("emotion", a.emotions, b.emotions), ("sentiment", a.sentiment, b.sentiment)):
        shared = [label for label in da if label in db]
        if shared:
            diffs = [abs(da[label][i] - db[label][j]) for label in shared for i, j in pairs]
            lines.append(f"{kind} ({', '.join(shared)}): mean |difference| {sum(diffs) / len(diffs):.4f}, "
                         f"max {max(diffs):.4f}")  # fmt: skip
        only = sorted(set(da) ^ set(db))
        if only:
            lines.append(f"{kind} labels in one run only: {', '.join(only)}")
    return "\n".join(lines)


def plot_pair(a: Session, b: Session, out: str | Path, names: tuple[str, str]) -> Path:
    """Two runs of one session, one above the other on the same time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for ax, session, name in zip(axes, (a, b), names, strict=True):
        for label, values in session.emotions.items():
            ax.plot(session.t_end, values, marker="o", markersize=3, label=label)
        ax.set_ylim(0, 1)
        ax.set_ylabel("emotion probability")
        ax.set_title(name)
        ax.legend(loc="upper left", ncol=min(7, max(1, len(session.emotions))), fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("stream time (s, window end)")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cmd_report(args) -> int:
    session = read_session(args.session)
    other_path = getattr(args, "compare", None)
    out = _plot_target(Path(args.session), args.out)
    try:
        if other_path:
            other = read_session(other_path)
            names = (Path(args.session).name, Path(other_path).name)
            plot_pair(session, other, out, names)
        else:
            plot_session(session, out, title=Path(args.session).name)
    except OSError as err:
        raise MerClipError(f"cannot write the plot {out}: {err.strerror or err}") from None
    print(compare(session, other, *names) if other_path else summarize(session))
    print(f"plot: {out}")
    return 0
