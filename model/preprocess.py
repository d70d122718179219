"""Frame preprocessing as pure numpy/OpenCV functions (no torch), shared by training caches and the
live runtime so both feed the image encoder the same pixels: CLIP's resize-shortest-side, centre crop,
then per-channel normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_center_crop(frame_rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size, size, 3) uint8: shortest side to ``size`` (bicubic), centre crop."""
    h, w = frame_rgb.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(frame_rgb, (new_w, new_h), interpolation=interp)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(resized[top : top + size, left : left + size])


def normalize_frames(
    frames: np.ndarray, mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD
) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32 normalised."""
    x = frames.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
