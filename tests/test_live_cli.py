"""merclip-live and merclip report as a user runs them: subprocesses, signals, files on disk."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from media_util import write_video

LIVE = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _complete(rows):
    header = rows[0]
    return all(len(r) == len(header) for r in rows[1:])


def test_synthetic_20s_session_writes_10_rows_with_every_column(tiny_bundle, whisper_dir, tmp_path):
    out = tmp_path / "out.csv"
    run = subprocess.run([*LIVE, "--source", "synthetic", "--bundle", str(tiny_bundle), "--no-ui", "--duration",
                          "20", "--log", str(out), "--asr-model", str(whisper_dir)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = _rows(out)
    header = rows[0]
    assert header[:4] == ["window", "t_start_s", "t_end_s", "wall_time_utc"]
    assert [h for h in header if h.startswith("emotion_")] == [
        f"emotion_{e}" for e in ("happy", "sad", "angry", "surprise", "disgust", "fear")
    ]
    assert header[-18:] == ["sentiment_positive", "sentiment_negative", "top_emotion", "transcript", "modalities",
                            "dropped_windows", "late_items", "latency_ms", "asr_ms", "model_ms", "face_box", "state",
                            "confidence", "agreement", "reading_context", "window_s", "hop_s",
                            "frames_per_window"]  # fmt: skip
    from merclip.export.runtime import Bundle

    kept = Bundle.load(tiny_bundle).reading  # every row says the bundle's reading setting
    assert {tuple(r[-4:]) for r in rows[1:]} == {(kept.context, f"{kept.window_s:g}", f"{kept.hop_s:g}",
                                                  str(kept.frames_per_window))}  # fmt: skip
    assert 9 <= len(rows) - 1 <= 11 and _complete(rows)
    assert all(r[header.index("modalities")] in ("VA", "LVA") for r in rows[1:])
    printed = [json.loads(line) for line in run.stdout.strip().splitlines()]
    # every window is printed when it closes, then again with its final words; the CSV logs the final one
    assert sum(r["final"] for r in printed) == len(rows) - 1
    assert [r["window"] for r in printed if not r["final"]] == [r["window"] for r in printed if r["final"]]
    assert "Session ended" in run.stderr


def test_60s_file_with_fast_takes_less_than_60s(tiny_bundle, whisper_dir, tmp_path):
    clip = tmp_path / "talk.mp4"
    write_video(clip, seconds=60, size=(160, 120))
    start = time.monotonic()
    run = subprocess.run([*LIVE, "--source", str(clip), "--fast", "--bundle", str(tiny_bundle), "--no-ui", "--log",
                          str(tmp_path / "s.csv"), "--asr-model", str(whisper_dir)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    wall = time.monotonic() - start
    assert run.returncode == 0, run.stderr
    rows = _rows(tmp_path / "s.csv")
    assert len(rows) - 1 == 30 and _complete(rows)
    assert int(rows[-1][rows[0].index("dropped_windows")]) == 0  # --fast waits instead of dropping
    assert wall < 60


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_signals_leave_a_valid_csv(sig, tiny_bundle, tmp_path):
    out = tmp_path / "sig.csv"
    proc = subprocess.Popen([*LIVE, "--source", "synthetic", "--bundle", str(tiny_bundle), "--no-ui", "--no-asr",
                             "--duration", "60", "--log", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(_rows(out)) < 3):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    rows = _rows(out)
    assert len(rows) >= 3 and _complete(rows)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # interrupted, as --help says: 128 + the signal (130 Ctrl-C, 143 SIGTERM), every row kept
        assert proc.returncode == 128 + sig, err
        assert "Session ended" in err and "interrupted by" in err and "Traceback" not in err


def test_bad_inputs_exit_2_with_one_line(tiny_bundle, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(os.urandom(5000))
    tampered = tmp_path / "b"
    shutil.copytree(tiny_bundle, tampered)
    data = bytearray((tampered / "fuse.onnx").read_bytes())
    data[-10] ^= 0xFF
    (tampered / "fuse.onnx").write_bytes(bytes(data))
    cases = [
        (["--source", str(bad), "--bundle", str(tiny_bundle)], "cannot read video file"),
        (["--source", "sample", "--bundle", str(tampered)], "fuse.onnx does not match its checksum"),
        (["--camera", "/dev/no-such-camera", "--bundle", str(tiny_bundle)], "cannot open camera"),
        (["--source", "sample", "--bundle", str(tmp_path / "nowhere")], "bundle not found"),
    ]
    for flags, message in cases:
        run = subprocess.run([*LIVE, "--no-ui", "--no-asr", *flags], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, (flags, run.stderr)
        assert message in run.stderr and "Traceback" not in run.stderr


def test_report_writes_a_png_and_summary(tmp_path):
    from merclip.model.reading import ReadingSetting
    from merclip.stream.csvlog import SessionLog
    from merclip.stream.records import Reading

    log = SessionLog(tmp_path / "s.csv", ["happy", "sad"], ["positive", "negative"], ReadingSetting("utterance"))
    for i in range(6):
        log.write(Reading(i, 2.0 * i, 2.0 * i + 2, "t", {"happy": 0.2 + 0.1 * i, "sad": 0.5}, {"positive": 0.6,
                  "negative": 0.4}, "hello" if i % 2 else "", "LVA", 0, 100.0, 10.0, 20.0))  # fmt: skip
    log.close()
    run = subprocess.run([sys.executable, "-m", "merclip.cli", "report", str(log.path)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    png = log.path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "Dominant emotion (share of windows): happy 50%, sad 50%" in run.stdout
    assert "Windows with speech: 3 of 6" in run.stdout


def test_report_compare_says_when_two_logs_were_read_differently(tmp_path, capsys):
    from merclip.model.reading import ReadingSetting
    from merclip.stream.csvlog import SessionLog
    from merclip.stream.records import Reading

    from merclip.cli import main

    paths = []
    for name, setting in (("a.csv", ReadingSetting("utterance")), ("b.csv", ReadingSetting("window", 2.0, 1.0, 12))):
        log = SessionLog(tmp_path / name, ["happy"], ["positive"], setting)
        log.write(Reading(0, 0.0, 2.0, "t", {"happy": 0.5}, {"positive": 0.5}, "", "L", 0, 1.0, 1.0, 1.0))
        log.close()
        paths.append(str(log.path))
    assert main(["report", paths[0], "--compare", paths[1], "--out", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert ("Read differently: a.csv 2-s windows every 2 s, 4 frames, the utterance so far; b.csv 2-s windows "
            "every 1 s, 12 frames, the window's own words.") in out  # fmt: skip
    assert main(["report", paths[0], "--compare", paths[0], "--out", str(tmp_path / "q.png")]) == 0
    assert "Read differently" not in capsys.readouterr().out
    edited = tmp_path / "edited.csv"  # a hand-edited setting is refused, naming the line, not a traceback
    edited.write_text(open(paths[0]).read().replace(",utterance,2,2,4", ",utterance,2,2,many"))
    assert main(["report", str(edited), "--out", str(tmp_path / "e.png")]) == 2
    assert "edited.csv line 2: reading setting is malformed" in capsys.readouterr().err


def test_config_labels_replace_bundle_labels_only_when_set(tiny_bundle, tmp_path):
    from merclip.export.runtime import Bundle
    from merclip.stream.bundles import apply_label_config

    from merclip.config import from_dict

    bundle = Bundle.load(tiny_bundle)
    apply_label_config(bundle, from_dict({}))
    assert bundle.emotion_labels == ["happy", "sad", "angry", "surprise", "disgust", "fear"]
    apply_label_config(bundle, from_dict({"labels": {"emotion": ["calm", "a tense, nervous state"]}}))
    assert bundle.emotion_labels == ["calm", "a tense, nervous state"]
    assert bundle.predict(None, None, "hello").emotion.shape == (1, 2)
    apply_label_config(bundle, from_dict({}))  # unset: the bundle's labels (here the last ones set) stay
    assert bundle.emotion_labels == ["calm", "a tense, nervous state"]
    default = ["happy", "sad", "angry", "surprise", "disgust", "fear"]
    apply_label_config(bundle, from_dict({"labels": {"emotion": default}}))  # written out: asked, packaged or not
    assert bundle.emotion_labels == default and bundle.predict(None, None, "hello").emotion.shape == (1, 6)


def test_model_flag_exports_into_the_cache_once_then_runs(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    args = [*LIVE, "--model", "tiny", "--source", "synthetic", "--duration", "4", "--fast", "--no-ui", "--no-asr"]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "exporting tiny (random weights)" in first.stderr and len(first.stdout.splitlines()) == 2
    assert list((tmp_path / ".cache" / "merclip" / "bundles").glob("tiny-random-*/manifest.json"))
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "exporting" not in again.stderr


def test_a_still_image_is_held_for_the_bundles_window_not_the_configs(tiny_bundle, tmp_path):
    """A config asking for 3-s windows is ignored for the bundle's 2-s ones (one notice each), and the still
    image is held for one bundle window: one reading, as the session says."""
    import cv2
    import numpy as np

    image = tmp_path / "face.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 120, np.uint8))
    config = tmp_path / "c.toml"
    config.write_text("[capture]\nwindow_s = 3.0\nhop_s = 3.0\n")
    run = subprocess.run([*LIVE, "--no-ui", "--no-asr", "--fast", "--bundle", str(tiny_bundle), "--source", str(image),
                          "--config", str(config)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    said = run.stdout + run.stderr
    assert said.count("notice: capture.window_s = 3.0 ignored") == 1 and said.count("capture.hop_s = 3.0") == 1
    finals = [r for r in map(json.loads, filter(str.strip, run.stdout.splitlines())) if r.get("final")]
    assert [(r["t_start_s"], r["t_end_s"]) for r in finals] == [(0.0, 2.0)]


def test_a_still_image_read_by_an_overlapping_bundle_gives_one_reading(tiny_bundle, tmp_path):
    """A bundle read every 1 s would cut the held picture into 0-2 and 1-3: two readings of one photo."""
    import shutil

    import cv2
    import numpy as np

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["preprocess"]["reading"]["hop_s"] = 1.0
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 120, np.uint8))
    run = subprocess.run([*LIVE, "--no-ui", "--no-asr", "--fast", "--bundle", str(bundle), "--source", str(image)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    finals = [r for r in map(json.loads, filter(str.strip, run.stdout.splitlines())) if r.get("final")]
    assert [(r["t_start_s"], r["t_end_s"]) for r in finals] == [(0.0, 2.0)]
