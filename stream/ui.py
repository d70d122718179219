"""Terminal UI (rich): emotion bars (smoothed, raw value beside), a sentiment gauge, the last transcript,
modality status, window rate, latency and dropped windows, and a banner for zero-shot or random-weight
bundles so no one mistakes them for a trained model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .pipeline import SessionStats
from .records import Reading
from .smoothing import Smoother

BAR_WIDTH = 32
TRANSCRIPT_CHARS = 160  # the transcript line shows the last words, about two lines' worth
_STATUS_STYLE = {"ok": "green", "off": "dim", "waiting": "yellow", "no face": "yellow"}


def bar(value: float, width: int = BAR_WIDTH, threshold: float | None = None) -> Text:
    filled = max(0, min(width, round(value * width)))
    style = "bold green" if threshold is not None and value >= threshold else "cyan"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="grey37")


@dataclass
class UiState:
    title: str
    bundle: str
    source: str
    emotion_labels: list[str]
    sentiment_labels: list[str]
    threshold: float = 0.6
    banner: str = ""
    smoothing_s: float = 3.0  # the bars' smoothing time constant (stream seconds)
    last: Reading | None = None
    smoothed_emotions: dict[str, float] = field(default_factory=dict)
    smoothed_sentiment: dict[str, float] = field(default_factory=dict)
    transcript: str = ""  # the last words heard: final words, then the newest window's open ones
    final_words: str = ""
    open_words: str = ""
    started: float = field(default_factory=time.monotonic)
    top_counts: dict[str, int] = field(default_factory=dict)
    _smooth_e: Smoother | None = None
    _smooth_s: Smoother | None = None
    _relative: bool = False  # the bars show readings relative to the personal baseline

    def add(self, reading: Reading) -> None:
        """Bars follow each window as soon as it closes (its provisional reading); the summary counts
        final readings, which arrive one window later, so a window is never counted twice."""
        if self._smooth_e is None:
            self._smooth_e, self._smooth_s = Smoother(self.smoothing_s), Smoother(self.smoothing_s)
        if reading.final and reading.emotions:
            self.top_counts[reading.top_emotion] = self.top_counts.get(reading.top_emotion, 0) + 1
        if reading.final:
            self.final_words = (self.final_words + " " + reading.transcript).strip()[-TRANSCRIPT_CHARS:]
        if self.last is None or reading.window > self.last.window:  # else: the final of a window on screen
            self.last = reading
            if reading.adjusted_emotions is not None and not self._relative:  # baseline ready: start afresh
                self._relative = True
                self._smooth_e, self._smooth_s = Smoother(self.smoothing_s), Smoother(self.smoothing_s)
            if reading.emotions:  # relative to the personal baseline once there is one
                emotions = reading.adjusted_emotions or reading.emotions
                sentiment = reading.adjusted_sentiment or reading.sentiment
                self.smoothed_emotions = self._smooth_e.update(emotions, reading.t_end_s)
                self.smoothed_sentiment = self._smooth_s.update(sentiment, reading.t_end_s)
            self.open_words = "" if reading.final else reading.transcript
        elif reading.final and reading.window == self.last.window:
            self.open_words = ""  # the newest window's words are final now: shown once, in final_words
        self.transcript = (self.final_words + " " + self.open_words).strip()[-TRANSCRIPT_CHARS:]


def _sentiment_gauge(state: UiState) -> Text:
    values = state.smoothed_sentiment
    if set(state.sentiment_labels) == {"positive", "negative"} and values:
        pos = values.get("positive", 0.0)
        width = BAR_WIDTH
        marker = round(pos * width)
        gauge = Text("negative ", style="red") + Text("─" * marker, style="grey50") + Text("●", style="bold yellow")
        gauge += Text("─" * (width - marker), style="grey50") + Text(" positive", style="green")
        return gauge + Text(f"   {pos:.0%} positive")
    parts = Text()
    for label in state.sentiment_labels:
        parts += Text(f"{label} {values.get(label, 0.0):.0%}  ")
    return parts


def _reading_line(last: Reading | None) -> Text:
    """What the window reads as (an emotion, neutral, or uncertain), how sure, and the baseline's state."""
    line = Text("reading    ", style="bold")
    if last is None or not last.emotions:
        return line + Text("(waiting for the first window)", style="dim")
    shown = last.state or last.top_emotion
    line += Text(shown, style="yellow" if shown == "uncertain" else "bold green")
    if last.confidence == last.confidence:
        line += Text(f"  confidence {last.confidence:.2f}")
    if last.agreement == last.agreement:
        line += Text(f"  modalities agree {last.agreement:.2f}")
    if last.calibrating_s is not None:
        line += Text(f"  CALIBRATING your resting state: {last.calibrating_s:.0f} s left (stay neutral)",
                     style="bold magenta")  # fmt: skip
    elif last.adjusted_emotions is not None:
        line += Text("  (relative to your baseline)", style="magenta")
    return line


def render(state: UiState, stats: SessionStats) -> Group:
    parts = []
    if state.banner:
        parts.append(Panel(Text(state.banner, style="bold white on red", justify="center"), style="red"))
    table = Table(box=None, expand=False, show_header=True, header_style="bold")
    table.add_column("emotion", min_width=12, overflow="fold", max_width=40)
    table.add_column("smoothed", min_width=BAR_WIDTH)
    table.add_column("", justify="right")
    table.add_column("raw", justify="right", style="dim")
    raw = (state.last.adjusted_emotions or state.last.emotions) if state.last else {}
    for label in state.emotion_labels:
        value = state.smoothed_emotions.get(label)
        table.add_row(
            label,
            bar(value or 0.0, threshold=state.threshold),
            "—" if value is None else f"{value:.2f}",
            "—" if label not in raw else f"{raw[label]:.2f}",
        )
    parts.append(table)
    parts.append(_reading_line(state.last))
    parts.append(Text("sentiment  ", style="bold") + _sentiment_gauge(state))
    parts.append(Text("transcript ", style="bold") + Text(state.transcript or "(no speech yet)", style="italic"))
    status = Text("modalities ", style="bold")
    used = state.last.modalities if state.last else ""
    for key, name in (("V", "face"), ("A", "voice"), ("L", "words")):
        msg = stats.status.get(key, "")
        mark = "●" if key in used else "○"
        style = "green" if key in used else _STATUS_STYLE.get(msg, "red")
        status += Text(f"{mark} {name}", style=style) + Text(f" ({msg})  " if msg not in ("ok",) else "  ")
    parts.append(status)
    if stats.status.get("model", "ok") != "ok":  # e.g. a served model that went away
        parts.append(Text(f"model      {stats.status['model']}", style="bold red"))
    elapsed = max(1e-6, time.monotonic() - stats.started)
    latency = state.last.latency_ms if state.last else 0.0
    parts.append(
        Text(
            f"windows {stats.readings}  rate {stats.readings / elapsed:.2f}/s  latency {latency:.0f} ms "
            f"(p95 {stats.latency_p95_ms():.0f})  dropped {stats.dropped}  "
            f"t={state.last.t_end_s if state.last else 0:.0f}s",
            style="dim",
        )
    )
    title = f"{state.title} — {state.source} — {state.bundle}"
    return Group(Panel(Group(*parts), title=title, subtitle="q or Ctrl-C to stop", border_style="blue"))


def banner_for(bundle) -> str:
    notes = []
    if bundle.random_weights:
        notes.append("RANDOM WEIGHTS: readings are meaningless (demo/test model)")
    if bundle.mode == "zero-shot":
        notes.append("ZERO-SHOT: pretrained CLIP scored against label prompts, not a trained MER-CLIP model")
    return " · ".join(notes)


def summary(stats: SessionStats, state: UiState, log_path: str | None, notes: Sequence[str] = ()) -> str:
    """A one-paragraph session summary printed at the end. ``notes``: what the session went without (a
    missing camera or microphone, damaged packets skipped, a log that stopped), so no partial session is
    silent about it."""
    elapsed = time.monotonic() - stats.started
    text = (
        f"Session ended after {elapsed:.0f} s: {stats.readings} readings from {stats.windows} windows, "
        f"{stats.dropped} dropped, latency p95 {stats.latency_p95_ms():.0f} ms"
    )
    if stats.asr_errors or stats.engine_errors:
        text += f", {stats.asr_errors} ASR errors, {stats.engine_errors} model errors"
    text += f", {stats.late_items} late items"  # said when 0 too: nothing arrived after its window closed
    total = sum(state.top_counts.values())
    if total:
        shares = sorted(state.top_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        text += "; top emotion by window: " + ", ".join(f"{k} {v / total:.0%}" for k, v in shares)
    if stats.error:
        text += f"; the source stopped: {stats.error}"
    for note in notes:
        text += f"; {note}"
    if log_path:
        text += f". Log: {log_path}"
    return text + "."
