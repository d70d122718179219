"""The speech path measured: each transcription mode's words against what was said (WER), on the sample
clip or any recording (``merclip bench --speech FILE``), and how long a spoken word takes to reach the
screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from merclip.stream.sources import SAMPLE_RATE, media_error, sample_path
from merclip.stream.speech import normalize
from merclip.stream.transcriber import WhisperOptions, load_whisper, open_speech

from .measure import stats_ms
from .options import BenchOptions

# What is said in the packaged sample clip (JFK, from the openai/whisper repository's test clip).
SAMPLE_TRANSCRIPT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(" ".join(map(normalize, reference.split())), " ".join(map(normalize, hypothesis.split()))))


def asr_times(opts: BenchOptions, windows, repeats) -> tuple[dict[str, list[float]], list[str], dict]:
    """Each speech path over the whole clip, window by window as live: per-window ms, words, WER."""
    out, texts, wer = {}, [], {}
    for name, mode in (("asr", "stream"), ("asr_window_unpadded", "window-unpadded")):
        samples = []
        for _ in range(max(1, -(-repeats // len(windows)))):
            transcriber, _ = open_speech(WhisperOptions(model=opts.asr_model, mode=mode))
            finals: dict[int, str] = {}
            for w in windows:
                update = transcriber.push(w.index, w.t_start_s, w.t_end_s, w.audio)
                samples.append(update.ms / 1000)
                finals.update({f.index: f.text for f in update.final})
            finals.update({f.index: f.text for f in transcriber.finish().final})
        out[name] = samples
        words = [finals.get(w.index, "") for w in windows]
        wer[mode] = word_error_rate(SAMPLE_TRANSCRIPT, " ".join(words))
        if mode == "stream":
            texts = words
    return out, texts, wer


def read_speech(path: str) -> np.ndarray:
    """Any audio/video file as 16-kHz mono float32; an unreadable one is a one-line error."""
    import av
    from faster_whisper import decode_audio

    from merclip.errors import MerClipError

    if not Path(path).is_file():
        what = "is a folder, not a recording" if Path(path).is_dir() else "not found"
        raise MerClipError(f"speech file {what}: {path}")
    try:
        # decode_audio on a file without sound fails with "tuple index out of range": ask first
        with av.open(str(path)) as box:
            if not box.streams.audio:
                raise MerClipError(f"{path} has no audio track: pass a recording with speech")
        return decode_audio(path, SAMPLE_RATE)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise MerClipError(f"cannot read speech from {path}: {media_error(err)}") from None
    except MerClipError:
        raise
    except Exception as err:
        raise MerClipError(f"cannot read speech from {path}: {type(err).__name__}: {err}") from None


def speech_report(path: str, asr_model: str, transcript: str | None = None, window_s: float = 2.0) -> dict:
    """Each speech path over any recording, window by window as live, scored against the same model's
    offline transcript of the whole file (and against ``transcript`` when given)."""
    from merclip.stream.sources import FileSource
    from merclip.stream.windowing import Windower, cut_windows

    audio = read_speech(path)  # the offline reference's input (and a clear error for a file without sound)
    model, source, _ = load_whisper(WhisperOptions(model=asr_model))
    # temperature 0 only: the default fallback samples, so the reference would change from run to run
    segments, _ = model.transcribe(audio, language="en", temperature=0.0)
    offline = " ".join(seg.text.strip() for seg in segments)
    out: dict = {"file": str(path), "seconds": len(audio) / SAMPLE_RATE, "model": source, "offline_text": offline}
    # read and cut once, as a session reads a file (its decoder and resampler, its windower): a tail too short
    # for a window is heard with the last one as the stream's rest; the words scored are the monitor's
    windower = Windower(window_s, window_s)
    windows = list(cut_windows(FileSource(path, realtime=False), windower))
    rest = windower.rest() or ()
    for mode in ("stream", "window-unpadded"):
        transcriber, _ = open_speech(WhisperOptions(model=asr_model, mode=mode), model=model)
        finals, shown, ms = {}, [], []
        for w in windows:
            if not w.has_audio:  # as a session: nothing to hear in it, and what was pending becomes final
                finals.update({f.index: f.text for f in transcriber.finish().final})
                continue
            update = transcriber.push(w.index, w.t_start_s, w.t_end_s, w.audio)
            ms.append(update.ms / 1000)
            shown.append(update.current.text)
            finals.update({f.index: f.text for f in update.final})
        finals.update({f.index: f.text for f in transcriber.finish(*rest).final})
        text = " ".join(finals[k] for k in sorted(finals))
        out[mode] = {"text": text, "wer_vs_offline": word_error_rate(offline, text),
                     "provisional_wer_vs_offline": word_error_rate(offline, " ".join(shown)),
                     "ms_per_window": stats_ms(ms)}  # fmt: skip
        if transcript:
            out[mode]["wer_vs_transcript"] = word_error_rate(transcript, text)
    if transcript:
        out["offline_wer_vs_transcript"] = word_error_rate(transcript, offline)
    return out


def reference_words(asr_model: str) -> list[tuple[float, float, str]]:
    """(start, end, word) of the sample clip from one offline pass over the whole file (the same model)."""
    from faster_whisper import decode_audio

    model, _, _ = load_whisper(WhisperOptions(model=asr_model))
    segments, _ = model.transcribe(
        decode_audio(str(sample_path())), language="en", word_timestamps=True, temperature=0.0
    )
    return [(w.start, w.end, normalize(w.word)) for s in segments for w in s.words or []]


def word_delays(readings: list[dict], reference: list[tuple[float, float, str]]) -> list[float]:
    """Seconds from the end of each spoken word to the first reading that shows it, on the stream clock.

    A reading reaches the screen ``latency_ms`` after its window's end was captured (provisional readings) or, for a
    final one, when it was printed; at real-time pace the stream and wall clocks run together, anchored
    on the first reading."""
    import datetime as dt

    def wall(r):
        return dt.datetime.fromisoformat(r["wall_time_utc"]).timestamp()

    first = readings[0]
    anchor = first["t_end_s"] + first["latency_ms"] / 1000 - wall(first)
    delays = []
    for start, end, word in reference:
        shown = [
            wall(r) + anchor
            for r in readings
            if r["t_start_s"] <= end and start < r["t_end_s"] and word in map(normalize, r["transcript"].split())
        ]
        if shown:
            delays.append(min(shown) - end)
    return delays
