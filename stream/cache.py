"""The bundle cache, ``runtime.cache_dir/bundles/``: what ``merclip-live --model`` exports once and reuses.

Each label set, frame count or model is its own bundle (37 MB for tiny, 1.27 GB for ViT-B-32), so the cache
is bounded: after an export, bundles beyond ``MAX_CACHED_BUNDLES`` are removed, least recently used first
(a bundle's ``.last-used`` marker is touched whenever it is loaded). ``list_cached_bundles`` and
``clear_cached_bundles`` serve ``merclip cache list|clear``.

Exports in progress live in hidden ``.partial-<pid>-<name>`` folders and are renamed into place only once
complete, so a visible folder with a ``manifest.json`` is always a whole bundle; folders left by a process
that died are swept. Removal renames a bundle to a hidden ``.trash-…`` folder first, so a half-deleted
bundle never looks usable. No torch here.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# Most bundles kept in the cache (least recently used removed first). Candidate config key for the lead:
# runtime.cache_max_bundles (int, default 3, >= 1).
MAX_CACHED_BUNDLES = 3
USED_MARKER = ".last-used"
PARTIAL_PREFIX = ".partial-"
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class CachedBundle:
    name: str
    path: Path
    size_bytes: int
    last_used: float  # seconds since the epoch
    complete: bool  # has a manifest.json (an incomplete folder is never loaded; prune/clear remove it)


def bundles_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir).expanduser() / "bundles"


def _size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _last_used(folder: Path) -> float:
    for candidate in (folder / USED_MARKER, folder / "manifest.json", folder):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def touch_bundle(folder: str | Path) -> None:
    """Mark a cached bundle as used now (its place in the least-recently-used order)."""
    marker = Path(folder) / USED_MARKER
    try:
        marker.touch()
        os.utime(marker)
    except OSError:
        pass  # a read-only cache still works; it is only never pruned by use


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user's counts: it cannot be signalled, but it runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discard_damaged(folder: str | Path) -> str:
    """Check a bundle in merclip's own cache (manifest and every file's checksum) and remove it when it fails,
    so that the caller exports it again; returns a ``notice:`` line saying so, or "" (sound, or not there).

    The user never made these bundles, so "corrupt: re-export" would be advice they cannot act on; a bundle
    passed with ``--bundle`` is the user's and keeps that error (it is not checked here)."""
    from merclip.export.manifest import read_manifest

    from merclip.errors import MerClipError

    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        return ""
    try:
        read_manifest(folder, verify=True)
    except MerClipError as err:
        reason = getattr(err, "problem", "") or str(err)
        try:
            remove_bundle(folder)
        except OSError:
            pass
        if folder.exists():  # could not be removed (a read-only cache): say what the user can do
            raise MerClipError(
                f"the cached bundle {folder} is damaged ({reason}) and could not be removed: run: merclip cache clear"
            ) from None
        return f"notice: the cached bundle {folder.name} is damaged ({reason}): discarded, exporting it again"
    return ""


def partial_dir(folder: str | Path) -> Path:
    """A new hidden work folder next to ``folder`` for an export by this process."""
    folder = Path(folder)
    work = folder.parent / f"{PARTIAL_PREFIX}{os.getpid()}-{folder.name}-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    return work


def _owner_pid(name: str) -> int | None:
    for prefix in (PARTIAL_PREFIX, TRASH_PREFIX):
        if name.startswith(prefix):
            head = name[len(prefix) :].split("-", 1)[0]
            return int(head) if head.isdigit() else None
    return None


def sweep_leftovers(cache_dir: str | Path) -> int:
    """Remove work and trash folders whose process is gone (an export or removal that was killed)."""
    removed = 0
    root = bundles_dir(cache_dir)
    if not root.is_dir():
        return 0
    for entry in root.iterdir():
        if not entry.name.startswith((PARTIAL_PREFIX, TRASH_PREFIX)):
            continue
        pid = _owner_pid(entry.name)
        if pid is not None and pid_alive(pid):
            continue  # an export (or removal) still running, perhaps this one
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
    return removed


def remove_bundle(folder: str | Path) -> None:
    """Remove one cached bundle: hidden first (rename), then deleted."""
    folder = Path(folder)
    trash = folder.parent / f"{TRASH_PREFIX}{os.getpid()}-{folder.name}-{uuid.uuid4().hex[:6]}"
    try:
        folder.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def list_cached_bundles(cache_dir: str | Path) -> list[CachedBundle]:
    """The cached bundles, most recently used first (work and trash folders are not listed)."""
    root = bundles_dir(cache_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        found.append(
            CachedBundle(entry.name, entry, _size(entry), _last_used(entry), (entry / "manifest.json").is_file())
        )
    return sorted(found, key=lambda b: (-b.last_used, b.name))


def prune_cached_bundles(
    cache_dir: str | Path, keep: int = MAX_CACHED_BUNDLES, protect: tuple[str | Path, ...] = ()
) -> list[CachedBundle]:
    """Keep the ``keep`` most recently used complete bundles (``protect`` always kept); remove the rest and
    any incomplete folder. Returns what was removed."""
    sweep_leftovers(cache_dir)
    protected = {Path(p).resolve() for p in protect}
    bundles = list_cached_bundles(cache_dir)  # most recently used first
    kept = sum(1 for b in bundles if b.path.resolve() in protected)
    removed = []
    for bundle in bundles:
        if bundle.path.resolve() in protected:
            continue
        if bundle.complete and kept < keep:
            kept += 1
            continue
        remove_bundle(bundle.path)
        removed.append(bundle)
    return removed


def clear_cached_bundles(cache_dir: str | Path) -> tuple[int, int]:
    """Remove every cached bundle (and leftovers of killed exports); returns (bundles removed, bytes freed).
    An export running in another process keeps its work folder."""
    removed, freed = 0, 0
    for bundle in list_cached_bundles(cache_dir):
        remove_bundle(bundle.path)
        removed += 1
        freed += bundle.size_bytes
    sweep_leftovers(cache_dir)
    return removed, freed


def human_size(size: float) -> str:
    """Bytes for people (decimal units, as disks and downloads are labelled)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def format_listing(cache_dir: str | Path) -> str:
    """``merclip cache list``: one line per bundle, most recently used first, and a total."""
    bundles = list_cached_bundles(cache_dir)
    root = bundles_dir(cache_dir)
    if not bundles:
        return f"no cached bundles in {root}"
    lines = []
    for b in bundles:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(b.last_used))
        state = "" if b.complete else "  (incomplete)"
        lines.append(f"{b.name:<48} {human_size(b.size_bytes):>9}  last used {when}{state}")
    total = sum(b.size_bytes for b in bundles)
    lines.append(f"{len(bundles)} bundles, {human_size(total)} in {root} (at most {MAX_CACHED_BUNDLES} are kept)")
    return "\n".join(lines)


def cmd_cache(args) -> int:
    """`merclip cache list|clear` (wired in merclip/cli.py)."""
    from merclip.config import load_config

    cache_dir = load_config(getattr(args, "config", None)).runtime.cache_dir
    if args.action == "clear":
        count, freed = clear_cached_bundles(cache_dir)
        print(f"removed {count} cached bundles ({human_size(freed)}) from {bundles_dir(cache_dir)}")
    else:
        print(format_listing(cache_dir))
    return 0
