"""The cache folder (``runtime.cache_dir``): whether a configured one can be used, and its subfolders,
created when first needed. Each failure is one line naming the folder and what is wrong."""

from __future__ import annotations

from pathlib import Path

from merclip.errors import MerClipError, show_value

DEFAULT_CACHE_DIR = "~/.cache/merclip"


def check_cache_dir(value: str) -> None:
    """``runtime.cache_dir`` must be a folder or creatable as one: refuse a file in the way up front."""
    path = Path(value).expanduser()
    probe = path
    try:
        while not probe.exists() and not probe.is_symlink() and probe.parent != probe:
            probe = probe.parent
        if probe.is_symlink() and not probe.exists():
            raise MerClipError(f"config: runtime.cache_dir {value}: {probe} is a broken or looping symbolic link")
        if probe.exists() and not probe.is_dir():
            where = "is a file, not a folder" if probe == path else f"cannot be created: {probe} is a file"
            raise MerClipError(f"config: runtime.cache_dir {value} {where}")
    except OSError as err:  # e.g. a name too long for the file system
        raise MerClipError(f"config: runtime.cache_dir {show_value(value)} is unusable: {err.strerror}") from None


def cache_path(cache_dir: str | Path | None, *parts: str) -> Path:
    """``cache_dir/parts...`` created if needed; one clear line when it cannot be (a file in the way, no
    permission, disk full). ``cache_dir`` is ``runtime.cache_dir`` (None: the packaged default)."""
    root = str(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    path = Path(root).expanduser().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MerClipError(f"runtime.cache_dir: {path} exists and is not a folder") from None
    except OSError as err:
        raise MerClipError(f"runtime.cache_dir: cannot create {path}: {err.strerror}") from None
    return path
