"""A synthetic multimodal dataset: the project's proof that learning works end to end on a CPU.

Each clip has one emotion class. Its class shows in each *informative* modality: a class colour in the
frames, a class tone in the audio, class words in the transcript. An uninformative modality shows a
randomly chosen class's pattern (so it carries no information about the label). Sentiment is positive
for happy and surprise, negative otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from merclip.model.face import FaceSetting, crop_sequence
from merclip.model.preprocess import resize_center_crop
from merclip.model.reading import ReadingSetting

from .cache import SAMPLE_RATE, write_clip, write_face, write_index
from .datasets import MOSEI_EMOTIONS, Clip

COLOURS = [(220, 40, 40), (40, 180, 40), (40, 40, 220), (220, 220, 40), (200, 40, 200), (40, 200, 200)]
TONES_HZ = [300, 550, 800, 1100, 1500, 2000]
WORDS = [
    ["sunshine", "wonderful", "smile"],
    ["tears", "lonely", "grief"],
    ["furious", "shouting", "unfair"],
    ["suddenly", "unexpected", "whoa"],
    ["gross", "rotten", "yuck"],
    ["scared", "danger", "trembling"],
]
FILLER = ["the", "a", "today", "we", "then", "really", "it", "was", "and", "so"]
POSITIVE = {0, 3}


def make_clip(rng: np.random.Generator, label: int, informative: str, frames: int, size: int, seconds: float):
    def shown(modality: str) -> int:
        return label if modality in informative else int(rng.integers(len(MOSEI_EMOTIONS)))

    colour = np.array(COLOURS[shown("V")], np.float32)
    images = []
    for _ in range(frames):
        img = colour + rng.normal(0, 25, (size, size, 3))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * TONES_HZ[shown("A")] * t) + rng.normal(0, 0.02, t.shape)
    words = list(rng.choice(FILLER, 5)) + list(rng.choice(WORDS[shown("L")], 2))
    rng.shuffle(words)
    return images, wave.astype(np.float32), " ".join(words)


def generate(
    cache_dir: str | Path,
    n: int,
    informative: str = "LVA",
    frames: int = 2,
    size: int = 224,
    seconds: float = 2.0,
    seed: int = 0,
    valid_fraction: float = 0.25,
    face: FaceSetting = FaceSetting(),
    reading: ReadingSetting | None = None,
) -> int:
    """Write ``n`` clips (a quarter held out as valid, the same count again as test) into a cache. With a face
    setting on, the frames go through the same crop as real clips: they hold no face, so no clip keeps video
    (the setting still travels to the checkpoint, which is what such a run is for)."""
    folder = Path(cache_dir)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    write_face(folder, face)
    rng = np.random.default_rng(seed)
    n_valid = max(1, int(n * valid_fraction))
    entries = []
    for i in range(n + n_valid):
        split = "train" if i < n - n_valid else ("valid" if i < n else "test")
        label = int(rng.integers(len(MOSEI_EMOTIONS)))
        images, wave, text = make_clip(rng, label, informative, frames, size, seconds)
        windows = monitor_windows(images, wave, seconds, reading, face) if reading is not None else None
        if face.on:
            times = [(k + 0.5) * seconds / len(images) for k in range(len(images))]  # spread over the clip
            images = [resize_center_crop(c, size) for c in crop_sequence(images, times, face) or []]
        strength = float(rng.integers(1, 4))
        clip = Clip(
            clip_id=f"syn{i:05d}", split=split, text=text,
            sentiment=strength if label in POSITIVE else -strength,
            emotions={e: float(k == label) for k, e in enumerate(MOSEI_EMOTIONS)}, duration_s=seconds,
        )  # fmt: skip
        entry = write_clip(folder, clip, images, wave, windows, size)
        if windows is not None:
            entry |= {"stream_s": seconds, "window_frames": reading.frames_per_window}
        entries.append(entry)
    write_index(folder, entries)
    return len(entries)


STREAM_FPS = 10.0  # the synthetic camera's frame rate when a clip is cut into the monitor's windows


def monitor_windows(images, wave, seconds: float, reading: ReadingSetting, face: FaceSetting) -> list:
    """The windows the live windower (and face tracker) makes of a clip played as a stream: its pictures
    in turn at ``STREAM_FPS``, its audio in 0.1-s blocks."""
    from merclip.model.face import FaceTracker
    from merclip.stream.records import AudioBlock, Frame
    from merclip.stream.windowing import Windower, cut_windows

    block = int(0.1 * SAMPLE_RATE)
    items = [Frame(j / STREAM_FPS, images[j % len(images)]) for j in range(int(seconds * STREAM_FPS))]
    items += [AudioBlock(k / SAMPLE_RATE, wave[k : k + block]) for k in range(0, len(wave), block)]
    items.sort(key=lambda item: item.t_s)
    windower = Windower(reading.window_s, reading.hop_s, reading.frames_per_window, SAMPLE_RATE,
                        face=FaceTracker(face) if face.on else None)  # fmt: skip
    return list(cut_windows(items, windower))
