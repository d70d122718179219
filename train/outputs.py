"""The files `merclip eval` and `merclip calibrate` write: refused before the work that fills them when they
cannot be written (or would replace a user's other file), and written with one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

from merclip.errors import MerClipError


def _check_output_file(path: str | None, flag: str, replaceable=None, what: str = "") -> None:
    """Refuse an output file that cannot be written, before the work that fills it. With ``replaceable``
    (a test of the file already there), an existing file is only replaced when it is ``what`` (something
    this command wrote), never a user's other file."""
    if not path:
        return
    target = Path(path).expanduser()
    try:
        if target.is_dir():
            raise MerClipError(f"{flag} {target} is a folder: give a file name, e.g. {target / 'metrics.json'}")
        if target.exists() and not target.is_file():
            raise MerClipError(f"{flag} {target} is not a regular file")
        if replaceable is not None and target.exists() and not replaceable(target):
            raise MerClipError(f"{flag} {target} exists and is not {what}: not overwritten (choose another name)")
        if not target.parent.is_dir():
            what = "does not exist" if not target.parent.exists() else "is not a folder"
            raise MerClipError(f"{flag} {target}: {target.parent} {what}")
        if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
            raise MerClipError(f"{flag} {target} is not writable (permission denied)")
    except OSError as err:
        raise MerClipError(f"{flag} {_short(path)} is unusable: {err.strerror}") from None


def _is_metrics_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and any(k in data for k in ("accuracy", "emotion_accuracy", "sentiment_accuracy"))


def _is_checkpoint(path: Path) -> bool:
    from merclip.model.checkpoint import read_checkpoint_config

    try:
        read_checkpoint_config(path)
    except MerClipError:
        return False
    return True


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _write_json(path: str, metrics: dict) -> None:
    try:
        Path(path).expanduser().write_text(json.dumps(metrics, indent=2))
    except OSError as err:
        raise MerClipError(f"cannot write --json {_short(path)}: {err.strerror}") from None
