"""The bundle manifest: what a bundle holds and how to check it (torch-free).

``read_manifest`` refuses, in one line naming the bundle and the key, a manifest that is not what
``merclip export --onnx`` writes: wrong JSON shape, missing or mistyped keys, label and embedding counts
that disagree, files missing or not matching their checksums.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from merclip.model.reading import CONTEXTS, ReadingSetting

from merclip.errors import MerClipError

FORMAT = "merclip-bundle/1"
PARTS = ("vision", "audio", "text", "labels", "fuse")
REQUIRED_PARTS = ("vision", "audio", "text", "fuse")
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 256 << 20  # label embeddings make it large-ish; a file this big is not a manifest
_HEX = set("0123456789abcdef")


class BundleFileError(MerClipError):
    """A bundle file missing, unreadable or not matching its checksum. ``problem`` says which in a few words,
    for callers that word the advice themselves (the bundle cache rebuilds its own copy)."""

    def __init__(self, message: str, problem: str):
        super().__init__(message)
        self.problem = problem


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, manifest: dict) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def read_manifest(folder: str | Path, verify: bool = True) -> dict:
    """Load and check a bundle's manifest: format version, keys and types, every file present with its checksum."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is not a folder"
            raise MerClipError(f"bundle not found: {folder} {what} (make one with `merclip export --onnx`)")
        if not path.is_file():
            raise MerClipError(f"{folder} is not a MER-CLIP bundle: no {MANIFEST}")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise MerClipError(f"bundle manifest {path} is too big to be a manifest ({path.stat().st_size} bytes)")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise MerClipError(f"bundle {folder}: cannot read {MANIFEST}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise MerClipError(f"bundle manifest {path} is not valid JSON (not UTF-8 text)") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise MerClipError(f"bundle manifest {path} is not valid JSON ({err})") from None
    except RecursionError:
        raise MerClipError(f"bundle manifest {path} is not valid JSON (nested too deeply)") from None
    check_manifest(manifest, folder)
    if verify:
        for entry in [*manifest["parts"].values(), manifest["tokenizer_file"]]:
            file = folder / entry["path"]
            if not file.is_file():
                raise BundleFileError(f"bundle file missing: {file}", f"{file.name} is missing")
            try:
                digest = sha256_file(file)
            except OSError as err:
                raise BundleFileError(
                    f"bundle file {file} cannot be read: {err.strerror}", f"{file.name} cannot be read"
                ) from None
            if digest != entry["sha256"]:
                raise BundleFileError(
                    f"bundle file {file} does not match its checksum (corrupt or modified): re-export",
                    f"{file.name} does not match its checksum",
                )
    return manifest


# ---- structure ------------------------------------------------------------------------------------------
class _Bad(Exception):
    """A manifest problem at ``key``; turned into one MerClipError line naming the bundle."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _get(table: dict, key: str, prefix: str = "") -> Any:
    if key not in table:
        raise _Bad(f"{prefix}{key}", "is missing")
    return table[key]


def _obj(table: dict, key: str, prefix: str = "") -> dict:
    value = _get(table, key, prefix)
    if not isinstance(value, dict):
        raise _Bad(f"{prefix}{key}", f"must be an object, got {_kind(value)}")
    return value


def _str(table: dict, key: str, prefix: str = "", choices: tuple | None = None) -> str:
    value = _get(table, key, prefix)
    if not isinstance(value, str):
        raise _Bad(f"{prefix}{key}", f"must be a string, got {_kind(value)}")
    if choices and value not in choices:
        raise _Bad(f"{prefix}{key}", f"must be one of {', '.join(choices)}, got {value[:40]!r}")
    return value


def _int(table: dict, key: str, prefix: str = "", lo: int = 1, hi: int = 1 << 24) -> int:
    value = _get(table, key, prefix)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{prefix}{key}", f"must be an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        raise _Bad(f"{prefix}{key}", f"must be between {lo} and {hi}, got {value}")
    return value


def _num(value: Any, key: str, lo: float | None = None, hi: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(key, f"must be a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise _Bad(key, f"must be a finite number, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi) or (positive and value <= 0):
        span = "> 0" if positive else f"between {lo} and {hi}"
        raise _Bad(key, f"must be {span}, got {value}")
    return float(value)


def _labels(table: dict, key: str) -> list[str]:
    value = _get(table, key, "labels.")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise _Bad(f"labels.{key}", "must be a non-empty list of non-empty strings")
    if len(set(value)) != len(value):
        raise _Bad(f"labels.{key}", "must hold distinct labels")
    return value


def _file_entry(value: Any, key: str) -> None:
    if not isinstance(value, dict):
        raise _Bad(key, f"must be an object with path and sha256, got {_kind(value)}")
    name, digest = value.get("path"), value.get("sha256")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise _Bad(f"{key}.path", f"must be a file name inside the bundle, got {str(name)[:60]!r}")
    if not isinstance(digest, str) or len(digest) != 64 or set(digest) - _HEX:
        raise _Bad(f"{key}.sha256", "must be a 64-digit lowercase hex SHA-256")


def _matrix(value: Any, key: str, rows: int, cols: int, what: str) -> None:
    """``value`` must be ``rows`` lists of ``cols`` finite numbers; ``what`` says where ``rows`` comes from."""
    if not isinstance(value, list):
        raise _Bad(key, f"must be a list of {rows} embeddings, got {_kind(value)}")
    if len(value) != rows:
        rows_got = f"{len(value)} row{'' if len(value) == 1 else 's'}"
        raise _Bad(key, f"has {rows_got} but {what}: label and embedding counts disagree")
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            got = f"{len(row)} numbers" if isinstance(row, list) else _kind(row)
            raise _Bad(f"{key}[{i}]", f"must hold {cols} numbers (embed_dim), got {got}")
        for x in row:
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise _Bad(f"{key}[{i}]", f"must hold finite numbers, got {_kind(x)} {str(x)[:20]}")


def check_manifest(manifest: Any, folder: str | Path) -> None:
    """Refuse a manifest that does not have the shape ``merclip export`` writes (one line, naming the key)."""
    if not isinstance(manifest, dict):
        raise MerClipError(f"bundle {folder}: {MANIFEST} must hold a JSON object, got {_kind(manifest)}")
    if "format" not in manifest:
        raise MerClipError(f"bundle {folder}: {MANIFEST} is not a MER-CLIP bundle manifest (no format key)")
    if manifest.get("format") != FORMAT:
        got = manifest.get("format")
        raise MerClipError(
            f"bundle {folder} has format {str(got)[:40]!r}; this version reads {FORMAT} "
            "(re-export it with this version's `merclip export`)"
        )
    try:
        _check(manifest)
    except _Bad as bad:
        raise MerClipError(f"bundle {folder}: {MANIFEST}: {bad} (re-export the bundle)") from None


def _check(m: dict) -> None:
    parts = _obj(m, "parts")
    missing = [p for p in REQUIRED_PARTS if p not in parts]
    if missing:
        raise _Bad("parts", f"lacks {', '.join(missing)}")
    for name, entry in parts.items():
        if name not in PARTS:
            raise _Bad(f"parts.{name}", f"is not a bundle part ({', '.join(PARTS)})")
        _file_entry(entry, f"parts.{name}")
    _file_entry(_get(m, "tokenizer_file"), "tokenizer_file")
    _str(m, "precision", choices=("fp32", "fp16", "int8"))
    _str(m, "mode", choices=("trained", "zero-shot"))
    _str(m, "arch")
    dim = _int(m, "embed_dim", hi=65536)
    if "random_weights" in m and not isinstance(m["random_weights"], bool):
        raise _Bad("random_weights", f"must be true or false, got {_kind(m['random_weights'])}")

    pre = _obj(m, "preprocess")
    p = "preprocess."
    _int(pre, "image_size", p, lo=8, hi=4096)
    for key, positive in (("image_mean", False), ("image_std", True)):
        values = _get(pre, key, p)
        if not isinstance(values, list) or len(values) != 3:
            raise _Bad(p + key, "must be a list of 3 numbers (R, G, B)")
        for v in values:
            _num(v, p + key, positive=positive)
    _int(pre, "frames_per_window", p, hi=256)
    rate = _int(pre, "sample_rate", p, lo=1000, hi=192_000)
    samples = _int(pre, "window_samples", p, hi=rate * 60)
    if "window_s" in pre and abs(_num(pre["window_s"], p + "window_s", positive=True) * rate - samples) > 1:
        raise _Bad(p + "window_samples", f"({samples}) must equal window_s x sample_rate")
    _int(pre, "context_length", p, hi=4096)
    if pre.get("reading") is not None:  # absent: a bundle from before the setting (each window's own words)
        reading = _obj(pre, "reading", p)
        _str(reading, "context", p + "reading.", choices=CONTEXTS)
        window_s = _num(_get(reading, "window_s", p + "reading."), p + "reading.window_s", positive=True)
        _num(_get(reading, "hop_s", p + "reading."), p + "reading.hop_s", positive=True)
        if abs(window_s * rate - samples) > 1:
            raise _Bad(p + "reading.window_s", f"({window_s}) must equal window_samples / sample_rate")
        if _int(reading, "frames_per_window", p + "reading.", hi=256) != pre["frames_per_window"]:
            raise _Bad(p + "reading.frames_per_window", "must equal preprocess.frames_per_window")
        try:  # the ranges every reading keeps (hop within the window, frames up to 64)
            ReadingSetting.from_json(reading)
        except MerClipError as err:
            raise _Bad(p + "reading", str(err)) from None
    if pre.get("face") is not None:  # absent: a bundle from before face cropping (whole frames)
        face = _obj(pre, "face", p)
        _str(face, "mode", p + "face.", choices=("haar", "off"))
        _num(_get(face, "margin", p + "face."), p + "face.margin", lo=0.0, hi=2.0)
    if "labels" in parts:
        _int(pre, "label_context_length", p, hi=4096)

    labels = _obj(m, "labels")
    fixed = _get(labels, "fixed", "labels.")
    if not isinstance(fixed, bool):
        raise _Bad("labels.fixed", f"must be true or false, got {_kind(fixed)}")
    mode = _str(labels, "mode", "labels.", choices=("trained", "zero-shot"))
    emotion, sentiment = _labels(labels, "emotion"), _labels(labels, "sentiment")
    if mode == "zero-shot":
        for task in ("emotion", "sentiment"):
            template = _str(labels, f"{task}_template", "labels.")
            try:
                template.format(label="x")
            except (KeyError, IndexError, ValueError, AttributeError):
                raise _Bad(f"labels.{task}_template", "must contain {label} and no other {...} fields") from None
    else:
        _int(labels, "prompt_context", "labels.", lo=0, hi=256)

    if "agreement" in m:  # precision -> its measured agreement with fp32 (export/agreement.py judges the numbers)
        for precision, record in _obj(m, "agreement").items():
            if not isinstance(record, dict):
                raise _Bad(f"agreement.{precision}", f"must be an object, got {_kind(record)}")

    thresholds = _obj(m, "thresholds")
    _num(_get(thresholds, "emotion", "thresholds."), "thresholds.emotion", lo=0.0, hi=1.0)

    emb = _obj(m, "embeddings")
    counts = {
        "queries": (2, "there are 2 task queries"),
        "emotion": (len(emotion), f"labels.emotion has {len(emotion)} labels"),
        "sentiment": (len(sentiment), f"labels.sentiment has {len(sentiment)} labels"),
    }
    for key, (rows, what) in counts.items():
        value = _get(emb, key, "embeddings.")
        if value is None:
            if not fixed:
                raise _Bad(f"embeddings.{key}", "is null but the bundle's labels are not fixed")
            continue
        _matrix(value, f"embeddings.{key}", rows, dim, what)
