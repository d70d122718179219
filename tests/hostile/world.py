"""Hostile inputs through the real entry points (``merclip.cli.main`` / ``live_main``), in process: what the
tables in this folder (one module per command) share: the case record, the folder a case runs in and the
hostile files it makes there, and ``run_case``, which holds a case to the promise below.

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


def run_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd, request) -> None:
    """Run ``case`` through its entry point in its own folder and hold it to the promise above."""
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
