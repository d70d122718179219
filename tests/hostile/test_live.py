"""`merclip-live`: hostile bundles and manifests, flags and sources.
Each case: exit 2, one line on stderr, no file changed (``world.py`` runs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .world import (
    LONG,
    Case,
    _edit,
    _flip,
    _missing_provider,
    _other,
    live,
    live_bundle,
    run_case,
)

CASES = [
    # ---- bundles -------------------------------------------------------------------------------------
    Case("bundle-missing", "live", live_bundle(lambda w: str(w.root / "nowhere")), "bundle not found"),
    Case("bundle-is-a-file", "live", live_bundle(lambda w: w.file("bundle.onnx", b"onnx")), "not a folder"),
    Case("bundle-is-dev-null", "live", live_bundle(lambda w: "/dev/null"), "not a folder"),
    Case("bundle-empty-folder", "live", live_bundle(lambda w: w.dir("empty")), "no manifest.json"),
    Case("bundle-symlink-loop", "live", live_bundle(lambda w: w.loop("loopdir")), "bundle not found"),
    Case("bundle-name-too-long", "live", live_bundle(lambda w: str(w.root / LONG)), "too long"),
    Case(
        "bundle-wrong-files",
        "live",
        live_bundle(lambda w: w.dir("ckpt", {"model.safetensors": "x", "manifest.json": '{"name": "llama"}'})),
        "not a MER-CLIP bundle",
    ),
    Case(
        "manifest-is-a-folder",
        "live",
        live_bundle(lambda w: str(Path(w.dir("mdir/manifest.json")).parent)),
        "no manifest.json",
    ),  # fmt: skip
    Case("manifest-null", "live", live_bundle(lambda w: w.bundle_copy(raw=b"null")), "got null"),
    Case("manifest-list", "live", live_bundle(lambda w: w.bundle_copy(raw=b"[]")), "got a list"),
    Case("manifest-string", "live", live_bundle(lambda w: w.bundle_copy(raw=b'"bundle"')), "got a string"),
    Case("manifest-not-json", "live", live_bundle(lambda w: w.bundle_copy(raw=b"{parts: vision}")), "not valid JSON"),
    Case("manifest-binary", "live", live_bundle(lambda w: w.bundle_copy(raw=b"\xff\xfe\x00\x81" * 50)), "JSON"),
    Case("manifest-deep", "live", live_bundle(lambda w: w.bundle_copy(raw=b"[" * 100_000)), "JSON"),
    Case(
        "manifest-no-parts",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m.pop("parts")))),
        "parts is missing",
    ),
    Case(
        "manifest-no-tokenizer",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m.pop("tokenizer_file")))),
        "tokenizer_file is missing",
    ),
    Case(
        "manifest-no-labels",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m.pop("labels")))),
        "labels is missing",
    ),
    Case(
        "manifest-no-image-mean",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["preprocess"].pop("image_mean")))),
        "preprocess.image_mean",
    ),
    Case(
        "manifest-parts-a-list",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m.update(parts=list(m["parts"].values()))))),
        "parts must be an object",
    ),
    Case(
        "manifest-no-fuse",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["parts"].pop("fuse")))),
        "lacks fuse",
    ),
    Case(
        "manifest-embed-dim-string",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m.update(embed_dim="64")))),
        "embed_dim must be an integer",
    ),
    Case(
        "manifest-image-std-zero",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["preprocess"].update(image_std=[0, 0, 0])))),
        "image_std",
    ),
    Case(
        "manifest-reading-hop-past-window",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["preprocess"]["reading"].update(hop_s=5.0)))),
        "manifest.json: preprocess.reading hop_s must be in (0, window_s]",
    ),
    Case(
        "manifest-threshold-nan",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["thresholds"].update(emotion=float("nan"))))),
        "finite",
    ),
    Case(
        "manifest-label-count",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["labels"]["emotion"].append("bored")))),
        "disagree",
    ),
    Case(
        "manifest-embedding-count",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["embeddings"]["sentiment"].pop()))),
        "disagree",
    ),
    Case(
        "manifest-embedding-width",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["embeddings"]["emotion"][2].pop()))),
        "embed_dim",
    ),
    Case(
        "manifest-embedding-strings",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["embeddings"]["queries"][0].__setitem__(0, "x")))),
        "embeddings.queries",
    ),
    Case(
        "manifest-path-traversal",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["parts"]["vision"].update(path="../vision.onnx")))),
        "inside the bundle",
    ),
    Case(
        "manifest-window-mismatch",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["preprocess"].update(window_samples=48000)))),
        "window",
    ),
    Case(
        "bundle-part-missing", "live", live_bundle(lambda w: w.bundle_copy(drop=("fuse.onnx",))), "bundle file missing"
    ),  # fmt: skip
    Case(
        "bundle-onnx-tampered",
        "live",
        live_bundle(lambda w: w.bundle_copy(_edit(lambda m: m["parts"]["audio"].update(sha256="0" * 64)))),
        "checksum",
    ),  # fmt: skip
    Case(
        "bundle-onnx-corrupt-checksum-edited",
        "live",
        live_bundle(lambda w: w.bundle_copy(files={"fuse.onnx": _flip("fuse.onnx")})),
        "cannot be loaded by onnxruntime",
    ),
    Case(
        "bundle-graphs-swapped",
        "live",
        live_bundle(
            lambda w: w.bundle_copy(files={"vision.onnx": _other("audio.onnx"), "audio.onnx": _other("vision.onnx")})
        ),
        "does not match the manifest",
    ),
    Case(
        "bundle-fuse-is-text-graph",
        "live",
        live_bundle(lambda w: w.bundle_copy(files={"fuse.onnx": _other("text.onnx")})),
        "not the fuse graph",
    ),
    Case(
        "bundle-tokenizer-corrupt",
        "live",
        live_bundle(lambda w: w.bundle_copy(files={"tokenizer.json": lambda src: b'{"model": 42}'})),
        "tokenizer",
    ),
    # ---- flags and sources ---------------------------------------------------------------------------
    Case("live-frames-0", "live", live("--frames", "0"), "--frames"),
    Case("live-frames-negative", "live", live("--frames", "-1"), "--frames"),
    Case("live-frames-huge", "live", live("--frames", "100000"), "--frames"),
    Case("live-frames-text", "live", live("--frames", "four"), "--frames"),
    Case("live-duration-negative", "live", live("--duration", "-1"), "--duration"),
    Case("live-duration-nan", "live", live("--duration", "nan"), "--duration"),
    Case("live-duration-inf", "live", live("--duration", "inf"), "--duration"),
    Case("live-providers-choice", "live", live("--providers", "gpu"), "--providers"),
    Case("live-providers-unavailable", "live", live("--providers", lambda w: _missing_provider()), "not available"),
    Case("live-unknown-flag", "live", live("--turbo"), "unrecognized"),
    Case("live-config-nan", "live", lambda w: live("--config", w.conf("[capture]\nwindow_s = nan\n"))(w), "finite"),
    Case("live-camera-nonsense", "live", live("--camera", "nonsense"), "cannot open camera"),
    Case("live-camera-empty", "live", live("--camera", ""), "--camera"),
    Case("live-source-empty-string", "live", live("--source", ""), "--source"),
    Case("live-log-empty-string", "live", live("--log", " "), "--log"),
    Case("live-asr-model-is-a-file", "live", live("--asr-model", lambda w: w.file("model.bin", "x")), "whisper"),
    Case("live-camera-99", "live", live("--camera", "99"), "cannot open camera"),  # fixed in stream/ (OpenCV warnings)
    Case("live-source-missing", "live", live("--source", lambda w: str(w.root / "talk.mp4")), "not found"),
    Case("live-source-folder", "live", live("--source", lambda w: w.dir("videos")), "folder"),  # fixed in stream/
    Case("live-source-dev-null", "live", live("--source", "/dev/null"), "not a regular file"),  # fixed in stream/
    Case("live-source-empty", "live", live("--source", lambda w: w.file("empty.mp4")), "video"),
    Case(
        "live-source-text-as-mp4",
        "live",
        live("--source", lambda w: w.file("notes.mp4", "dear diary\n" * 50)),
        "cannot read video file",
    ),  # fmt: skip
    Case("live-source-name-too-long", "live", live("--source", lambda w: str(w.root / LONG)), "too long"),
    Case("live-source-newline", "live", live("--source", lambda w: str(w.root / "a\nb.mp4")), "not found"),
    Case("live-asr-model-missing", "live", live("--asr-model", lambda w: str(w.root / "whisper")), "whisper"),
    Case(
        "live-log-under-a-file", "live", live("--log", lambda w: w.file("plain") + "/s.csv"), "log"
    ),  # fixed in stream/
    Case("live-log-dev-null", "live", live("--log", "/dev/null"), "/dev/null"),  # fixed in stream/ (--log paths)
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    run_case(case, tmp_path, monkeypatch, capfd, request)


# ---- what still works ---------------------------------------------------------------------------------------
def test_a_real_bundle_manifest_passes_the_checks(tiny_bundle):
    from merclip.export.manifest import check_manifest

    manifest = json.loads((Path(tiny_bundle) / "manifest.json").read_text())
    check_manifest(manifest, tiny_bundle)
    manifest["labels"]["fixed"] = True
    manifest["embeddings"] = {"queries": None, "emotion": None, "sentiment": None}
    check_manifest(manifest, tiny_bundle)  # fixed-label variants carry no embeddings
