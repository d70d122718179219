"""Are a model's pretrained CLIP weights here, and could they be downloaded? Answered in well under a second
and without open_clip (which imports torch, ~8 s): the Hugging Face cache folder is looked at directly.

``merclip-live`` asks before a first-run export (offline with no cached weights is said at once, not after
the export's download retries) and ``merclip doctor`` shows the answer.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from merclip.model.factory import looks_like_file, weights_file_not_found

# open_clip's registry (open_clip/pretrained.py) for the tags a user is likely to configure: the Hugging Face
# repository each is downloaded from. Others are reported as "unknown here", never as missing.
HF_REPOS = {
    ("ViT-B-32", "openai"): "timm/vit_base_patch32_clip_224.openai",
    ("ViT-B-16", "openai"): "timm/vit_base_patch16_clip_224.openai",
    ("ViT-L-14", "openai"): "timm/vit_large_patch14_clip_224.openai",
    ("ViT-L-14-336", "openai"): "timm/vit_large_patch14_clip_336.openai",
    ("ViT-B-32", "laion2b_s34b_b79k"): "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ("ViT-B-16", "laion2b_s34b_b88k"): "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
}
PROBE_HOST = ("huggingface.co", 443)
PROBE_TIMEOUT_S = 1.5


def needs_download(arch: str, weights: str) -> bool:
    """True for a pretrained tag (downloaded by open_clip); False for 'random', the tiny model or a file."""
    if arch == "tiny" or weights == "random":
        return False
    return not (looks_like_file(weights) or Path(weights).is_file())


def check_weights_file(weights: str) -> None:
    """Raise "weights file not found" for a value meant as a file that is not there: said before an export
    is announced, not by the export after it (as "no pretrained weights" with the tags listed)."""
    if weights != "random" and looks_like_file(weights) and not Path(weights).expanduser().is_file():
        raise weights_file_not_found(weights)


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, with its environment overrides, without importing it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_weights(arch: str, weights: str) -> tuple[Path | None, int, str]:
    """(folder, size in bytes, repo): the cached weights' folder or None; repo "" when the tag is unknown here."""
    repo = HF_REPOS.get((arch, weights), "")
    if not repo:
        return None, 0, ""
    folder = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    blobs = folder / "blobs"
    snapshots = list((folder / "snapshots").glob("*/*")) if (folder / "snapshots").is_dir() else []
    weights_files = [p for p in snapshots if p.name.endswith((".bin", ".safetensors", ".pt"))]
    if not weights_files:
        return None, 0, repo
    size = sum(p.stat().st_size for p in blobs.iterdir() if p.is_file()) if blobs.is_dir() else 0
    return folder, size, repo


def online(timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, why not): HF_HUB_OFFLINE, or a TCP connection to huggingface.co bounded by ``timeout_s``
    (name resolution included: it runs in a thread that is abandoned if it hangs)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    result: list[str] = []

    def probe() -> None:
        try:
            socket.create_connection(PROBE_HOST, timeout=timeout_s).close()
            result.append("")
        except OSError as err:
            result.append(err.strerror or str(err) or type(err).__name__)

    thread = threading.Thread(target=probe, daemon=True, name="net-probe")
    thread.start()
    thread.join(timeout_s + 0.2)
    if not result:
        return False, f"{PROBE_HOST[0]} did not answer in {timeout_s:g} s"
    return (not result[0]), (f"{PROBE_HOST[0]} unreachable: {result[0]}" if result[0] else "")
