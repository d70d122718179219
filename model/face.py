"""Find the face: detect, follow and crop one person, the same way for training caches and the live monitor.

Torch-free (numpy + OpenCV), like ``preprocess.py``: ``merclip prepare``, the live windower and ``merclip
bench`` all call ``FaceTracker`` / ``crop_sequence`` here, so a model always sees the kind of picture it was
trained on. The setting (on/off, detector, margin) travels in checkpoints and bundle manifests as
``FaceSetting.to_json()``; a bundle or checkpoint without it was made from whole frames ("off").

Detector: OpenCV's frontal-face Haar cascade, shipped inside the opencv-python(-headless) 4.x wheel (no
download). Full resolution costs ~270 ms a frame on a 2-core CPU, so it runs on a grey frame whose shortest
side is ``DETECT_SHORT_SIDE`` px, and once a face is found only on a small region around it
(``ROI_SIDE`` px), falling back to the whole (downscaled) frame when the region loses it (DESIGN §7).

Following one person: while a face is tracked, the candidate that overlaps it most is taken (never a
bigger face elsewhere); a face not found keeps its last box for at most ``FACE_HOLD_S`` of stream time (a
blink, a turned head); after that, or at the start, the largest face wins. The crop box is smoothed
exponentially so it does not jitter; it is square, ``margin`` of the face size on every side, moved inside
the frame. A held box is only a bridge: a window (or training clip) none of whose frames had a detection
reads no vision (``window_crops``), so an empty room is never read as the face that left it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from merclip.errors import MerClipError

MODES = ("haar", "off")
HAAR_FILE = "haarcascade_frontalface_default.xml"
DEFAULT_MARGIN = 0.3
# Whole-frame search: shortest side downscaled to this (a face must be >= 1/6 of it: a webcam user).
DETECT_SHORT_SIDE = 144
MIN_FACE_FRACTION = 1 / 6
# Search around the tracked face: a region twice the face's size, downscaled to this many pixels.
ROI_SIDE = 96
# How long (stream seconds) a tracked face may go undetected and keep its last box. Counted in seconds, not
# frames: a count of calls held a box for 1 s at 4 frames per window and 0.2 s at 12, and a person who left
# had the empty room cropped as their face. 0.5 s bridges one missed frame at 4 frames per 2-s window.
FACE_HOLD_S = 0.5
# Weight of a new detection in the smoothed box (the rest is the previous box).
SMOOTHING = 0.5
# Below this overlap a detection is another face, not the one followed.
SAME_FACE_IOU = 0.2

Box = tuple[float, float, float, float]  # x, y, w, h in pixels
_EPS = 1e-6  # frame times are sums of floats


class FaceCrop(NamedTuple):
    """What the tracker made of one frame."""

    crop: np.ndarray | None  # the square crop (the frame itself with the setting off); None: no face
    box: tuple[float, float, float, float] | None  # the crop's x, y, w, h normalised by the frame's size
    detected: bool  # a face was detected in this very frame (False: a held box, or no face)


@dataclass(frozen=True)
class FaceSetting:
    """What a model was trained on: ``mode`` "haar" (crop the face) or "off" (the whole frame)."""

    mode: str = "off"
    margin: float = DEFAULT_MARGIN

    def __post_init__(self):
        if self.mode not in MODES:
            raise MerClipError(f"face mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 <= self.margin <= 2.0:
            raise MerClipError(f"face margin must be in [0, 2], got {self.margin}")

    @property
    def on(self) -> bool:
        return self.mode != "off"

    def to_json(self) -> dict:
        detector = f"opencv {HAAR_FILE}" if self.on else ""
        return {"mode": self.mode, "margin": self.margin, "detector": detector}

    @classmethod
    def from_json(cls, data: dict | None) -> FaceSetting:
        """None (a checkpoint or bundle from before face cropping) means whole frames."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise MerClipError(f"face setting must be an object, got {data!r}")
        return cls(str(data.get("mode", "off")), float(data.get("margin", DEFAULT_MARGIN)))

    def describe(self) -> str:
        return f"face crop ({self.mode}, margin {self.margin:g})" if self.on else "whole frame"


def face_setting(cfg, auto: str = "haar") -> FaceSetting:
    """The face crop ``cfg`` (a ``merclip.config.Config``) asks for when preparing or exporting; ``auto`` is
    what "auto" means there."""
    mode = auto if cfg.capture.face == "auto" else cfg.capture.face
    return FaceSetting(mode, cfg.capture.face_margin)


def load_cascade() -> cv2.CascadeClassifier:
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise MerClipError(
            f"face detection needs OpenCV 4.x with its Haar cascades (found OpenCV {cv2.__version__}): "
            "pip install 'opencv-python-headless>=4.9,<5'"
        )
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_FILE)
    if cascade.empty():
        raise MerClipError(f"cannot load OpenCV's {HAAR_FILE} from {cv2.data.haarcascades}")
    return cascade


def iou(a: Box, b: Box) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w, h = min(ax1, bx1) - max(a[0], b[0]), min(ay1, by1) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def square_box(face: Box, margin: float, width: int, height: int) -> tuple[int, int, int]:
    """(x0, y0, side) of the square crop around ``face``: ``margin`` x face size each side, inside the frame."""
    cx, cy = face[0] + face[2] / 2, face[1] + face[3] / 2
    side = int(round(max(face[2], face[3]) * (1 + 2 * margin)))
    side = max(1, min(side, width, height))
    x0 = int(round(min(max(cx - side / 2, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2, 0), height - side)))
    return x0, y0, side


class FaceTracker:
    """Follow one face through a sequence of frames (in time order); one tracker per stream or clip."""

    def __init__(self, setting: FaceSetting):
        self.setting = setting
        self._cascade = load_cascade() if setting.on else None
        self.reset()

    def reset(self) -> None:
        self._box: Box | None = None  # smoothed face box in pixels of the last frame
        self._seen_s = float("-inf")  # stream time of the last detection of the followed face

    def _holding(self, t_s: float) -> bool:
        return t_s - self._seen_s <= FACE_HOLD_S + _EPS

    def _detect(self, grey: np.ndarray, scale: float, offset: tuple[int, int], min_side: int) -> list[Box]:
        found = self._cascade.detectMultiScale(grey, 1.1 if offset != (0, 0) else 1.2, 3, minSize=(min_side,) * 2)
        return [(offset[0] + x / scale, offset[1] + y / scale, w / scale, h / scale) for x, y, w, h in found]

    def _whole(self, rgb: np.ndarray) -> list[Box]:
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_SHORT_SIDE / min(h, w))
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        return self._detect(grey, scale, (0, 0), max(12, int(min(grey.shape) * MIN_FACE_FRACTION)))

    def _around(self, rgb: np.ndarray, box: Box) -> list[Box]:
        h, w = rgb.shape[:2]
        cx, cy, r = box[0] + box[2] / 2, box[1] + box[3] / 2, max(box[2], box[3])
        x0, y0 = int(max(0, cx - r)), int(max(0, cy - r))
        x1, y1 = int(min(w, cx + r)), int(min(h, cy + r))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        region = rgb[y0:y1, x0:x1]
        scale = min(1.0, ROI_SIDE / max(region.shape[:2]))
        small = cv2.resize(
            region,
            (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        # the face filled half the region's side when last seen: look for one at least 30 % of it
        return self._detect(grey, scale, (x0, y0), max(12, int(max(grey.shape) * 0.3)))

    def _follow(self, rgb: np.ndarray, t_s: float) -> Box | None:
        """The raw box of the followed face in this frame, or None."""
        if self._box is not None:
            near = self._around(rgb, self._box)
            if near:
                return max(near, key=lambda b: iou(b, self._box))
        found = self._whole(rgb)
        if not found:
            return None
        if self._box is not None:
            same = [b for b in found if iou(b, self._box) >= SAME_FACE_IOU]
            if same:
                return max(same, key=lambda b: iou(b, self._box))
            if self._holding(t_s):
                return None  # the followed face may be back next frame: do not jump to someone else yet
        return max(found, key=lambda b: b[2] * b[3])

    def __call__(self, rgb: np.ndarray, t_s: float) -> FaceCrop:
        """The followed face in the frame at stream time ``t_s`` (frames in time order). With the setting off:
        the frame itself, no box, counted as seen."""
        if not self.setting.on:
            return FaceCrop(rgb, None, True)
        h, w = rgb.shape[:2]
        raw = self._follow(rgb, t_s)
        if raw is None:
            if self._box is None or not self._holding(t_s):
                self.reset()
                return FaceCrop(None, None, False)
        elif self._box is None or iou(raw, self._box) < SAME_FACE_IOU * 0.5:
            self._box = raw  # a new face: start from its own box
        else:
            a = SMOOTHING
            self._box = tuple(a * r + (1 - a) * p for r, p in zip(raw, self._box, strict=True))
        if raw is not None:
            self._seen_s = t_s
        x0, y0, side = square_box(self._box, self.setting.margin, w, h)
        crop = np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side])
        return FaceCrop(crop, (x0 / w, y0 / h, side / w, side / h), raw is not None)


def window_crops(faces: Sequence[FaceCrop]) -> list[np.ndarray] | None:
    """The pictures a window (or a training clip) reads from its chosen frames: None when no frame had a
    detection (a held box alone crops whatever is where the face was); otherwise slots without a crop take
    the nearest slot's. One rule for ``merclip prepare``, the live windower and ``merclip bench``."""
    if not any(face.detected for face in faces):
        return None
    return fill_missing([face.crop for face in faces])


def fill_missing(crops: Sequence[np.ndarray | None]) -> list[np.ndarray] | None:
    """Slots without a face take the nearest slot's crop, so the frame count stays fixed (training batches
    stack clips); None when no slot has a face (vision is absent)."""
    have = [i for i, c in enumerate(crops) if c is not None]
    if not have:
        return None
    return [c if c is not None else crops[min(have, key=lambda j: abs(j - i))] for i, c in enumerate(crops)]


def crop_sequence(
    frames: Sequence[np.ndarray], times_s: Sequence[float], setting: FaceSetting
) -> list[np.ndarray] | None:
    """Frames of one clip at their stream times, in time order -> their face crops (a fresh tracker, the
    windows' rule: ``window_crops``); None when no face is found. With the setting off: the frames unchanged."""
    if not setting.on:
        return list(frames)
    tracker = FaceTracker(setting)
    return window_crops([tracker(frame, t) for frame, t in zip(frames, times_s, strict=True)])
