"""User-facing messages from an audit: a misspelt Whisper size, a weights path that is not there, a damaged
bundle in merclip's own cache, the bench's throughput lines, media without sound or not media at all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from merclip.errors import MerClipError


# ---- 1. --asr-model: a typo is an error; only a known name that cannot be downloaded falls back ----------
class _FakeWhisper:
    """Stands in for faster_whisper.WhisperModel: loads the bundled folder, fails (as offline) for anything else."""

    def __init__(self, spec: str, **kw):
        from merclip.stream.transcriber import bundled_model_path

        if spec != str(bundled_model_path()):
            raise RuntimeError("LocalEntryNotFoundError: cannot reach huggingface.co and no cached snapshot")
        self.spec = spec


@pytest.fixture
def fake_whisper(monkeypatch, whisper_dir):
    import faster_whisper

    monkeypatch.setattr(faster_whisper, "WhisperModel", _FakeWhisper)


def test_unknown_whisper_name_is_an_error_listing_every_size(fake_whisper):
    from faster_whisper.utils import available_models
    from merclip.stream.transcriber import WhisperOptions, load_whisper

    with pytest.raises(MerClipError) as err:
        load_whisper(WhisperOptions(model="nosuchmodel"))
    message = str(err.value)
    assert "unknown Whisper model 'nosuchmodel'" in message and "\n" not in message
    assert all(size in message.split("use one of ")[1] for size in available_models())  # listed in full


def test_live_refuses_a_misspelt_asr_model_before_any_export(tmp_path, monkeypatch, capsys):
    from merclip.stream import bundles

    from merclip.cli import live_main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(bundles, "export_in_subprocess", lambda *a: pytest.fail("exported before checking the name"))
    flags = ["--model", "ViT-B-32", "--source", "sample", "--no-ui", "--fast", "--asr-model", "nosuchmodel"]
    assert live_main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown Whisper model 'nosuchmodel'") and "large-v3-turbo" in err


def test_known_whisper_name_offline_still_falls_back_to_bundled(fake_whisper):
    from merclip.stream.transcriber import WhisperOptions, clip_words, load_whisper

    for name in ("base.en", "Systran/faster-whisper-small"):
        model, where, notice = load_whisper(WhisperOptions(model=name))
        assert isinstance(model, _FakeWhisper) and "bundled" in where
        assert f"could not load Whisper {name!r}" in notice and "using the bundled tiny.en" in notice
    assert clip_words("expected one of: tiny, base, medium, large", 36) == "expected one of: tiny, base, medium…"
    assert clip_words("expected one of: tiny, base, medium, large", 34) == "expected one of: tiny, base…"
    assert clip_words("short", 36) == "short"


# ---- 2. --weights: a path that is not there is "not found", said before any export is announced ----------
def test_missing_weights_file_is_not_found_not_an_unknown_tag(tmp_path, monkeypatch):
    from merclip.stream import weights

    for value in ("nosuch.safetensors", "ckpt/model.pt", "~/w.bin"):
        with pytest.raises(MerClipError, match=f"^weights file not found: {value}"):
            weights.check_weights_file(value)
        assert not weights.needs_download("ViT-B-32", value)
    weights.check_weights_file("openai")  # a tag: the export decides
    assert weights.needs_download("ViT-B-32", "openai")
    real = tmp_path / "real.safetensors"
    real.write_bytes(b"x")
    weights.check_weights_file(str(real))


def test_create_clip_says_weights_file_not_found():
    pytest.importorskip("open_clip")
    from merclip.model.factory import create_clip

    with pytest.raises(MerClipError, match="^weights file not found: nosuch.safetensors"):
        create_clip("ViT-B-32", "nosuch.safetensors")


def test_live_checks_the_weights_file_before_announcing_an_export(tmp_path, monkeypatch):
    from merclip.stream import bundles
    from rich.console import Console

    from merclip.config import from_dict

    exported = []
    monkeypatch.setattr(bundles, "export_in_subprocess", lambda cfg, folder: exported.append(folder))
    cfg = from_dict({"model": {"arch": "ViT-B-32", "weights": "nosuch.safetensors"},
                     "runtime": {"cache_dir": str(tmp_path)}})  # fmt: skip
    console = Console(record=True, file=open(os.devnull, "w"))
    with pytest.raises(MerClipError, match="^weights file not found: nosuch.safetensors"):
        bundles.resolve_bundle(cfg, console)
    assert not exported and "exporting" not in console.export_text()


# ---- 3. a damaged bundle in merclip's own cache is rebuilt; the user's --bundle keeps the error -----------
def _damage(folder: Path) -> None:
    vision = folder / "vision.onnx"
    data = bytearray(vision.read_bytes())
    data[100] ^= 0xFF
    vision.write_bytes(bytes(data))


def test_damaged_cached_bundle_is_discarded_and_exported_again(tiny_bundle, tmp_path, monkeypatch):
    from merclip.export.runtime import Bundle
    from merclip.stream import bundles, cache
    from rich.console import Console

    from merclip.config import from_dict

    cfg = from_dict({"model": {"arch": "tiny", "weights": "random"}, "runtime": {"cache_dir": str(tmp_path)}})
    folder = bundles.bundle_cache_dir(cfg)
    folder.parent.mkdir(parents=True)
    shutil.copytree(tiny_bundle, folder)
    assert cache.discard_damaged(folder) == "" and folder.is_dir()  # a sound bundle is kept
    _damage(folder)
    exported = []

    def fake_export(cfg, target):
        exported.append(target)
        shutil.copytree(tiny_bundle, target)

    monkeypatch.setattr(bundles, "export_in_subprocess", fake_export)
    console = Console(record=True, width=300, file=open(os.devnull, "w"))
    bundle = bundles.resolve_bundle(cfg, console)
    text = console.export_text()
    assert exported == [folder] and isinstance(bundle, Bundle)
    assert "notice: the cached bundle" in text and "vision.onnx does not match its checksum" in text
    assert "re-export" not in text

    _damage(folder)  # the same bundle passed with --bundle is the user's: the error stays
    with pytest.raises(MerClipError, match="does not match its checksum .*re-export"):
        Bundle.load(folder)


# ---- 4. bench throughput: labelled, 3 significant digits, batching compared model-alone to model-alone -----
def test_bench_throughput_lines_compare_like_with_like(capsys):
    from merclip.train.bench.report import print_report, sig3, throughput_lines

    assert [sig3(x) for x in (1.6199341629082804, 237.5231254794408, 9.996, 1234.5, 0.0123456)] == [
        "1.62", "238", "10.0", "1,230", "0.0123"]  # fmt: skip
    result = {
        "machine": "test CPU", "providers": ["vision: CPU"], "ratios": {}, "options": {"frames": 4, "model": "tiny"},
        "latency_ms": {}, "real_time_factor": 0.31, "peak_rss_mb": 100.0, "asr_wer": {"stream": 0.0},
        "pipeline_windows_per_s": 1.6199341629082804, "model_windows_per_s": {"1": 150.123, "4": 237.5231254794408},
    }  # fmt: skip
    lines = throughput_lines(result)
    assert lines == [
        "whole pipeline, 1 stream (serial sum of all stages, ASR included): 1.62 windows/s",
        "model alone (encoders + fusion), 1 window per call: 150 windows/s",
        "model alone (encoders + fusion), 4 windows batched: 238 windows/s (1.58x the 1-window figure)",
    ]
    print_report(result)
    out = " ".join(capsys.readouterr().out.split())
    assert "{'1'" not in out and "1.62 windows/s" in out and "238 windows/s" in out


def test_bench_measures_batch_one_on_the_model_alone(tiny_bundle):
    from merclip.export.runtime import Bundle
    from merclip.stream.sources import SyntheticSource
    from merclip.stream.windowing import Windower
    from merclip.train.bench.stages import model_throughput as _throughput

    bundle = Bundle.load(tiny_bundle)
    windower = Windower(frames_per_window=bundle.frames_per_window)
    windows = [w for item in SyntheticSource(duration_s=2.2, realtime=False) for w in windower.push(item)]
    windows += windower.flush()
    for n in (1, 2):
        assert _throughput(bundle, windows, ["hello"], n, repeats=1) > 0


# ---- 5. media: no audio track, not media at all ----------------------------------------------------------
def _video_without_audio(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as box:
        stream = box.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return path


def test_bench_speech_says_no_audio_track_and_invalid_data(tmp_path):
    from merclip.train.bench.speech import read_speech

    silent = _video_without_audio(tmp_path / "silent.mp4")
    with pytest.raises(MerClipError, match=r"silent\.mp4 has no audio track"):
        read_speech(str(silent))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 20)
    with pytest.raises(MerClipError) as err:
        read_speech(str(junk))
    assert "invalid data (not a media file PyAV can read)" in str(err.value) and "Errno" not in str(err.value)
    with pytest.raises(MerClipError, match="speech file not found"):
        read_speech(str(tmp_path / "none.wav"))


def test_file_source_names_invalid_data_without_errno(tmp_path):
    from merclip.stream.sources import FileSource

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 20)
    with pytest.raises(MerClipError) as err:
        FileSource(junk)
    message = str(err.value)
    assert message == f"cannot read video file {junk}: invalid data (not a media file PyAV can read)"
