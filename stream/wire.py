"""What travels between a `merclip-live --server` client and `merclip serve`: numpy and JSON, no Ray.

A request is one window, as the model needs it and no more: the sampled frames already resized and
centre-cropped to the bundle's image size (uint8, so the server sees the very pixels the local engine
would: ``model.preprocess`` splits the crop from the float normalisation), the 2-s waveform (float32,
only when there is a voice to encode) and the transcript. The body is an ``.npz`` archive (numpy's own
format, loaded with ``allow_pickle=False``: a request can carry arrays, never code) whose members are stored,
never deflated, so no body grows past the size limit on loading. Not compressed: measured on the sample clip
(4 face crops at 224 px + 2 s of audio), a window is 731 KB (2.9 Mbit/s per stream) and zlib level 1 saves
29 % of it for 15 ms of client CPU and 3 ms of server CPU per window; on a gigabit LAN the 209 KB saved take
1.7 ms to send, so compression would cost more than it saves (it pays only below ~100 Mbit/s per stream
group, e.g. cameras behind a slow uplink).

A response is JSON: the probabilities in label order, the modalities used, the agreement, the server's
model time and the size of the batch the window was run in.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from merclip.errors import MerClipError

# A window at 224 px with 32 frames and audio is ~5 MB; anything much bigger is not a window.
MAX_REQUEST_BYTES = 16 << 20
# The archive members encode_request writes (np.savez: one ``NAME.npy`` per array, stored, not deflated).
REQUEST_MEMBERS = frozenset({"transcript.npy", "images.npy", "audio.npy"})


@dataclass(frozen=True)
class WindowRequest:
    images: np.ndarray  # (T, S, S, 3) uint8, T = 0 when there is no face / no video
    audio: np.ndarray | None  # (samples,) float32, None = no voice
    transcript: str


@dataclass(frozen=True)
class WindowReply:
    emotions: dict[str, float]
    sentiment: dict[str, float]
    modalities: str
    agreement: float
    model_ms: float
    batch_size: int


def encode_request(images: Sequence[np.ndarray] | np.ndarray, audio: np.ndarray | None, transcript: str) -> bytes:
    arrays = {"transcript": np.array(transcript)}
    if len(images):
        arrays["images"] = np.ascontiguousarray(np.stack(images), dtype=np.uint8)
    if audio is not None:
        arrays["audio"] = np.ascontiguousarray(audio, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def check_request_size(size: int) -> None:
    if size > MAX_REQUEST_BYTES:
        raise MerClipError(f"request of {size} bytes is larger than a window can be")


def _check_members(body: bytes) -> None:
    """Refuse an archive that would grow on loading: np.load inflates a deflated member without limit, so
    a 1-MB body of zeros could take GBs of a replica's memory before any shape is checked."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = archive.infolist()
    except Exception as err:  # BadZipFile, or a central directory that does not parse
        raise MerClipError(f"not a window request: {err}") from None
    for m in members:
        if m.filename not in REQUEST_MEMBERS:
            raise MerClipError(f"not a window request: unexpected member {m.filename!r}")
        if m.compress_type != zipfile.ZIP_STORED:
            raise MerClipError(
                f"not a window request: member {m.filename!r} is compressed (send it stored, as np.savez does)"
            )
    check_request_size(sum(m.file_size for m in members))


def decode_request(body: bytes, image_size: int, window_samples: int) -> WindowRequest:
    """Raise MerClipError (one line, the client's to fix) on a body that is not a window for this bundle."""
    check_request_size(len(body))
    _check_members(body)
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        transcript = str(arrays["transcript"])
    except Exception as err:  # zipfile, numpy and KeyError all mean "not a window"
        raise MerClipError(f"not a window request: {err}") from None
    images = arrays.get("images", np.zeros((0, image_size, image_size, 3), np.uint8))
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3):
        want = f"uint8 (T, {image_size}, {image_size}, 3)"
        raise MerClipError(f"images must be {want}, got {images.dtype} {images.shape}")
    audio = arrays.get("audio")
    if audio is not None and (audio.dtype != np.float32 or audio.shape != (window_samples,)):
        raise MerClipError(f"audio must be float32 ({window_samples},), got {audio.dtype} {audio.shape}")
    return WindowRequest(images, audio, transcript)


def encode_reply(reply: WindowReply, emotion_labels: Sequence[str], sentiment_labels: Sequence[str]) -> bytes:
    body = {
        "emotion": [reply.emotions.get(k) for k in emotion_labels] if reply.emotions else [],
        "sentiment": [reply.sentiment.get(k) for k in sentiment_labels] if reply.sentiment else [],
        "modalities": reply.modalities,
        "agreement": None if math.isnan(reply.agreement) else reply.agreement,
        "model_ms": reply.model_ms,
        "batch_size": reply.batch_size,
    }
    return json.dumps(body).encode()


def decode_reply(body: bytes, emotion_labels: Sequence[str], sentiment_labels: Sequence[str]) -> WindowReply:
    data = json.loads(body)
    emotion, sentiment = data["emotion"], data["sentiment"]
    if emotion and len(emotion) != len(emotion_labels) or sentiment and len(sentiment) != len(sentiment_labels):
        raise ValueError("the reply scores other labels than the service announced")
    agreement = data["agreement"]
    return WindowReply(
        dict(zip(emotion_labels, map(float, emotion), strict=True)) if emotion else {},
        dict(zip(sentiment_labels, map(float, sentiment), strict=True)) if sentiment else {},
        str(data["modalities"]),
        math.nan if agreement is None else float(agreement),
        float(data["model_ms"]),
        int(data["batch_size"]),
    )
