"""Find the face: detection, following and cropping (model/face.py), the same in the training cache, the live
windower and the bench; the setting travels checkpoint -> bundle -> live monitor."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from merclip.model.face import FACE_HOLD_S, FaceSetting, FaceTracker, crop_sequence, fill_missing, square_box
from merclip.stream.records import Frame
from merclip.stream.sources import FileSource, SyntheticSource, sample_path
from merclip.stream.windowing import Windower

MERCLIP = [sys.executable, "-m", "merclip.cli"]
LIVE = [sys.executable, "-c", "import sys; from merclip.cli import live_main; sys.exit(live_main())"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HAAR = FaceSetting("haar")

# Hand-measured on frame t = 5 s of stream/assets/sample-face-speech.mp4 (576 x 768), on a 3x zoom with a
# 10-px grid: cheek to cheek x 222..340, hairline to chin y 167..315 (she barely moves in the clip).
SAMPLE_W, SAMPLE_H = 576, 768
HAND_FACE = (222, 167, 118, 148)


def _sample_windows(face=HAAR):
    source = FileSource(sample_path(), realtime=False)
    windower = Windower(face=FaceTracker(face) if face.on else None, tracks=source.tracks)
    windows, early = [], []
    for item in source:
        windows += list(windower.push(item))
        early += windower.take_settled()
    return windows + list(windower.flush()), early


def _sample_frame(t_s: float = 5.0) -> np.ndarray:
    for item in FileSource(sample_path(), realtime=False):
        if isinstance(item, Frame) and item.t_s >= t_s:
            return item.rgb
    raise AssertionError("no frame")


def test_sample_clip_face_found_and_crop_centred_on_it():
    windows, early = _sample_windows()
    found = [w for w in windows if w.face == "found"]
    assert len(found) >= 0.9 * len(windows) and len(windows) == 6
    hx, hy, hw, hh = HAND_FACE
    size = max(hw, hh)
    for w in found:
        x, y, bw, bh = w.face_box
        side = bw * SAMPLE_W
        assert abs(side - bh * SAMPLE_H) < 1.5  # square in pixels
        centre = (x * SAMPLE_W + side / 2, y * SAMPLE_H + side / 2)
        # the crop is centred on the face, within 15 % of its size ...
        assert abs(centre[0] - (hx + hw / 2)) < 0.15 * size and abs(centre[1] - (hy + hh / 2)) < 0.15 * size
        # ... and the face (the crop less its margin) has the hand-measured size, within 15 %
        assert abs(side / (1 + 2 * HAAR.margin) - size) < 0.15 * size
        assert len(w.frames) == 4 and all(f.shape[0] == f.shape[1] for f in w.frames)
    # the frames handed out early for encoding are the very crops the windows hold (the engine's cache key);
    # the last window closes at the end of the file, before its last slots could settle
    assert {id(f) for w in windows[:-1] for f in w.frames} <= {id(f) for f in early}


def test_whole_frames_when_off():
    windows, _ = _sample_windows(FaceSetting("off"))
    assert all(w.face == "" and w.face_box is None and w.frames[0].shape == (768, 576, 3) for w in windows)


def test_no_face_in_view_gives_windows_without_frames():
    windower = Windower(face=FaceTracker(HAAR))  # the synthetic source delivers both tracks, as the default
    windows, early = [], []
    for item in SyntheticSource(duration_s=6, realtime=False, size=320):
        windows += list(windower.push(item))
        early += windower.take_settled()
    windows += list(windower.flush())
    assert len(windows) == 3 and not early
    assert all(w.face == "none" and w.frames == () and w.face_box is None and w.has_audio for w in windows)


def test_follows_the_largest_face_and_stays_with_it():
    face = _sample_frame()[100:400, 150:420]  # one person's head (270 x 300)
    small = face[::2, ::2]  # a second, smaller person
    canvas = np.full((480, 960, 3), 90, np.uint8)

    def scene(big: bool, little: bool) -> np.ndarray:
        img = canvas.copy()
        if big:
            img[100:400, 40:310] = face
        if little:
            img[200:350, 700:835] = small
        return img

    def centre_x(box):
        return (box[0] + box[2] / 2) * 960

    tracker = FaceTracker(HAAR)
    box = tracker(scene(True, True), 0.0).box
    assert centre_x(box) < 480  # both in view: the larger face
    tracker = FaceTracker(HAAR)
    box = tracker(scene(False, True), 0.0).box
    assert centre_x(box) > 480  # only the small one
    for t in (0.5, 1.0, 1.5):  # a bigger face walks in: the followed person is kept, no jumping
        box = tracker(scene(True, True), t).box
        assert centre_x(box) > 480
    # the followed person leaves: their last box is held (not a detection) for FACE_HOLD_S, no jump meanwhile
    held = tracker(scene(True, False), 1.5 + FACE_HOLD_S)
    assert centre_x(held.box) > 480 and not held.detected
    after = tracker(scene(True, False), 1.5 + FACE_HOLD_S + 0.25)  # then the other face is followed
    assert after.crop is not None and after.detected and centre_x(after.box) < 480


def test_crop_helpers():
    assert square_box((10, 10, 20, 20), 0.5, 100, 100) == (0, 0, 40)  # moved inside the frame
    assert square_box((90, 40, 20, 20), 0.5, 100, 60) == (60, 20, 40)
    assert square_box((40, 20, 40, 40), 0.5, 100, 60) == (30, 0, 60)  # no bigger than the frame
    a, b = np.zeros(1), np.ones(1)
    assert fill_missing([None, a, None, b]) == [a, a, a, b] and fill_missing([None, None]) is None
    assert crop_sequence([np.zeros((50, 50, 3), np.uint8)], [0.0], HAAR) is None
    assert FaceSetting.from_json(None) == FaceSetting("off")
    assert FaceSetting.from_json(HAAR.to_json()) == HAAR and HAAR.to_json()["detector"]


def test_prepare_crops_like_the_live_path():
    from merclip.train.cache import decode_media

    whole, _ = decode_media(str(sample_path()), 4, 224, None, None)
    crops, wave = decode_media(str(sample_path()), 4, 224, None, None, face=HAAR)
    assert len(crops) == 4 and crops[0].shape == (224, 224, 3) and wave is not None
    assert not np.array_equal(crops[0], whole[0])
    # the picked frame cropped by the one crop function, as the live windower does
    assert np.abs(crops[0].astype(int) - whole[0].astype(int)).mean() > 10


def _face_bundle(tiny_bundle, tmp_path, mode="haar"):
    """The tiny bundle, its manifest saying it was trained on face crops."""
    out = tmp_path / f"bundle-{mode}"
    shutil.copytree(tiny_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["preprocess"]["face"] = FaceSetting(mode).to_json()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_live_without_a_face_goes_on_with_voice_and_words(tiny_bundle, tmp_path):
    bundle = _face_bundle(tiny_bundle, tmp_path)
    log = tmp_path / "s.csv"
    args = ["--source", "synthetic", "--bundle", str(bundle), "--no-ui", "--duration", "8", "--fast", "--no-asr"]
    run = subprocess.run([*LIVE, *args, "--log", str(log)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    import csv

    rows = list(csv.reader(open(log, newline="")))
    header, body = rows[0], rows[1:]
    assert len(body) == 4 and header[-8:-4] == ["face_box", "state", "confidence", "agreement"]
    assert all("V" not in r[header.index("modalities")] and r[header.index("modalities")] for r in body)
    assert all(r[header.index("face_box")] == "" for r in body)
    printed = [json.loads(line) for line in run.stdout.splitlines()]
    assert printed and all(r["face"] == "none" and r["face_box"] is None for r in printed)


@pytest.mark.slow
def test_live_sample_with_the_tiny_model_sees_the_face(tmp_path):
    log = tmp_path / "s.csv"
    run = subprocess.run([*LIVE, "--source", "sample", "--model", "tiny", "--no-ui", "--fast", "--no-asr",
                          "--log", str(log)], capture_output=True, text=True, timeout=600,
                         env={**ENV, "HOME": str(tmp_path)})  # fmt: skip
    assert run.returncode == 0, run.stderr
    printed = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    finals = [r for r in printed if r["final"]]
    assert len(finals) == 6 and sum("V" in r["modalities"] and r["face"] == "found" for r in finals) >= 6 * 0.9
    import csv

    rows = list(csv.reader(open(log, newline="")))
    boxes = [r[rows[0].index("face_box")] for r in rows[1:]]
    assert all(len(b.split()) == 4 for b in boxes)


@pytest.mark.slow
def test_the_face_setting_travels_from_training_to_the_live_monitor(tmp_path):
    """Trained with cropping -> exported -> live crops; trained without -> does not; whatever capture.face
    says later (each disagreement gets a notice, the model's setting wins)."""

    def config(face: str):
        path = tmp_path / f"{face}.toml"
        path.write_text(f'[capture]\nface = "{face}"\n')
        return str(path)

    def merclip(*args):
        run = subprocess.run([*MERCLIP, *args], capture_output=True, text=True, env=ENV, timeout=600)
        assert run.returncode == 0, run.stderr
        return run

    for trained, later in (("haar", "off"), ("off", "haar")):
        cache, out = tmp_path / f"cache-{trained}", tmp_path / f"run-{trained}"
        merclip("prepare", "--synthetic", "40", "--cache-dir", str(cache), "--config", config(trained))
        assert json.loads((cache / "face.json").read_text())["mode"] == trained
        merclip("train", "--model", "tiny", "--dataset", "synthetic", "--data-root", str(cache), "--epochs", "1",
                "--out", str(out), "--config", config("auto"))  # fmt: skip
        checkpoint = next(out.glob("*.safetensors"))
        bundle = tmp_path / f"bundle-{trained}"
        run = merclip("export", "--onnx", "--checkpoint", str(checkpoint), "--out", str(bundle),
                      "--config", config(later))  # fmt: skip
        assert "notice: capture.face" in run.stderr
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["preprocess"]["face"]["mode"] == trained
        assert manifest["model_config"]["face"] == trained
        live = subprocess.run([*LIVE, "--source", "synthetic", "--bundle", str(bundle), "--no-ui", "--duration", "4",
                               "--fast", "--no-asr", "--config", config(later)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert live.returncode == 0, live.stderr
        assert "notice: capture.face" in live.stderr and live.stderr.count("notice: capture.face") == 1
        readings = [json.loads(line) for line in live.stdout.splitlines()]
        # the synthetic frames hold no face: a cropping model finds none, a whole-frame model sees them
        if trained == "haar":
            assert all(r["face"] == "none" and "V" not in r["modalities"] for r in readings)
        else:
            assert all(r["face"] == "" and "V" in r["modalities"] for r in readings)


def test_old_bundles_and_checkpoints_mean_whole_frames(tiny_bundle):
    from merclip.export.runtime import Bundle
    from merclip.model import MerClipConfig

    assert MerClipConfig.from_dict({"arch": "tiny"}).face == "off"
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["preprocess"]["face"]["mode"] == "off"  # the fixture's model records it
    del manifest["preprocess"]["face"]
    assert FaceSetting.from_json(manifest["preprocess"].get("face")) == FaceSetting("off")
    assert Bundle.load(tiny_bundle, providers="cpu").face == FaceSetting("off")


def test_session_without_a_face_shows_no_face(tiny_bundle):
    from merclip.export.runtime import Bundle
    from merclip.stream.engine import BundleEngine
    from merclip.stream.pipeline import LiveSession
    from merclip.stream.ui import UiState, render
    from rich.console import Console

    bundle = Bundle.load(tiny_bundle, providers="cpu")
    source = SyntheticSource(duration_s=4, realtime=False, size=320)
    session = LiveSession(source, Windower(face=FaceTracker(HAAR)), BundleEngine(bundle), backpressure=True)
    state = UiState("t", "tiny", "synthetic", bundle.emotion_labels, bundle.sentiment_labels, 0.6, "", 0.5)
    readings = []
    session.run(lambda r: (readings.append(r), state.add(r)))
    assert readings and all(r.modalities == "A" and r.face == "none" for r in readings)
    assert session.stats.status["V"] == "no face"
    console = Console(record=True, width=110)
    console.print(render(state, session.stats))
    assert "face (no face)" in console.export_text()
