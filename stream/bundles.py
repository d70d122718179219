"""The bundle a live session runs: ``--bundle DIR``, or the configured model exported once into the bundle
cache and reused. Walked one way: resolve -> cache (``cache.py``: damaged, pruned, touched) -> weights
reachable (``weights.py``) -> export in a child process -> install (one rename) -> load at this CPU's
precision (``precision.py``). Used by ``merclip-live``, ``merclip rescore`` and ``merclip serve``; no torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from merclip.config import Config, override
from merclip.errors import MerClipError

from .cache import discard_damaged, partial_dir, prune_cached_bundles, remove_bundle, sweep_leftovers, touch_bundle

log = logging.getLogger(__name__)


def bundle_cache_dir(cfg: Config) -> Path:
    """A cache folder keyed by everything that shapes the exported bundle."""
    from merclip import __version__

    key = json.dumps([__version__, asdict(cfg.model), asdict(cfg.labels), asdict(cfg.export),
                      cfg.capture.frames_per_window, cfg.capture.window_s, cfg.capture.face,
                      cfg.capture.face_margin, cfg.capture.hop_s, cfg.capture.context], sort_keys=True)  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    weights = Path(cfg.model.weights).stem if os.sep in cfg.model.weights else cfg.model.weights
    return Path(cfg.runtime.cache_dir).expanduser() / "bundles" / f"{cfg.model.arch}-{weights}-{digest}"


def resolve_bundle(cfg: Config, console: Console):
    if cfg.runtime.precision == "int8" and cfg.export.precision == "fp32":
        cfg = override(cfg, export={"precision": "int8"})  # int8 runs int8 graphs: the cached bundle is exported so
    rt = cfg.runtime
    load = {"providers": rt.providers, "threads": rt.threads, "cache_dir": rt.cache_dir, "precision": rt.precision}
    if cfg.runtime.bundle:
        return _load_bundle(cfg.runtime.bundle, load, console)
    folder = bundle_cache_dir(cfg)
    if notice := discard_damaged(folder):  # the monitor's own copy: rebuilt, not "re-export" for the user
        console.print(notice)
    if not (folder / "manifest.json").is_file():
        if importlib.util.find_spec("torch") is None:
            raise MerClipError(
                "no bundle given and torch is not installed to export one: pass --bundle DIR "
                "(from `merclip export --onnx`) or pip install 'merclip-live[train]'"
            )
        check_weights_reachable(cfg)  # offline without the weights: said now, not after the export's retries
        console.print(f"exporting {cfg.model.arch} ({cfg.model.weights} weights) to {folder} — once, then cached")
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MerClipError(f"cannot create the bundle cache {folder.parent}: {err.strerror or err}") from None
        export_in_subprocess(cfg, folder)
        # the cache is bounded: least recently used bundles beyond cache.MAX_CACHED_BUNDLES go
        for gone in prune_cached_bundles(cfg.runtime.cache_dir, protect=(folder,)):
            log.info("bundle cache: removed %s (least recently used)", gone.name)
    touch_bundle(folder)
    return _load_bundle(folder, load, console, verify=False)  # checked by discard_damaged, or just exported


def _load_bundle(folder: str | Path, load: dict, console: Console, verify: bool = True):
    """Load with the runtime chosen for this CPU; a bundle never measured at bf16 is measured first where bf16
    could be chosen (once, cached: stream/precision.py). Its notices (fallbacks) are printed once."""
    from merclip.export.runtime import Bundle

    from .precision import check_at_first_load

    def say(text: str) -> None:
        console.print(text, style="yellow" if text.startswith("notice:") else "dim", markup=False, highlight=False)

    check_at_first_load(folder, load["providers"], load["precision"], load["threads"], load["cache_dir"], say)
    bundle = Bundle.load(folder, verify=verify, **load)
    for notice in bundle.notices:
        say(notice)
    return bundle


def weights_error(cfg: Config) -> MerClipError:
    return MerClipError(
        f"{cfg.model.arch} needs its pretrained weights, which could not be downloaded "
        "(offline?): pass --bundle DIR, local weights with --weights FILE, or run the "
        "offline demo model with --model tiny"
    )


def check_weights_reachable(cfg: Config) -> None:
    """Raise at once when the model's pretrained weights are neither cached nor downloadable from here."""
    from .weights import cached_weights, check_weights_file, needs_download, online

    check_weights_file(cfg.model.weights)
    if not needs_download(cfg.model.arch, cfg.model.weights):
        return
    folder, _, repo = cached_weights(cfg.model.arch, cfg.model.weights)
    if folder is not None or not repo:  # cached, or a tag this check does not know: the export decides
        return
    reachable, why = online()
    if not reachable:
        log.info("weights %s not cached and %s", repo, why)
        raise weights_error(cfg)


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that has the child killed when this process dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: nothing is imported after the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _stop_child(proc) -> None:
    """End the export child and everything it started (its own process group)."""
    import subprocess

    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def export_in_subprocess(cfg: Config, folder: Path) -> None:
    """Run `merclip export` in its own process, so the live process never imports torch.

    The export writes into a hidden work folder (``bundles/.partial-<pid>-…``, its config file inside) that
    is renamed to ``folder`` only after the child succeeded, parity check included: a visible bundle folder is
    always complete. The child runs in its own process group and dies with this process: Ctrl-C or SIGTERM
    during the export stop it at once (then the work folder is removed and "interrupted" is reported), and
    on Linux a SIGKILL of this process kills it too (its work folder is swept by the next export)."""
    import subprocess

    from merclip.config import to_toml

    sweep_leftovers(cfg.runtime.cache_dir)
    work = partial_dir(folder)
    proc, rc, stderr = None, 1, ""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        config_file = work / "config.toml"
        config_file.write_text(to_toml(cfg), encoding="utf-8")
        built = work / "bundle"
        cmd = [sys.executable, "-m", "merclip.cli", "export", "--onnx", "--config", str(config_file),
               "--out", str(built)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=_die_with_parent())  # fmt: skip
        _, stderr = proc.communicate()
        rc = proc.returncode
        if rc == 0 and not (built / "manifest.json").is_file():
            rc, stderr = 1, "error: the export wrote no bundle"
        if rc == 0:
            _install(built, folder)
    finally:
        if proc is not None:
            _stop_child(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(work, ignore_errors=True)
    if rc != 0:
        lines = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
        message = lines[-1][len("error: ") :] if lines else stderr.strip()[-300:]
        if "could not download" in message or "could not get pretrained weights" in message:
            raise weights_error(cfg)
        raise MerClipError(f"export failed: {message}")
    for line in stderr.splitlines():
        if line.startswith(("parity", "bundle")):
            log.info(line)


def _install(built: Path, folder: Path) -> None:
    """Move a finished bundle into place (one rename); another process may have finished the same first."""
    try:
        os.rename(built, folder)
    except OSError:
        if (folder / "manifest.json").is_file():
            return  # the same bundle, exported meanwhile by another session: use that one
        remove_bundle(folder)  # an incomplete folder (from an older version): never loaded, replaced
        os.rename(built, folder)


def apply_label_config(bundle, cfg: Config) -> None:
    """Labels the user set in config.toml or by a flag replace the bundle's (embedded through its label
    graph); labels left unset leave a bundle trained on other labels (e.g. MELD's seven) as it is."""
    if bundle.manifest["labels"]["fixed"]:
        return
    asked = cfg.asked("labels")
    bundle.set_labels(
        emotion=list(cfg.labels.emotion) if "emotion" in asked else None,
        sentiment=list(cfg.labels.sentiment) if "sentiment" in asked else None,
    )
