"""How far a lower precision's readings are from fp32's, measured on real windows, and the gate on it.

A precision other than fp32 (bf16 in OpenVINO, int8 graphs in onnxruntime) is chosen automatically only
when a measurement says it reads like fp32: top-emotion agreement >= ``MIN_TOP_EMOTION_AGREEMENT`` and mean
|Δp| <= ``MAX_MEAN_ABS_DP`` over every probability (emotion and sentiment). `merclip export` measures it on
the packaged sample clip's windows (``stream/precision.py`` cuts them) and writes it in the manifest
(``agreement``); a bundle without it is measured at its first load where that precision could be chosen
(``measure.py`` runs both runtimes), and the result cached under ``runtime.cache_dir`` (a bundle folder is
never written at load).

Each window is read with every non-empty set of the modalities it has and the model uses (LVA, LV, ..., A:
the sets the live engine fuses for a reading and its agreement), so a window gives up to 7 readings.
Torch-free: a reading function is anything that maps a window to its probabilities per modality set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# The named thresholds (issue #24's "done when": a trained checkpoint must read like fp32 at these).
MIN_TOP_EMOTION_AGREEMENT = 0.98
MAX_MEAN_ABS_DP = 0.01
CACHE_FOLDER = "agreement"

# A window as the measurement sees it: RGB frames (or None), 16-kHz audio (or None), words (or None).
AgreementWindow = tuple[Sequence[np.ndarray] | None, np.ndarray | None, str | None]
# window -> [(modalities, emotion probabilities, sentiment probabilities)] for each modality set it has
Readings = Callable[[AgreementWindow], list[tuple[str, np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class InputSource:
    """Real windows for a bundle (its frame count, face crop), and what they are, in words."""

    name: str
    windows: Callable  # bundle -> list[AgreementWindow]


@dataclass(frozen=True)
class Agreement:
    precision: str
    backend: str  # what ran it, with its version ("openvino 2026.4.1 bf16")
    reference: str  # what it was compared with ("onnxruntime fp32")
    inputs: str  # which windows, in words
    readings: int
    top_emotion_agreement: float
    top_sentiment_agreement: float
    mean_abs_dp: float
    max_abs_dp: float
    measured_on: str  # the CPU it was measured on

    def to_json(self) -> dict:
        return asdict(self) | {"min_top_emotion_agreement": MIN_TOP_EMOTION_AGREEMENT,
                               "max_mean_abs_dp": MAX_MEAN_ABS_DP, "passed": gate(asdict(self))[0]}  # fmt: skip

    def line(self) -> str:
        ok, why = gate(asdict(self))
        verdict = "passes" if ok else f"FAILS ({why})"
        return (f"agreement {self.precision} ({self.backend}) vs {self.reference}, {self.readings} readings of "
                f"{self.inputs}: top emotion {self.top_emotion_agreement:.1%}, top sentiment "
                f"{self.top_sentiment_agreement:.1%}, mean |dp| {self.mean_abs_dp:.4f}, max |dp| "
                f"{self.max_abs_dp:.4f}: {verdict} the gate (>= {MIN_TOP_EMOTION_AGREEMENT:.0%}, "
                f"<= {MAX_MEAN_ABS_DP})")  # fmt: skip


def gate(record: dict | None) -> tuple[bool, str]:
    """Whether a recorded agreement lets its precision be chosen automatically; if not, why, in words."""
    if not record:
        return False, "its agreement with fp32 was not measured for this bundle"
    try:
        top, mean = float(record["top_emotion_agreement"]), float(record["mean_abs_dp"])
    except (KeyError, TypeError, ValueError):
        return False, "its recorded agreement with fp32 is unreadable"
    if not (math.isfinite(top) and math.isfinite(mean)):
        return False, "its recorded agreement with fp32 is not a number"
    if top < MIN_TOP_EMOTION_AGREEMENT:
        return False, f"top-emotion agreement with fp32 {top:.4f} < {MIN_TOP_EMOTION_AGREEMENT}"
    if mean > MAX_MEAN_ABS_DP:
        return False, f"mean |dp| against fp32 {mean:.4f} > {MAX_MEAN_ABS_DP}"
    return True, ""


def modality_sets(present: str, used: str = "LVA") -> list[str]:
    """Every non-empty set of the modalities present that the model uses (a text-only model reads a window
    with frames and voice as its words alone: counting LV, LA... too would count one reading four times),
    largest first, in L, V, A order."""
    have = "".join(m for m in "LVA" if m in present and m in used)
    return ["".join(c) for n in range(len(have), 0, -1) for c in combinations(have, n)]


def model_modalities(bundle) -> str:
    """The modalities the bundle's model was trained with (all three for a bundle that does not say)."""
    return str((bundle.manifest.get("model_config") or {}).get("modalities") or "LVA").upper()


def bundle_readings(bundle, use_audio: bool = True) -> Readings:
    """A bundle's readings of a window: each modality encoded once, then fused for every set of them."""

    used = model_modalities(bundle)

    def read(window: AgreementWindow) -> list[tuple[str, np.ndarray, np.ndarray]]:
        frames, audio, text = window
        encoded = {}
        if text:
            encoded["L"] = bundle.encode_text([text])
        if frames is not None and len(frames):
            encoded["V"] = bundle.encode_frames(bundle.preprocess_frames(frames))[None]
        if audio is not None and use_audio:
            encoded["A"] = bundle.encode_audio(audio)
        out = []
        for mods in modality_sets("".join(encoded), used):
            pred = bundle.fuse(encoded.get("V") if "V" in mods else None, encoded.get("A") if "A" in mods else None,
                               encoded.get("L") if "L" in mods else None)  # fmt: skip
            out.append((mods, pred.emotion[0], pred.sentiment[0]))
        return out

    return read


def compare(reference: Readings, other: Readings, windows: Iterable[AgreementWindow]) -> dict:
    """Top-emotion/sentiment agreement and |Δp| of ``other`` against ``reference`` over every reading."""
    diffs, same_emotion, same_sentiment, seen = [], [], [], set()
    for window in windows:
        want, got = reference(window), other(window)
        if [m for m, _, _ in want] != [m for m, _, _ in got]:
            raise ValueError("the two readers read different modality sets")
        for (_, e_ref, s_ref), (_, e, s) in zip(want, got, strict=True):
            key = (e_ref.tobytes(), s_ref.tobytes())
            if key in seen:  # the same input twice (two cuts with the same words): one reading, counted once
                continue
            seen.add(key)
            diffs.append(np.abs(np.concatenate([e - e_ref, s - s_ref])))
            same_emotion.append(int(np.argmax(e)) == int(np.argmax(e_ref)))
            same_sentiment.append(int(np.argmax(s)) == int(np.argmax(s_ref)))
    if not diffs:
        raise ValueError("no readings to compare")
    d = np.concatenate(diffs)
    return {"readings": len(same_emotion), "top_emotion_agreement": float(np.mean(same_emotion)),
            "top_sentiment_agreement": float(np.mean(same_sentiment)), "mean_abs_dp": float(d.mean()),
            "max_abs_dp": float(d.max())}  # fmt: skip


# ---- records: in the manifest (written by export) and in the cache (measured at first load) --------------
def bundle_key(manifest: dict) -> str:
    """The identity of a bundle's graphs (their checksums): a cached record belongs to these graphs only."""
    digests = sorted(e["sha256"] for e in manifest["parts"].values())
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()[:24]


def cache_file(manifest: dict, cache_dir: str | Path | None) -> Path:
    return Path(cache_dir or "~/.cache/merclip").expanduser() / CACHE_FOLDER / f"{bundle_key(manifest)}.json"


def read_records(manifest: dict, cache_dir: str | Path | None) -> dict:
    """precision -> agreement record: the manifest's, and for precisions it lacks, a first-load measurement."""
    records = dict(manifest.get("agreement") or {})
    path = cache_file(manifest, cache_dir)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return records
    except (OSError, ValueError) as err:  # a damaged cache entry is measured again, not trusted
        log.info("agreement cache %s unreadable (%s): ignored", path, err)
        return records
    if isinstance(cached, dict):
        for precision, record in cached.items():
            if isinstance(record, dict):
                records.setdefault(precision, record)
    return records


def write_cached(manifest: dict, cache_dir: str | Path | None, records: dict) -> Path:
    """Merge ``records`` into the bundle's cache entry (atomically: two first loads may race)."""
    path = cache_file(manifest, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    _write_json(path, (old if isinstance(old, dict) else {}) | records)
    return path


def write_into_manifest(folder: str | Path, records: dict) -> None:
    """Export only: add ``records`` to the bundle's manifest (not checksummed; the graphs are unchanged)."""
    path = Path(folder) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["agreement"] = dict(manifest.get("agreement") or {}) | records
    _write_json(path, manifest)


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
