"""What a reading reads (model/reading.py), cut the same way for evaluation and training (train/windows.py)
as the monitor cuts a stream."""

import pytest
from merclip.model.reading import (
    CONTEXT_MAX_S,
    UTTERANCE_PAUSE_S,
    ReadingSetting,
    SpreadWord,
    reading_words,
    spread_words,
    window_words,
)
from merclip.stream.session import session_reading
from merclip.stream.sources import SyntheticSource
from merclip.stream.windowing import Windower, cut_windows
from merclip.train.windows import clip_words, window_bounds, window_entries

from merclip.config import CaptureSection, Config, from_dict
from merclip.errors import MerClipError

UTTERANCE = ReadingSetting(context="utterance")
WINDOW = ReadingSetting(context="window")


def words(*spans):
    return [SpreadWord(a, b, t) for a, b, t in spans]


def texts(ws):
    return [w.text for w in ws]


def test_window_words_are_the_windows_own_each_word_once():
    said = words((0.1, 0.5, "a"), (1.9, 2.3, "b"), (2.5, 3.0, "c"), (4.1, 4.4, "d"))
    owned = [texts(window_words(said, end, 2.0, first=k == 0)) for k, end in enumerate((2.0, 4.0, 6.0))]
    assert owned == [["a"], ["b", "c"], ["d"]]  # "b" by its midpoint, 2.1 s
    assert texts(reading_words(said, 4.0, WINDOW)) == ["b", "c"]


def test_utterance_so_far_goes_back_to_the_last_pause_and_never_forward():
    said = words((0.0, 0.4, "hi"), (0.5, 0.9, "there"), (2.5, 2.9, "so"), (3.0, 3.4, "anyway"), (4.2, 4.6, "later"))
    # the pause of 1.6 s after "there" ended the first utterance; "later" (midpoint 4.4) is not heard yet at 4.0
    assert texts(reading_words(said, 4.0, UTTERANCE)) == ["so", "anyway"]
    assert texts(reading_words(said, 2.0, UTTERANCE, first=True)) == ["hi", "there"]
    # a window whose own span began a pause after the last word reads no words: the utterance is over
    quiet = words((0.0, 0.4, "hi"))
    assert reading_words(quiet, 4.0, UTTERANCE) == []
    assert UTTERANCE_PAUSE_S <= 1.0


def test_utterance_context_is_bounded():
    said = [SpreadWord(0.3 * i, 0.3 * i + 0.25, f"w{i}") for i in range(100)]  # 30 s without a pause
    got = reading_words(said, 30.0, UTTERANCE)
    assert got and 30.0 - got[0].start_s <= CONTEXT_MAX_S


def test_spread_words_fill_the_span_in_order():
    spread = spread_words("I can't believe it", 1.0, 3.0)
    assert texts(spread) == ["I", "can't", "believe", "it"]
    assert spread[0].start_s == 1.0 and abs(spread[-1].end_s - 3.0) < 1e-9
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(spread, spread[1:], strict=False))


def test_setting_round_trips_and_refuses_nonsense():
    s = ReadingSetting("utterance", 2.0, 1.0, 12)
    assert ReadingSetting.from_json(s.to_json()) == s
    assert ReadingSetting.from_json(None) == ReadingSetting()  # older models and bundles: each window's words
    assert ReadingSetting.from_json({}, frames_per_window=12).frames_per_window == 12
    with pytest.raises(MerClipError, match="reading context"):
        ReadingSetting("sentence")
    with pytest.raises(MerClipError, match="hop_s"):
        ReadingSetting(window_s=2.0, hop_s=3.0)


def test_a_session_reads_as_its_bundle_was_trained_and_says_what_it_ignores():
    trained = ReadingSetting("utterance", 2.0, 2.0, 3)
    asked = Config(capture=CaptureSection(window_s=3.0, context="window")).asked("capture")
    reading, notices = session_reading(asked, trained, frames_flag=None)
    assert reading == trained
    assert [n.split(" ignored")[0] for n in notices] == ["notice: capture.window_s = 3.0",
                                                        "notice: capture.context = 'window'"]  # fmt: skip
    assert session_reading(Config().asked("capture"), trained, frames_flag=None) == (trained, [])  # nothing asked
    # a file that writes the packaged 4 frames asks for them: the 3-frame bundle wins, and says so
    spelled = from_dict({"capture": {"frames_per_window": 4, "context": "auto"}}).asked("capture")
    _, notices = session_reading(spelled, trained, frames_flag=None)
    assert notices == ["notice: capture.frames_per_window = 4 ignored: this bundle's model was trained to be read "
                       "with frames_per_window = 3, so that is how it reads"]  # fmt: skip
    fewer, notices = session_reading(spelled, trained, frames_flag=2)  # --frames wins over the file, and is said
    assert fewer.frames_per_window == 2 and len(notices) == 1


@pytest.mark.parametrize("duration", [0.7, 1.0, 2.0, 2.5, 3.0, 4.9, 7.2])
def test_a_clip_gives_the_windows_the_monitor_makes_of_a_stream_its_length(duration):
    """window_bounds asks the live windower, so it agrees with a session on the same stream by construction;
    this checks the agreement with an independent stream (synthetic audio and frames of that length)."""
    live = list(cut_windows(SyntheticSource(duration_s=duration), Windower()))
    assert window_bounds(duration, ReadingSetting()) == [(w.t_start_s, w.t_end_s) for w in live]


def test_window_entries_carry_the_clips_labels_and_the_readings_words():
    clip = {"clip_id": "c", "split": "test", "text": "one two three four five six seven eight", "duration_s": 3.2,
            "emotion_class": "joy", "sentiment": 1.0, "has_video": False, "has_audio": False}  # fmt: skip
    by_window = window_entries([clip], WINDOW)
    so_far = window_entries([clip], UTTERANCE)
    assert [e["window"] for e in by_window] == [0, 1] and all(e["emotion_class"] == "joy" for e in by_window)
    # each word in exactly one window's own words; the utterance context reads the utterance so far
    assert " ".join(e["own_text"] for e in by_window).split() == clip["text"].split()
    assert so_far[0]["text"] == by_window[0]["text"] and so_far[1]["text"] == clip["text"]
    # with no span, the words take the time they would take spoken
    assert len(window_entries([clip | {"duration_s": None}], WINDOW)) == 2
    # Whisper's own word times, where prepare found them, win over the spread
    timed = clip | {"words": [[0.1, 0.4, "one"], [2.6, 2.9, "two"]]}
    assert [w.text for w in clip_words(timed)] == ["one", "two"]
    assert [e["own_text"] for e in window_entries([timed], WINDOW)] == ["one", "two"]


@pytest.mark.slow
def test_eval_windows_are_the_windows_a_live_session_reads(tmp_path):
    """The sample clip as a dataset clip: `merclip prepare` cuts it (with Whisper's word times) into the
    windows that `eval --protocol windows` reads; a live session on the same file (--fast, the real
    streaming tiny.en) reads the same windows: the same audio samples (to the cache's 16-bit rounding), the
    same frames (the same ones chosen, to JPEG's rounding) and the same words in each window."""
    import shutil
    import subprocess
    import sys

    import numpy as np
    from merclip.model.face import FaceSetting, FaceTracker
    from merclip.model.preprocess import resize_center_crop
    from merclip.stream.pipeline import LiveSession
    from merclip.stream.sources import FileSource, sample_path
    from merclip.stream.transcriber import WhisperOptions, open_speech
    from merclip.train.cache import read_index, read_window
    from merclip.train.data import ClipDataset

    media = tmp_path / "sample.mp4"
    shutil.copy(sample_path(), media)
    said = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    (tmp_path / "m.csv").write_text(f'id,split,media,text,sentiment\nsample,test,sample.mp4,"{said}",1\n')
    run = subprocess.run([sys.executable, "-m", "merclip.cli", "prepare", "--dataset", "manifest", "--data-root",
                          str(tmp_path / "m.csv"), "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    (entry,) = read_index(tmp_path / "cache")
    evaluated = window_entries([entry], WINDOW)

    class Recording:  # the engine's view of each window a live session reads, and the words it reads with
        def __init__(self):
            self.windows, self.words = {}, {}

        def run(self, window, text):
            from merclip.stream.engine import EngineResult

            self.windows[window.index], self.words[window.index] = window, text
            return EngineResult({"happy": 1.0}, {"positive": 1.0}, "L", 0.0)

    engine = Recording()
    transcriber, _ = open_speech(WhisperOptions())
    source = FileSource(media, realtime=False)
    windower = Windower(face=FaceTracker(FaceSetting("haar")))  # the cache's face setting ("auto": haar)
    session = LiveSession(source, windower, engine, transcriber, backpressure=True, overlap=False)
    session.run(lambda reading: None)
    assert sorted(engine.windows) == [e["window"] for e in evaluated] == list(range(6))
    for e in evaluated:
        live = engine.windows[e["window"]]
        assert (e["t_start_s"], e["t_end_s"]) == (live.t_start_s, live.t_end_s)
        frames, audio = read_window(tmp_path / "cache", e, len(live.audio))
        np.testing.assert_allclose(audio, live.audio, atol=1.5 / 32767)
        meta = entry["windows"][e["window"]]
        assert meta["frame_times_s"] == list(live.frame_times_s)

        expected = np.stack([resize_center_crop(f, 224) for f in live.frames]).astype(int)
        assert np.abs(frames.astype(int) - expected).mean() < 3  # JPEG at quality 92
        assert _words(e["own_text"]) == _words(engine.words[e["window"]])
    # and the training dataset reads those windows
    ds = ClipDataset(
        [*evaluated], tmp_path / "cache", "test", "LVA", ["happy"], ["positive", "negative"], "multi_label"
    )
    assert ds[0]["frames"].shape == (4, 224, 224, 3) and ds[0]["audio"].shape == (32000,)


def _words(text: str) -> list[str]:
    from merclip.stream.speech import normalize

    return [normalize(w) for w in text.split()]


@pytest.mark.slow
def test_the_reading_setting_travels_from_training_to_the_live_monitor(tmp_path):
    """Trained for 3 frames per window and the utterance so far -> the checkpoint, the bundle and a live
    session read that way; a config that asks otherwise is said and ignored, --frames is said and used."""
    import csv
    import json
    import subprocess
    import sys

    from merclip.model import load_checkpoint

    def run(*args, config: str, live=False):
        cmd = ["-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"] if live else [
            "-m", "merclip.cli"]  # fmt: skip
        done = subprocess.run([sys.executable, *cmd, *args, "--config", config], capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done

    trained = tmp_path / "trained.toml"
    trained.write_text('[capture]\nframes_per_window = 3\ncontext = "utterance"\n')
    cache, out = tmp_path / "cache", tmp_path / "run"
    run("prepare", "--synthetic", "24", "--seconds", "4", "--cache-dir", str(cache), config=str(trained))
    run("train", "--model", "tiny", "--dataset", "synthetic", "--data-root", str(cache), "--epochs", "1",
        "--out", str(out), config=str(trained))  # fmt: skip
    model, _ = load_checkpoint(out / "best.safetensors")
    assert model.cfg.reading == ReadingSetting("utterance", 2.0, 2.0, 3)
    other = tmp_path / "other.toml"
    other.write_text('[capture]\nframes_per_window = 8\ncontext = "window"\n')
    exported = run("export", "--onnx", "--checkpoint", str(out / "best.safetensors"), "--out", str(tmp_path / "b"),
                   config=str(other))  # fmt: skip
    assert "notice: capture.context = 'window' ignored" in exported.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["preprocess"]["reading"] == {"context": "utterance", "window_s": 2.0, "hop_s": 2.0,
                                                 "frames_per_window": 3}  # fmt: skip
    assert manifest["preprocess"]["frames_per_window"] == 3
    live = [
        "--source",
        "synthetic",
        "--bundle",
        str(tmp_path / "b"),
        "--no-ui",
        "--fast",
        "--no-asr",
        "--duration",
        "4",
    ]
    session = run(*live, config=str(other), live=True)
    assert session.stderr.count("notice: capture.") == 2  # frames_per_window and context: one line each
    assert "each reading: 2-s windows every 2 s, 3 frames, the utterance so far" in session.stderr
    fewer = run(*live, "--frames", "2", "--log", str(tmp_path / "fewer.csv"), config=str(trained), live=True)
    assert "notice: reading 2 frames per window (--frames); this bundle's model was trained on 3" in fewer.stderr
    assert "each reading: 2-s windows every 2 s, 2 frames" in fewer.stderr
    # the session log says on every row what its readings were computed from, and the report reads it back
    rows = list(csv.DictReader(open(tmp_path / "fewer.csv", newline="")))
    assert len(rows) == 2 and {(r["reading_context"], r["window_s"], r["hop_s"], r["frames_per_window"])
                               for r in rows} == {("utterance", "2", "2", "2")}  # fmt: skip
    report = run("report", str(tmp_path / "fewer.csv"), config=str(trained))
    assert "Each reading: 2-s windows every 2 s, 2 frames, the utterance so far." in report.stdout


def test_the_streams_last_window_owns_the_words_after_it():
    """The end of a stream too short to make a window is heard with the last window (``Windower.rest``): a
    word spoken there is the last window's, for its own words and its reading. A MELD span ending 0.2 s past a
    window boundary used to lose its last word ("... throw you both in" read "... both")."""
    said = words((1.2, 1.6, "both"), (1.8, 2.2, "in"))  # "in": midpoint 2.0, the stream ends at 2.2
    assert texts(window_words(said, 2.0, 2.0, first=True)) == ["both"]
    assert texts(window_words(said, 2.0, 2.0, first=True, last=True)) == ["both", "in"]
    assert texts(reading_words(said, 2.0, UTTERANCE, first=True, last=True)) == ["both", "in"]
    clip = {"clip_id": "c", "split": "test", "text": "or we could throw you both in", "duration_s": 4.2,
            "emotion_class": "joy", "sentiment": 1.0, "has_video": False, "has_audio": False}  # fmt: skip
    for setting in (WINDOW, UTTERANCE):
        entries = window_entries([clip], setting)
        assert len(entries) == 2  # 0.2 s after the second window: no third
    assert " ".join(e["own_text"] for e in entries) == clip["text"] and entries[-1]["text"] == clip["text"]


def test_a_checkpoint_without_a_reading_is_scored_as_its_bundle_reads():
    """A checkpoint from before the setting records none: its bundle reads as the config asks (the utterance
    so far for "auto"), and `eval --protocol windows` scores those readings, not each window's own words."""
    from types import SimpleNamespace

    from merclip.export.cli import bundle_reading
    from merclip.model.config import MerClipConfig
    from merclip.train.evaluate import scoring_protocol
    from rich.console import Console

    old = MerClipConfig(arch="tiny", reading=None)
    for capture in (CaptureSection(), CaptureSection(frames_per_window=3, hop_s=1.0), CaptureSection(context="window")):
        protocol, scored = scoring_protocol(SimpleNamespace(protocol="windows", context=None), old.reading, capture)
        assert protocol == "windows"
        assert scored == bundle_reading(Config(capture=capture), None, Console(quiet=True))
    assert scoring_protocol(SimpleNamespace(protocol=None), old.reading, CaptureSection())[0] == "clips"  # its default
    windows = SimpleNamespace(protocol="windows", context=None)
    assert scoring_protocol(windows, old.reading, CaptureSection())[1] == ReadingSetting("utterance", 2.0, 2.0, 4)
    asked = CaptureSection(context="window", frames_per_window=3)
    assert scoring_protocol(windows, old.reading, asked)[1] == ReadingSetting("window", 2.0, 2.0, 3)
