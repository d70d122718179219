"""The bundle manifest: what a bundle holds and how to check it (torch-free)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from merclip.errors import MerClipError

FORMAT = "merclip-bundle/1"
PARTS = ("vision", "audio", "text", "labels", "fuse")
REQUIRED_PARTS = ("vision", "audio", "text", "fuse")
MANIFEST = "manifest.json"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, manifest: dict) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def read_manifest(folder: str | Path, verify: bool = True) -> dict:
    """Load and check a bundle's manifest: format version, every file present with its checksum."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise MerClipError(f"bundle not found: {folder} is not a folder (make one with `merclip export --onnx`)")
    if not path.is_file():
        raise MerClipError(f"{folder} is not a MER-CLIP bundle: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MerClipError(f"bundle manifest {path} is not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise MerClipError(
            f"bundle {folder} has format {manifest.get('format')!r}; this version reads {FORMAT} "
            "(re-export it with this version's `merclip export`)"
        )
    parts = manifest.get("parts", {})
    missing = [p for p in REQUIRED_PARTS if p not in parts]
    if missing:
        raise MerClipError(f"bundle {folder} lacks parts: {', '.join(missing)}")
    if verify:
        for entry in [*parts.values(), manifest["tokenizer_file"]]:
            file = folder / entry["path"]
            if not file.is_file():
                raise MerClipError(f"bundle file missing: {file}")
            if sha256_file(file) != entry["sha256"]:
                raise MerClipError(f"bundle file {file} does not match its checksum (corrupt or modified): re-export")
    return manifest
