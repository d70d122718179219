"""`merclip prepare`: decode every clip once into a compact cache that training reads.

Layout: ``<cache>/index.jsonl`` (one clip per line: labels, text, split, which modalities it has),
``<cache>/face.json`` (the face crop the frames were made with, ``model/face.py``; absent = whole frames)
and ``<cache>/clips/<clip_id>.npz`` holding JPEG frames (T_V sampled evenly, 224 px: the followed face's
square crop, or the centre-cropped whole frame) and 16-kHz int16 audio. A clip in which no face is found
keeps its audio and text and has no video, as a live window without a face has no vision. Missing or
corrupt media are counted, listed in ``prepare_report.csv`` and skipped: a multi-hour job never dies on
one bad file. Nothing in the cache needs unpickling.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from merclip.model.face import FaceSetting, crop_sequence
from merclip.model.preprocess import resize_center_crop
from merclip.model.reading import ReadingSetting
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


def _int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16)


def write_clip(
    folder: Path, clip: Clip, frames: list[np.ndarray] | None, audio: np.ndarray | None, windows=None, size: int = 224
) -> dict:
    """Store one clip (and, given ``windows``, the monitor's windows of it: ``windowed``); return its entry."""
    entry = clip.to_json() | {"has_video": bool(frames), "has_audio": audio is not None and len(audio) > 0}
    arrays = {}
    if frames:
        arrays["jpeg"], arrays["offsets"] = encode_frames(frames)
    if entry["has_audio"]:
        arrays["audio"] = _int16(audio)
    if windows is not None:
        entry["windows"], more = windowed(windows, size)
        arrays |= more
    if arrays:
        np.savez(folder / "clips" / f"{clip.clip_id}.npz", **arrays)
    return entry


def windowed(windows, size: int) -> tuple[list[dict], dict]:
    """A clip's windows (``stream.records.Window``, as the live windower cut them) in cache form: per window
    its bounds, face state and frame count; the frames resized as training frames are (JPEG), and the audio
    as the windows heard it, on the stream clock from 0 (``window_audio``)."""
    meta, pictures = [], []
    for w in windows:
        pictures += [resize_center_crop(f, size) for f in w.frames]
        meta.append({"t_start_s": w.t_start_s, "t_end_s": w.t_end_s, "frames": len(w.frames), "face": w.face,
                     "frame_times_s": list(w.frame_times_s), "has_audio": bool(w.has_audio)})  # fmt: skip
    arrays = {"window_audio": _int16(stream_audio(windows))}
    if pictures:
        arrays["window_jpeg"], arrays["window_offsets"] = encode_frames(pictures)
    return meta, arrays


def stream_audio(windows) -> np.ndarray:
    """The audio the windows heard, joined on the stream clock from 0 (overlapping windows agree)."""
    audio = np.zeros(int(round(max((w.t_end_s for w in windows), default=0.0) * SAMPLE_RATE)), np.float32)
    for w in windows:
        at = int(round(w.t_start_s * SAMPLE_RATE))
        audio[at : at + len(w.audio)] = w.audio[: len(audio) - at]
    return audio


def read_window(folder: Path, entry: dict, window_samples: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One window of a prepared clip (an entry of ``train.windows.window_entries``): its frames (None: no face
    or no video) and its audio (None: nothing heard)."""
    k, meta = entry["window"], entry["windows"]
    first = sum(w["frames"] for w in meta[:k])
    with np.load(folder / "clips" / f"{entry['clip_id']}.npz", allow_pickle=False) as data:
        frames = None
        if meta[k]["frames"]:
            offsets = data["window_offsets"][first : first + meta[k]["frames"] + 1]
            frames = decode_frames(data["window_jpeg"], offsets)
        audio = None
        if meta[k]["has_audio"]:
            at = int(round(meta[k]["t_start_s"] * SAMPLE_RATE))
            audio = np.zeros(window_samples, np.float32)
            heard = data["window_audio"][at : at + window_samples].astype(np.float32) / 32767
            audio[: len(heard)] = heard
    return frames, audio


def read_clip(folder: Path, entry: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not (entry["has_video"] or entry["has_audio"]):
        return None, None
    with np.load(folder / "clips" / f"{entry['clip_id']}.npz", allow_pickle=False) as data:
        frames = decode_frames(data["jpeg"], data["offsets"]) if entry["has_video"] else None
        audio = data["audio"].astype(np.float32) / 32767 if entry["has_audio"] else None
    return frames, audio


def _pick(times: list[float], frames: int) -> list[int]:
    """Indices of ``frames`` frames sampled evenly over the decoded span."""
    lo, hi = times[0], times[-1] + 1e-6
    targets = lo + (np.arange(frames) + 0.5) * (hi - lo) / frames
    return [int(np.abs(np.asarray(times) - t).argmin()) for t in targets]


def decode_media(
    path: str,
    frames: int,
    size: int,
    start_s: float | None,
    end_s: float | None,
    face: FaceSetting = FaceSetting(),
):
    """T_V frames sampled evenly over [start, end) and the 16-kHz mono audio of that span. With a face
    setting on, the picked frames are cropped around the followed face (``crop_sequence``; [] when no face
    is found): they are kept at full resolution for that, so the video is decoded a second time."""
    import av

    def inside(t: float) -> bool:
        return not (end_s is not None and t > end_s) and not t < (start_s or 0.0) - 0.1

    with av.open(path) as box:
        video = box.streams.video[0] if box.streams.video else None
        audio = box.streams.audio[0] if box.streams.audio else None
        images, times, chunks = [], [], []
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for packet in box.demux([s for s in (video, audio) if s is not None]):
            for item in packet.decode():
                t = float(item.time or 0.0)
                if not inside(t):
                    continue
                if isinstance(item, av.VideoFrame):
                    times.append(t)
                    if not face.on:  # whole frames: small copies now, no second pass
                        images.append(resize_center_crop(item.to_ndarray(format="rgb24"), size))
                else:
                    chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(item))
    if not times and not chunks:
        raise ValueError("no decodable frames or audio")
    picked = []
    if times:
        indices = _pick(times, frames)
        if face.on:
            wanted, full, n = set(indices), {}, 0
            with av.open(path) as box:
                for item in box.decode(video=0):
                    if inside(float(item.time or 0.0)):
                        if n in wanted:
                            full[n] = item.to_ndarray(format="rgb24")
                        n += 1
            kept = [i for i in indices if i in full]
            crops = crop_sequence([full[i] for i in kept], [times[i] for i in kept], face) or []
            picked = [resize_center_crop(c, size) for c in crops]
        else:
            picked = [images[i] for i in indices]
    wave = np.concatenate(chunks).astype(np.float32)[: int(MAX_AUDIO_S * SAMPLE_RATE)] if chunks else None
    return picked, wave


def prepare(
    clips: Iterable[Clip],
    cache_dir: str | Path,
    frames: int = 12,
    image_size: int = 224,
    decode: Callable = decode_media,
    face: FaceSetting = FaceSetting(),
    reading: ReadingSetting | None = None,
    recognizer=None,
) -> PrepareReport:
    """``decode`` is called as ``decode(media, frames, image_size, start_s, end_s)``, plus ``face=`` when
    the face crop is on. With ``reading``, each clip with media is also cut into the monitor's windows (the
    live file source, windower and face tracker: ``train.windows.media_windows``) and, with a ``recognizer``
    (``stream.transcriber.WhisperRecognizer``), its words get the times Whisper hears them at."""
    folder = Path(cache_dir)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    write_face(folder, face)
    extra = {"face": face} if face.on else {}
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
                    picked, wave = decode(clip.media, frames, image_size, clip.start_s, clip.end_s, **extra)
                else:
                    picked, wave = None, None
                windows, more = _windows_of(clip, reading, face, recognizer) if clip.media else (None, {})
                entries.append(write_clip(folder, clip, picked, wave, windows, image_size) | more)
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


def _windows_of(clip: Clip, reading: ReadingSetting | None, face: FaceSetting, recognizer) -> tuple[list | None, dict]:
    """(the monitor's windows of a clip's media, what the index entry learns: the media's length, the frame
    count per window and the words' times)."""
    if reading is None:
        return None, {}
    from merclip.model.face import FaceTracker

    from .windows import align_words, media_windows

    tracker = FaceTracker(face) if face.on else None
    windows, stream_s = media_windows(clip.media, reading, tracker, clip.start_s, clip.end_s)
    more = {"stream_s": stream_s, "window_frames": reading.frames_per_window, "words": None}
    heard = [w for w in windows if w.has_audio]
    if recognizer is not None and heard and clip.text.strip():
        more["words"] = align_words(clip.text, recognizer.recognize(stream_audio(windows)).words)
    return windows, more


def write_index(folder: Path, entries: list[dict]) -> None:
    tmp = folder / "index.jsonl.tmp"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    tmp.replace(folder / "index.jsonl")


def write_face(folder: Path, face: FaceSetting) -> None:
    (folder / "face.json").write_text(json.dumps(face.to_json()), encoding="utf-8")


def read_face(cache_dir: str | Path) -> FaceSetting:
    """The face crop a cache was prepared with; a cache from before face cropping holds whole frames."""
    path = Path(cache_dir) / "face.json"
    if not path.is_file():
        return FaceSetting()
    try:
        return FaceSetting.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, MerClipError) as err:
        raise MerClipError(f"{path} is damaged ({err}): run `merclip prepare` again") from None


def read_index(cache_dir: str | Path) -> list[dict]:
    path = Path(cache_dir) / "index.jsonl"
    if not path.is_file():
        raise MerClipError(f"no prepared cache in {cache_dir}: run `merclip prepare` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
