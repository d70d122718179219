"""`merclip report SESSION.csv`: a PNG timeline of a logged session and a short text summary."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from merclip.errors import MerClipError


@dataclass(frozen=True)
class Session:
    t_end: list[float]
    emotions: dict[str, list[float]]
    sentiment: dict[str, list[float]]
    transcripts: list[tuple[float, str]]
    top: list[str]
    dropped: int


def read_session(path: str | Path) -> Session:
    path = Path(path)
    if not path.is_file():
        raise MerClipError(f"session log not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise MerClipError(f"{path} has no readings (empty session or not a merclip-live log)")
    fields = rows[0].keys()
    if "t_end_s" not in fields or "top_emotion" not in fields:
        raise MerClipError(f"{path} is not a merclip-live session log (no t_end_s/top_emotion columns)")
    emo_cols = [c for c in fields if c.startswith("emotion_")]
    sent_cols = [c for c in fields if c.startswith("sentiment_")]

    def num(value: str) -> float:
        return float(value) if value not in ("", None) else float("nan")

    t_end = [num(r["t_end_s"]) for r in rows]
    return Session(
        t_end=t_end,
        emotions={c[len("emotion_") :]: [num(r[c]) for r in rows] for c in emo_cols},
        sentiment={c[len("sentiment_") :]: [num(r[c]) for r in rows] for c in sent_cols},
        transcripts=[(t, r["transcript"].lstrip("'")) for t, r in zip(t_end, rows, strict=True) if r["transcript"]],
        top=[r["top_emotion"] for r in rows if r["top_emotion"]],
        dropped=max((int(r["dropped_windows"] or 0) for r in rows), default=0),
    )


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


def cmd_report(args) -> int:
    session = read_session(args.session)
    out = Path(args.out) if args.out else Path(args.session).with_suffix(".png")
    plot_session(session, out, title=Path(args.session).name)
    print(summarize(session))
    print(f"plot: {out}")
    return 0
