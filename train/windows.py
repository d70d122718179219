"""A clip cut into the monitor's windows: ``merclip eval --protocol windows``, window training, calibration.

The monitor never reads a whole clip: every ``hop_s`` it reads a window's frames, voice and the words its
reading context takes (``model/reading.py``). So a clip is cut exactly as ``merclip-live`` cuts a stream
of the clip's length: the live ``Windower`` decides how many windows there are and where (the stream's end
closes a last, shorter window once it holds ``windowing.MIN_TRAILING_S``, as live); each
word belongs to the window whose own span holds its midpoint (``stream/speech.py``'s rule; the first window
also owns the words before it, the last the words after it, as live, where the stream's end after the last
window is heard with it); each window's
reading reads ``reading_words`` at the window's end. Every window carries its clip's labels.

Word times: a prepared clip with speech holds Whisper's word timestamps matched to its transcript
(``entry["words"]``, written by ``merclip prepare``); where only text exists (MELD's CSV) the words are
spread over the utterance's span (``duration_s``: MELD's EndTime - StartTime), or, with no span either,
over the time they would take at ``SPEAKING_RATE_WPS``. Frames and voice come from the windows ``merclip
prepare`` cut from the media with the live windower and face tracker (``entry["windows"]``).
"""

from __future__ import annotations

import logging

import numpy as np
from merclip.model.reading import ReadingSetting, SpreadWord, join_text, reading_words, spread_words, window_words
from merclip.stream.records import AudioBlock, Frame, SourceEvent
from merclip.stream.windowing import Windower, cut_windows

from merclip.errors import MerClipError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# What each recipe reads and trains on when the config says "auto" (capture.context, train.samples): ours
# trains for the monitor's readings, chosen by measurement (RESULTS.md, "Reading what the monitor reads");
# the paper's keeps whole clips, so its tables stay reproducible, and is read live like them.
RECIPE_CONTEXT = {"merclip": "utterance", "paper": "utterance"}
RECIPE_SAMPLES = {"merclip": "views", "paper": "clips"}
# Taught by teachers (``--teachers``), ours trains on every window and every clip each epoch: the teachers'
# soft readings make each extra window worth learning, where the labels alone made it worse (RESULTS.md,
# "Several runs, and one model taught by them").
TAUGHT_SAMPLES = "both"
# Words per second of conversational English (MELD train's median, 2.57): the span of a transcript that
# has no times at all.
SPEAKING_RATE_WPS = 2.5


def clip_duration(entry: dict) -> float:
    """How long the clip lasts on the stream clock."""
    for key in ("stream_s", "duration_s"):  # the media's own length (prepare), else the dataset's span
        value = entry.get(key)
        if value is not None and value > 0:
            return float(value)
    return max(1, len(entry.get("text", "").split())) / SPEAKING_RATE_WPS


def clip_words(entry: dict) -> list[SpreadWord]:
    """The clip's words with times: Whisper's (matched to the transcript) where prepare found them, else the
    transcript spread over the clip."""
    if entry.get("words"):
        return [SpreadWord(float(a), float(b), str(t)) for a, b, t in entry["words"]]
    return spread_words(entry.get("text", ""), 0.0, clip_duration(entry))


def window_bounds(duration_s: float, setting: ReadingSetting) -> list[tuple[float, float]]:
    """The windows the live windower makes of a stream of ``duration_s`` (one audio track)."""
    windower = Windower(setting.window_s, setting.hop_s, setting.frames_per_window, SAMPLE_RATE, tracks="A")
    silence = [AudioBlock(0.0, np.zeros(int(round(duration_s * SAMPLE_RATE)), np.float32))]
    return [(w.t_start_s, w.t_end_s) for w in cut_windows(silence, windower)]


def window_entries(entries: list[dict], setting: ReadingSetting) -> list[dict]:
    """Each clip entry -> one entry per window the monitor would read of it: the clip's labels, the window's
    bounds and index, ``text`` = the words its reading reads, ``own_text`` = the words it owns (the CSV's)."""
    out = []
    for entry in entries:
        if entry.get("has_video") or entry.get("has_audio"):
            cached = entry.get("windows")
            if cached is None:
                raise MerClipError(
                    f"clip {entry['clip_id']}: the cache was prepared before windows were cut: run `merclip "
                    "prepare` again (or use --protocol clips)"
                )
            if entry.get("window_frames", setting.frames_per_window) != setting.frames_per_window:
                raise MerClipError(
                    f"the cache holds {entry['window_frames']} frames per window and the model reads "
                    f"{setting.frames_per_window}: cut the windows again with capture.frames_per_window = "
                    f"{setting.frames_per_window} (`merclip prepare`; ablate's own synthetic set: delete it), or "
                    "let eval score whole clips (--protocol clips)"
                )
            bounds = [(w["t_start_s"], w["t_end_s"]) for w in cached]
        else:
            bounds = window_bounds(clip_duration(entry), setting)
        words = clip_words(entry)
        for k, (t0, t1) in enumerate(bounds):
            ends = dict(first=k == 0, last=k == len(bounds) - 1)
            out.append(entry | {
                "clip_text": entry.get("text", ""),
                "text": join_text(reading_words(words, t1, setting, **ends)),
                "own_text": join_text(window_words(words, t1, setting.hop_s, **ends)),
                "window": k, "t_start_s": t0, "t_end_s": t1,
            })  # fmt: skip
    return out


# ---- media: what merclip prepare caches ----------------------------------------------------------------
class _Segment:
    """A clip that is a span of a longer file (a manifest's start_s/end_s): its items, moved to start at 0."""

    def __init__(self, source, start_s: float | None, end_s: float | None):
        self.source, self.start_s, self.end_s = source, start_s or 0.0, end_s
        self.tracks = source.tracks
        self.stream_s = 0.0  # how far the clip's media reach on the stream clock

    def __iter__(self):
        for item in self.source:
            t = item.t_s - self.start_s
            if isinstance(item, SourceEvent):
                yield SourceEvent(max(t, 0.0), item.modality, item.status, item.message)
            elif self.end_s is not None and item.t_s >= self.end_s:
                continue  # past the clip (the file goes on; its tracks still end for the windower)
            elif isinstance(item, Frame):
                if t >= 0:
                    self.stream_s = max(self.stream_s, t)
                    yield Frame(t, item.rgb)
            else:
                skip = max(0, int(round(-t * SAMPLE_RATE)))  # a block across the clip's start: its tail
                if skip < len(item.samples):
                    block = AudioBlock(t + skip / SAMPLE_RATE, item.samples[skip:])
                    self.stream_s = max(self.stream_s, block.t_s + len(block.samples) / SAMPLE_RATE)
                    yield block


def media_windows(path: str, setting: ReadingSetting, face=None, start_s=None, end_s=None) -> tuple[list, float]:
    """(the windows merclip-live makes of a clip's media, how long the media last): the live file source,
    windower and face tracker (``face``: a ``FaceTracker`` or None), replayed as fast as possible."""
    from merclip.stream.sources import FileSource

    segment = _Segment(FileSource(path, realtime=False), start_s, end_s)
    windower = Windower(setting.window_s, setting.hop_s, setting.frames_per_window, SAMPLE_RATE, face=face)
    windows = list(cut_windows(segment, windower))
    return windows, segment.stream_s


def align_words(transcript: str, heard: list) -> list[list] | None:
    """The transcript's words with the times Whisper heard them at (``heard``: timed words of the clip's
    audio): each transcript word Whisper also heard takes its time, the others are placed evenly between
    their matched neighbours. None when Whisper heard too little of the transcript to trust (then the words
    are spread over the clip)."""
    import difflib

    said = transcript.split()
    if not said or not heard:
        return None
    norm = [_norm(w) for w in said]
    matcher = difflib.SequenceMatcher(a=norm, b=[_norm(w.text) for w in heard], autojunk=False)
    times: list[tuple[float, float] | None] = [None] * len(said)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            w = heard[block.b + k]
            times[block.a + k] = (w.start_s, w.end_s)
    if sum(t is not None for t in times) < 0.5 * len(said):
        return None
    out, k = [], 0
    while k < len(said):
        if times[k] is not None:
            out.append([times[k][0], times[k][1], said[k]])
            k += 1
            continue
        j = k
        while j < len(said) and times[j] is None:
            j += 1
        lo = out[-1][1] if out else (times[j][0] if j < len(said) else 0.0)
        hi = times[j][0] if j < len(said) else max(lo, heard[-1].end_s)
        for i, word in enumerate(spread_words(" ".join(said[k:j]), lo, max(hi, lo))):
            out.append([word.start_s, word.end_s, said[k + i]])
        k = j
    return out


def _norm(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum() or ch == "'")


def training_reading(cfg) -> tuple[ReadingSetting, str]:
    """(how the model being trained will be read, what its training samples are: windows, clips, both or
    views). The frame count is what the model sees per reading: the paper recipe's 12 frames per clip, ours
    the monitor's ``capture.frames_per_window``."""
    recipe = cfg.train.recipe
    context = cfg.capture.context if cfg.capture.context != "auto" else RECIPE_CONTEXT[recipe]
    frames = cfg.train.frames if recipe == "paper" else cfg.capture.frames_per_window
    samples = cfg.train.samples
    if samples == "auto":
        samples = (
            TAUGHT_SAMPLES
            if recipe == "merclip" and (cfg.train.teachers or cfg.train.teacher_runs not in ("auto", "0"))
            else RECIPE_SAMPLES[recipe]
        )
    return ReadingSetting(context, cfg.capture.window_s, cfg.capture.hop_s, frames), samples


def training_entries(entries: list[dict], samples: str, setting: ReadingSetting) -> list[dict]:
    """A split's training samples: its clips cut into windows, the clips themselves, or both (a clip that
    is a single window reading all of its words is that window: it is not added twice)."""
    windows = window_entries(entries, setting) if samples in ("windows", "both", "views") else []
    if samples not in ("both", "views"):
        return windows or list(entries)
    per_clip: dict[str, list[dict]] = {}
    for w in windows:
        per_clip.setdefault(w["clip_id"], []).append(w)
    same = {c for c, ws in per_clip.items() if len(ws) == 1 and ws[0]["text"].split() == ws[0]["clip_text"].split()}
    if samples == "views":  # one sample per clip and epoch: the clip itself or one of its windows, drawn anew
        return [e | {"views": per_clip.get(e["clip_id"], []), "whole": e["clip_id"] not in same} for e in entries]
    return windows + [e for e in entries if e["clip_id"] not in same]


def has_windows(entries: list[dict]) -> bool:
    """Whether every clip with media holds the windows ``merclip prepare`` cut from it (text-only clips are
    cut from their words alone)."""
    return all("windows" in e for e in entries if e.get("has_video") or e.get("has_audio"))


def use_samples(cfg, train_ds, valid_ds) -> tuple[ReadingSetting, str]:
    """Turn a run's train and validation datasets into the recipe's samples, validation on the monitor's
    windows for our recipe (the best epoch is the one whose readings the monitor would show are best);
    returns (how the model will be read, what its samples are)."""
    setting, samples = training_reading(cfg)
    if not has_windows(train_ds.entries + valid_ds.entries):
        log.warning(
            "this cache holds no monitor windows (it was prepared by an older version): training and "
            "selecting on whole clips; run `merclip prepare` again to train on what the monitor reads"
        )
        return setting, "clips"
    train_ds.entries = training_entries(train_ds.entries, samples, setting)
    if cfg.train.recipe != "paper":  # the paper's tables select on whole clips
        valid_ds.entries = window_entries(valid_ds.entries, setting)
    if samples != "clips":
        train_ds.frames_per_sample = valid_ds.frames_per_sample = setting.frames_per_window
    return setting, samples
