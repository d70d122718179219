"""`merclip prepare`: decode every clip once into a compact cache that training reads.

Layout: ``<cache>/index.jsonl`` (one clip per line: labels, text, split, which modalities it has) and
``<cache>/clips/<clip_id>.npz`` holding JPEG frames (T_V sampled evenly, 224 px, centre-cropped) and
16-kHz int16 audio. Missing or corrupt media are counted, listed in ``prepare_report.csv`` and skipped:
a multi-hour job never dies on one bad file. Nothing in the cache needs unpickling.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from merclip.model.preprocess import resize_center_crop
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from merclip.errors import MerClipError

from .datasets import Clip

SAMPLE_RATE = 16000
MAX_AUDIO_S = 20.0  # MOSEI utterances are mostly < 20 s; longer audio is cut (ceil(20/2) = 10 segments)


@dataclass(frozen=True)
class PrepareReport:
    written: int
    skipped: list[tuple[str, str]]
    report_path: Path


def encode_frames(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    blobs = [
        np.frombuffer(
            cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes(),
            np.uint8,
        )
        for f in frames
    ]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return (np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)), offsets


def decode_frames(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    frames = [cv2.cvtColor(cv2.imdecode(data[offsets[i] : offsets[i + 1]], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
              for i in range(len(offsets) - 1)]  # fmt: skip
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def write_clip(folder: Path, clip: Clip, frames: list[np.ndarray] | None, audio: np.ndarray | None) -> dict:
    """Store one clip; return its index entry."""
    entry = clip.to_json() | {"has_video": bool(frames), "has_audio": audio is not None and len(audio) > 0}
    arrays = {}
    if frames:
        arrays["jpeg"], arrays["offsets"] = encode_frames(frames)
    if entry["has_audio"]:
        arrays["audio"] = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if arrays:
        np.savez(folder / "clips" / f"{clip.clip_id}.npz", **arrays)
    return entry


def read_clip(folder: Path, entry: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not (entry["has_video"] or entry["has_audio"]):
        return None, None
    with np.load(folder / "clips" / f"{entry['clip_id']}.npz", allow_pickle=False) as data:
        frames = decode_frames(data["jpeg"], data["offsets"]) if entry["has_video"] else None
        audio = data["audio"].astype(np.float32) / 32767 if entry["has_audio"] else None
    return frames, audio


def decode_media(path: str, frames: int, size: int, start_s: float | None, end_s: float | None):
    """T_V frames sampled evenly over [start, end) and the 16-kHz mono audio of that span."""
    import av

    with av.open(path) as box:
        video = box.streams.video[0] if box.streams.video else None
        audio = box.streams.audio[0] if box.streams.audio else None
        begin = start_s or 0.0
        images, times, chunks = [], [], []
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for packet in box.demux([s for s in (video, audio) if s is not None]):
            for item in packet.decode():
                t = float(item.time or 0.0)
                if end_s is not None and t > end_s:
                    continue
                if t < begin - 0.1:
                    continue
                if isinstance(item, av.VideoFrame):
                    times.append(t)
                    images.append(resize_center_crop(item.to_ndarray(format="rgb24"), size))
                else:
                    chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(item))
    if not images and not chunks:
        raise ValueError("no decodable frames or audio")
    picked = []
    if images:
        lo, hi = times[0], times[-1] + 1e-6
        targets = lo + (np.arange(frames) + 0.5) * (hi - lo) / frames
        picked = [images[int(np.abs(np.asarray(times) - t).argmin())] for t in targets]
    wave = np.concatenate(chunks).astype(np.float32)[: int(MAX_AUDIO_S * SAMPLE_RATE)] if chunks else None
    return picked, wave


def prepare(
    clips: Iterable[Clip],
    cache_dir: str | Path,
    frames: int = 12,
    image_size: int = 224,
    decode: Callable = decode_media,
) -> PrepareReport:
    folder = Path(cache_dir)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    clips = list(clips)
    skipped: list[tuple[str, str]] = []
    entries = []
    columns = [TextColumn("preparing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("prepare", total=len(clips))
        for clip in clips:
            try:
                if clip.media:
                    if not Path(clip.media).is_file():
                        raise FileNotFoundError("media file missing")
                    picked, wave = decode(clip.media, frames, image_size, clip.start_s, clip.end_s)
                else:
                    picked, wave = None, None
                entries.append(write_clip(folder, clip, picked, wave))
            except Exception as err:  # one bad file must not end an hours-long job
                skipped.append((clip.clip_id, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"))
            bar.advance(task)
    write_index(folder, entries)
    report = folder / "prepare_report.csv"
    with open(report, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "reason"])
        writer.writerows(skipped)
    return PrepareReport(len(entries), skipped, report)


def write_index(folder: Path, entries: list[dict]) -> None:
    tmp = folder / "index.jsonl.tmp"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    tmp.replace(folder / "index.jsonl")


def read_index(cache_dir: str | Path) -> list[dict]:
    path = Path(cache_dir) / "index.jsonl"
    if not path.is_file():
        raise MerClipError(f"no prepared cache in {cache_dir}: run `merclip prepare` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
