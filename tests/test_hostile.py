"""Hostile inputs through the real entry points (``merclip.cli.main`` / ``live_main``), in process.

Each case must end the way the project promises for a user's mistake:

- exit code 2 (returned, or through ``SystemExit`` for argparse errors);
- exactly one non-empty line on stderr (file descriptor 2, so C-library warnings count too), starting with
  ``error:`` and naming the problem (a keyword per case). argparse errors are held to the same rule: the
  parsers print one ``error: ... (see `PROG --help`)`` line, no usage block;
- no traceback: an exception escaping ``main`` fails the case with its traceback, as the user would see it;
- no file that existed before the command was changed or removed (the case's folder is hashed around it).

Every case runs in its own folder with HOME pointed there and ``runtime.cache_dir`` in it, so nothing
touches ``~/.cache``. Bundle cases copy the session's ``tiny_bundle`` (manifest copied, graphs symlinked
unless a case edits them).

Cases marked ``# fixed in stream/`` belong to the stream-side fixes (sources, CSV log, session setup);
``# lead: export`` is the export command's --out check. They may fail until those land.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from merclip.cli import live_main, main

LONG = "x" * 300  # longer than any file name may be (255 bytes)


class World:
    """A case's folder and helpers that make hostile files in it."""

    def __init__(self, root: Path, request):
        self.root = root
        self._request = request
        self._n = 0
        self.uses_bundle = False
        self.cache = root / "cache"
        self.config = str(self.file("config.toml", f'[runtime]\ncache_dir = "{self.cache}"\n'))

    # ---- files -----------------------------------------------------------------------------------------
    def file(self, name: str, data: bytes | str = b"") -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def dir(self, name: str, files: dict[str, str] | None = None) -> str:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        for sub, text in (files or {}).items():
            (path / sub).write_text(text)
        return str(path)

    def loop(self, name: str) -> str:
        """A symbolic link that points at itself."""
        path = self.root / name
        path.symlink_to(path)
        return str(path)

    def conf(self, text: str) -> str:
        """A config file with the case's cache_dir plus ``text`` (TOML)."""
        self._n += 1
        return self.file(f"conf{self._n}.toml", text + f'\n[runtime]\ncache_dir = "{self.cache}"\n')

    # ---- bundles ---------------------------------------------------------------------------------------
    @property
    def bundle(self) -> str:
        self.uses_bundle = True
        return str(self._request.getfixturevalue("tiny_bundle"))

    def bundle_copy(
        self,
        manifest: Callable[[dict], object] | None = None,
        raw: bytes | None = None,
        files: dict[str, Callable[[Path], bytes]] | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        """A copy of the tiny bundle: ``files`` rewritten (checksums updated in the manifest, so only the
        runtime's own checks can catch them), ``drop`` left out, then ``manifest`` applied to the manifest (or
        ``raw`` written as its bytes)."""
        src = Path(self.bundle)
        self._n += 1
        dst = self.root / f"bundle{self._n}"
        dst.mkdir()
        files = files or {}
        for f in src.iterdir():
            if f.name != "manifest.json" and f.name not in files and f.name not in drop:
                (dst / f.name).symlink_to(f)
        data = json.loads((src / "manifest.json").read_text())
        for name, make in files.items():
            (dst / name).write_bytes(make(src))
            digest = hashlib.sha256((dst / name).read_bytes()).hexdigest()
            for entry in [*data["parts"].values(), data["tokenizer_file"]]:
                if entry["path"] == name:
                    entry["sha256"] = digest
        if manifest is not None:
            data = manifest(data)
        (dst / "manifest.json").write_bytes(raw if raw is not None else json.dumps(data).encode())
        return str(dst)

    def session_csv(self, name: str, rows: list[str], encoding: str = "utf-8") -> str:
        head = (
            "window,t_start_s,t_end_s,wall_time_utc,emotion_happy,emotion_sad,sentiment_positive,"
            "sentiment_negative,top_emotion,transcript,modalities,dropped_windows,latency_ms,asr_ms,model_ms"
        )
        return self.file(name, ("\n".join([head, *rows]) + "\n").encode(encoding))


def _edit(fn: Callable[[dict], None]) -> Callable[[dict], dict]:
    def apply(m: dict) -> dict:
        fn(m)
        return m

    return apply


def _flip(name: str) -> Callable[[Path], bytes]:
    """The bundle's ``name`` with bytes in its middle flipped (not a valid graph any more)."""

    def make(src: Path) -> bytes:
        data = bytearray((src / name).read_bytes())
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
        data[:16] = b"\xde\xad\xbe\xef" * 4
        return bytes(data)

    return make


def _other(name: str) -> Callable[[Path], bytes]:
    return lambda src: (src / name).read_bytes()


GOOD_ROW = "0,0.000,2.000,t,0.5000,0.2000,0.6000,0.4000,happy,hello,LVA,0,10.0,1.0,2.0"
MANIFEST_HEADER = "id,split,media,text,sentiment,emotion_happy"
MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID"
MMSA_HEADER = "video_id,clip_id,text,label,mode"


@dataclass
class Case:
    id: str
    entry: str  # "merclip" or "live"
    argv: Callable[[World], list[str]]
    keyword: str  # must appear (case-insensitive) in the error line
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    marks: list = field(default_factory=list)


def live(*flags: str, bundle: str | None = None) -> Callable[[World], list]:
    """merclip-live with the case's config, a bundle (the good one unless given), no UI, no ASR."""

    def argv(w: World) -> list:
        resolved = [f(w) if callable(f) else f for f in flags]
        b = bundle(w) if callable(bundle) else (bundle or w.bundle)
        extra = [] if "--source" in resolved or "--camera" in resolved else ["--source", "synthetic"]
        asr = [] if "--asr-model" in resolved else ["--no-asr"]
        return ["--config", w.config, "--bundle", b, "--no-ui", "--fast", "--duration", "2", *asr, *extra, *resolved]

    return argv


def live_bundle(make: Callable[[World], str]) -> Callable[[World], list]:
    return lambda w: live(bundle=make)(w)


def cmd(*parts) -> Callable[[World], list]:
    """merclip COMMAND ... with the case's config (parts may be callables of the World)."""

    def argv(w: World) -> list:
        resolved = [p(w) if callable(p) else p for p in parts]
        if "--config" not in resolved:
            resolved[1:1] = ["--config", w.config]
        return resolved

    return argv


def config(text: str | bytes | Callable[[World], str]) -> Callable[[World], list]:
    """`merclip config --config FILE` where FILE holds ``text`` (or is what the callable returns)."""

    def argv(w: World) -> list:
        if callable(text):
            return ["config", "--config", text(w)]
        return ["config", "--config", w.file("hostile.toml", text)]

    return argv


def _missing_provider() -> str:
    import onnxruntime as ort

    available = ort.get_available_providers()
    for name, ep in (("tensorrt", "TensorrtExecutionProvider"), ("cuda", "CUDAExecutionProvider")):
        if ep not in available:
            return name
    pytest.skip("every provider is available here")


def _no_onnx_export(mp: pytest.MonkeyPatch) -> None:
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("export began before --out was checked: the folder would have been replaced")

    mp.setattr(torch.onnx, "export", refuse)


CASES = [
    # ---- config files --------------------------------------------------------------------------------
    Case("config-binary", "merclip", config(b"\x00\x01\x02\xff" * 64), "binary"),
    Case("config-latin1", "merclip", config('[model]\narch = "café"\n'.encode("latin-1")), "UTF-8"),
    Case("config-utf16", "merclip", config('[model]\narch = "tiny"\n'.encode("utf-16")), "UTF-16"),
    Case("config-is-a-folder", "merclip", config(lambda w: w.dir("conf.d")), "folder"),
    Case("config-missing", "merclip", config(lambda w: str(w.root / "nope.toml")), "not found"),
    Case("config-dev-zero", "merclip", config(lambda w: "/dev/zero"), "not a regular file"),
    Case("config-symlink-loop", "merclip", config(lambda w: w.loop("loop.toml")), "symbolic link"),
    Case("config-name-too-long", "merclip", config(lambda w: str(w.root / LONG)), "too long"),
    Case("config-newline-in-name", "merclip", config(lambda w: str(w.root / "con\nfig.toml")), "not found"),
    Case("config-too-big", "merclip", config("# " + "x" * (2 << 20) + "\n"), "too big"),
    Case("config-not-toml", "merclip", config("[model\narch = \n"), "not valid TOML"),
    Case("config-window-nan", "merclip", config("[capture]\nwindow_s = nan\n"), "finite"),
    Case("config-hop-inf", "merclip", config("[capture]\nhop_s = inf\n"), "finite"),
    Case("config-fps-negative", "merclip", config("[capture]\nfps = -5.0\n"), "capture.fps"),
    Case("config-width-huge", "merclip", config("[capture]\nwidth = 1000000000000\n"), "capture.width"),
    Case("config-lr-huge", "merclip", config("[train]\nlr = 1e308\n"), "train.lr"),
    Case("config-lr-zero", "merclip", config("[train]\nlr = 0.0\n"), "train.lr must be > 0"),
    Case("config-epochs-2^64", "merclip", config("[train]\nepochs = 99999999999999999999\n"), "train.epochs"),
    Case("config-seed-negative", "merclip", config("[train]\nseed = -1\n"), "train.seed"),
    Case("config-wrong-type-int", "merclip", config('[capture]\nframes_per_window = "four"\n'), "integer"),
    Case("config-wrong-type-bool", "merclip", config('[asr]\nenabled = "yes"\n'), "true or false"),
    Case("config-wrong-type-float", "merclip", config("[ui]\nsmoothing_s = [0.5]\n"), "ui.smoothing_s"),
    Case("config-unknown-key", "merclip", config("[capture]\nwidht = 640\n"), "unknown key capture.widht"),
    Case("config-unknown-section", "merclip", config("[captur]\nwidth = 640\n"), "unknown section"),
    Case("config-key-outside-section", "merclip", config("window_s = 2.0\n"), "[section]"),
    Case("config-section-not-table", "merclip", config("model = 3\n"), "must be a table"),
    Case("config-empty-labels", "merclip", config("[labels]\nemotion = []\n"), "labels.emotion"),
    Case("config-duplicate-labels", "merclip", config('[labels]\nemotion = ["a", "a"]\n'), "distinct"),
    Case("config-template-no-label", "merclip", config('[export]\nemotion_template = "{mood}"\n'), "{label}"),
    Case("config-nul-in-string", "merclip", config('[model]\narch = "ti\\u0000ny"\n'), "NUL"),
    Case("config-empty-arch", "merclip", config('[model]\narch = "  "\n'), "model.arch"),
    Case(
        "config-cache-dir-is-a-file",
        "merclip",
        config(lambda w: w.file("cd.toml", f'[runtime]\ncache_dir = "{w.file("afile", "data")}"\n')),
        "runtime.cache_dir",
    ),
    Case(
        "config-cache-dir-under-a-file",
        "merclip",
        config(lambda w: w.file("cd.toml", f'[runtime]\ncache_dir = "{w.file("afile", "data")}/sub"\n')),
        "cannot be created",
    ),
    Case(
        "config-cache-dir-loop",
        "merclip",
        config(lambda w: w.file("cd.toml", f'[runtime]\ncache_dir = "{w.loop("cacheloop")}"\n')),
        "symbolic link",
    ),
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
    # ---- merclip-live flags and sources ----------------------------------------------------------------
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
    Case("config-flag-empty", "merclip", lambda w: ["config", "--config", ""], "--config"),
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
    # ---- merclip report ------------------------------------------------------------------------------
    Case("report-empty", "merclip", cmd("report", lambda w: w.file("s.csv")), "empty"),
    Case("report-header-only", "merclip", cmd("report", lambda w: w.session_csv("s.csv", [])), "no readings"),
    Case("report-binary", "merclip", cmd("report", lambda w: w.file("s.csv", os.urandom(4096) + b"\0")), "binary"),
    Case(
        "report-latin1",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW.replace("hello", "café")], "latin-1")),
        "UTF-8",
    ),  # fmt: skip
    Case("report-not-a-log", "merclip", cmd("report", lambda w: w.file("s.csv", "name,age\nann,3\n")), "not a merclip"),
    Case(
        "report-garbage-number",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW.replace("0.5000", "lots"), GOOD_ROW])),
        "emotion_happy",
    ),
    Case(
        "report-ragged-row",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", ["0,1,2", GOOD_ROW])),
        "line 2",
    ),
    Case(
        "report-probability-out-of-range",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW.replace("0.6000", "7.5")])),
        "sentiment_positive",
    ),
    Case("report-folder", "merclip", cmd("report", lambda w: w.dir("sessions")), "folder"),
    Case("report-dev-null", "merclip", cmd("report", "/dev/null"), "not a regular file"),
    Case("report-missing", "merclip", cmd("report", lambda w: str(w.root / "gone.csv")), "not found"),
    Case("report-name-too-long", "merclip", cmd("report", lambda w: str(w.root / LONG)), "too long"),
    Case("report-newline-name", "merclip", cmd("report", lambda w: w.file("a\nb.csv", "x\n1\n")), "not a merclip"),
    Case(
        "report-would-overwrite-log",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.png", [GOOD_ROW])),
        "overwrite",
    ),
    Case(
        "report-out-is-folder",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW]), "--out", lambda w: w.dir("plots")),
        "folder",
    ),
    Case(
        "report-out-missing-folder",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW]), "--out", lambda w: str(w.root / "no/p.png")),
        "does not exist",
    ),
    Case(
        "report-out-symlink-loop",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW]), "--out", lambda w: w.loop("p.png")),
        "symbolic link",
    ),
    Case(
        "report-out-bad-suffix",
        "merclip",
        cmd("report", lambda w: w.session_csv("s.csv", [GOOD_ROW]), "--out", lambda w: str(w.root / "p.txt")),
        ".png",
    ),
    # ---- datasets ------------------------------------------------------------------------------------
    Case(
        "manifest-csv-no-text",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.csv", "id,split\na,train\n")),
        "text",
    ),  # fmt: skip
    Case(
        "manifest-csv-bad-split",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,training,,hi,1,0\n"),
        ),  # fmt: skip
        "split",
    ),
    Case(
        "manifest-csv-bad-sentiment",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,train,,hi,great,0\n"),
        ),  # fmt: skip
        "sentiment",
    ),
    Case(
        "manifest-csv-bad-emotion",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,train,,hi,1,very\n"),
        ),  # fmt: skip
        "emotion_happy",
    ),
    Case(
        "manifest-csv-start-after-end",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", "split,text,start_s,end_s\ntrain,hi,5,2\n"),
        ),  # fmt: skip
        "start_s",
    ),
    Case(
        "manifest-csv-ragged",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,train,,hi\n"),
        ),  # fmt: skip
        "cells",
    ),
    Case(
        "manifest-csv-header-only",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.csv", MANIFEST_HEADER + "\n")),
        "no clips",
    ),
    Case(
        "manifest-csv-binary",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.csv", b"\x00\x9f" * 99)),
        "binary",
    ),  # fmt: skip
    Case(
        "manifest-csv-latin1",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.csv", f"{MANIFEST_HEADER}\na,train,,café,1,0\n".encode("latin-1")),
        ),
        "UTF-8",
    ),  # fmt: skip
    Case(
        "manifest-is-folder",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.dir("data")),
        "folder",
    ),  # fmt: skip
    Case(
        "manifest-jsonl-bad-line",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "manifest",
            "--data-root",
            lambda w: w.file("m.jsonl", '{"split": "train", "text": "a"}\n{"split": "train", "text"\n'),
        ),
        "line 2",
    ),  # fmt: skip
    Case(
        "manifest-jsonl-not-object",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.jsonl", '["train", "a"]\n')),
        "JSON object",
    ),  # fmt: skip
    Case(
        "manifest-jsonl-no-split",
        "merclip",
        cmd("prepare", "--dataset", "manifest", "--data-root", lambda w: w.file("m.jsonl", '{"text": "a"}\n')),
        "split",
    ),  # fmt: skip
    Case(
        "mmsa-wrong-columns",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "mosi",
            "--data-root",
            lambda w: w.dir("MOSI", {"label.csv": "id,sentence,score\n1,hi,2\n"}),
        ),  # fmt: skip
        "video_id",
    ),
    Case(
        "mmsa-label-not-number",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "mosi",
            "--data-root",
            lambda w: w.dir("MOSI", {"label.csv": f"{MMSA_HEADER}\nv,0,hi,positive,train\n"}),
        ),  # fmt: skip
        "label",
    ),
    Case(
        "mmsa-bad-mode",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "mosi",
            "--data-root",
            lambda w: w.dir("MOSI", {"label.csv": f"{MMSA_HEADER}\nv,0,hi,1.0,holdout\n"}),
        ),  # fmt: skip
        "split",
    ),
    Case(
        "mosei-csd-not-hdf5",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "mosei",
            "--data-root",
            lambda w: w.dir(
                "MOSEI", {"label.csv": f"{MMSA_HEADER}\nv,0,hi,1.0,train\n", "CMU_MOSEI_Labels.csd": "not hdf5"}
            ),
        ),  # fmt: skip
        "HDF5",
    ),
    Case(
        "mmsa-root-is-file",
        "merclip",
        cmd("prepare", "--dataset", "mosei", "--data-root", lambda w: w.file("label.csv", MMSA_HEADER)),
        "is a file",
    ),
    Case(
        "mmsa-root-missing",
        "merclip",
        cmd("prepare", "--dataset", "mosei", "--data-root", lambda w: str(w.root / "nodata")),
        "does not exist",
    ),
    Case(
        "meld-wrong-columns",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD", {"train_sent_emo.csv": "Utterance,Emotion\nhi,joy\n"}),
        ),  # fmt: skip
        "Dialogue_ID",
    ),
    Case(
        "meld-bad-ids",
        "merclip",
        cmd(
            "prepare",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD", {"train_sent_emo.csv": f"{MELD_HEADER}\n1,hi,Ross,joy,positive,one,0\n"}),
        ),
        "Dialogue_ID",
    ),  # fmt: skip
    # ---- eval, bench, train, prepare, export flags ------------------------------------------------------
    Case(
        "eval-json-missing-folder",
        "merclip",
        cmd(
            "eval",
            "--baseline",
            "majority",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD"),
            "--json",
            lambda w: str(w.root / "no" / "m.json"),
        ),
        "does not exist",
    ),  # fmt: skip
    Case(
        "eval-json-is-folder",
        "merclip",
        cmd(
            "eval",
            "--baseline",
            "majority",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD"),
            "--json",
            lambda w: w.dir("metrics"),
        ),
        "folder",
    ),  # fmt: skip
    Case(
        "eval-json-under-file",
        "merclip",
        cmd(
            "eval",
            "--baseline",
            "majority",
            "--dataset",
            "meld",
            "--data-root",
            lambda w: w.dir("MELD"),
            "--json",
            lambda w: w.file("plain") + "/m.json",
        ),
        "not a folder",
    ),  # fmt: skip
    Case("bench-windows-0", "merclip", cmd("bench", "--windows", "0"), "--windows"),
    Case("bench-windows-negative", "merclip", cmd("bench", "--windows", "-3"), "--windows"),
    Case("bench-streams-0", "merclip", cmd("bench", "--streams", "0"), "--streams"),
    Case("bench-streams-text", "merclip", cmd("bench", "--streams", "many"), "--streams"),
    Case("bench-text-context", "merclip", cmd("bench", "--text-context", "5"), "--text-context"),
    Case("bench-soak-nan", "merclip", cmd("bench", "--soak", "nan"), "--soak"),
    Case("train-epochs-0", "merclip", cmd("train", "--epochs", "0"), "--epochs"),
    Case("train-lr-nan", "merclip", cmd("train", "--lr", "nan"), "--lr"),
    Case("train-lr-negative", "merclip", cmd("train", "--lr", "-0.1"), "--lr"),
    Case("train-batch-negative", "merclip", cmd("train", "--batch-size", "-4"), "--batch-size"),
    Case("train-dataset-choice", "merclip", cmd("train", "--dataset", "imagenet"), "--dataset"),
    Case(
        "train-out-is-a-file",
        "merclip",
        cmd("train", "--model", "tiny", "--dataset", "synthetic", "--out", lambda w: w.file("notes.txt", "keep me")),
        "is a file",
    ),
    Case("prepare-synthetic-0", "merclip", cmd("prepare", "--synthetic", "0"), "--synthetic"),
    Case("export-precision-choice", "merclip", cmd("export", "--onnx", "--precision", "int4"), "--precision"),
    Case(
        "export-checkpoint-missing",
        "merclip",
        cmd(
            "export",
            "--onnx",
            "--checkpoint",
            lambda w: str(w.root / "best.safetensors"),
            "--out",
            lambda w: str(w.root / "b"),
        ),
        "not found",
    ),  # fmt: skip
    Case(
        "export-checkpoint-text",
        "merclip",
        cmd(
            "export",
            "--onnx",
            "--checkpoint",
            lambda w: w.file("best.safetensors", "hello"),
            "--out",
            lambda w: str(w.root / "b"),
        ),
        "safetensors",
    ),  # fmt: skip
    Case(
        "export-out-replaces-a-folder",  # lead: export (today the folder's files are deleted)
        "merclip",
        cmd(
            "export",
            "--onnx",
            "--model",
            "tiny",
            "--weights",
            "random",
            "--out",
            lambda w: w.dir("thesis", {"chapter1.txt": "years of work"}),
        ),  # fmt: skip
        "thesis",
        patch=_no_onnx_export,
    ),
    Case("no-command-flag", "merclip", lambda w: ["--frobnicate"], "unrecognized"),
    Case("unknown-command", "merclip", lambda w: ["frobnicate"], "invalid choice"),
]


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file under ``roots`` (symlinks not followed): size, mtime and, for small files, a hash."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                digest = None
                if not os.path.islink(path) and st.st_size < (1 << 20):
                    with open(path, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                seen[path] = (st.st_size, st.st_mtime_ns, digest)
    return seen


def _invoke(entry: str, argv: list[str]) -> int:
    try:
        return (main if entry == "merclip" else live_main)(argv)
    except SystemExit as stop:  # argparse errors (and --help) exit through SystemExit
        return stop.code if isinstance(stop.code, int) else 1


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_exit_2(case: Case, tmp_path, monkeypatch, capfd, request):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)  # no ./config.toml from the repository
    w = World(tmp_path, request)
    argv = case.argv(w)
    if case.patch:
        case.patch(monkeypatch)
    watched = [tmp_path] + ([Path(w.bundle)] if w.uses_bundle else [])
    before = _snapshot(*watched)
    capfd.readouterr()
    # what the user's terminal would show from log records (pytest holds the root logger's handlers)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        rc = _invoke(case.entry, argv)
    finally:
        logging.getLogger().removeHandler(handler)
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err, err
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    assert len(lines) == 1, f"stderr must be one line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert case.keyword.lower() in lines[0].lower(), f"{case.keyword!r} not in: {lines[0]}"
    after = _snapshot(*watched)
    changed = [p for p, sig in before.items() if after.get(p) != sig]
    assert not changed, f"pre-existing files changed or removed: {changed}"
    assert not (home / ".cache" / "merclip").exists(), "a case wrote into ~/.cache/merclip"


def test_the_table_is_big_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


# ---- what still works ---------------------------------------------------------------------------------------
def test_config_with_a_utf8_bom_is_read(tmp_path):
    from merclip.config import load_config

    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf[capture]\nframes_per_window = 8\n")
    assert load_config(path).capture.frames_per_window == 8


def test_cache_path_names_the_problem(tmp_path):
    from merclip.config import cache_path
    from merclip.errors import MerClipError

    assert cache_path(tmp_path / "c", "tensorrt").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(MerClipError, match="runtime.cache_dir: .*f/bundles"):
        cache_path(tmp_path / "f", "bundles")


def test_report_skips_a_torn_last_row(tmp_path):
    from merclip.stream.report import read_session

    w = World.__new__(World)
    w.root = tmp_path
    path = w.session_csv("s.csv", [GOOD_ROW, GOOD_ROW.replace("0,0.000,2.000", "1,2.000,4.000"), "2,4.000,6.0"])
    session = read_session(path)
    assert session.t_end == [2.0, 4.0] and session.emotions["happy"] == [0.5, 0.5]


def test_a_real_bundle_manifest_passes_the_checks(tiny_bundle):
    from merclip.export.manifest import check_manifest

    manifest = json.loads((Path(tiny_bundle) / "manifest.json").read_text())
    check_manifest(manifest, tiny_bundle)
    manifest["labels"]["fixed"] = True
    manifest["embeddings"] = {"queries": None, "emotion": None, "sentiment": None}
    check_manifest(manifest, tiny_bundle)  # fixed-label variants carry no embeddings
