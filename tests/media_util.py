"""Write small real video files (MPEG-4 video + AAC audio) for tests."""

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(path: Path, seconds: float = 1.0, fps: int = 10, size: tuple[int, int] = (64, 48), tone_hz=300.0):
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w") as box:
        video = box.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = box.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.full((height, width, 3), (i * 3) % 255, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                box.mux(packet)
        t = np.arange(int(seconds * 16000)) / 16000
        tone = (0.2 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, start, Fraction(1, 16000)
            for packet in audio.encode(frame):
                box.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                box.mux(packet)
