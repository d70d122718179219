"""Real media files for tests, made the way users' files are made.

``write_video``: a small synthetic clip (MPEG-4 + AAC). The rest: the packaged sample clip's face video and
its speech (or 60 s of continuous reading, ``tests/data/lj-60s.opus``) muxed with PyAV into several
containers, codecs, rates and muxing orders; ``file_order`` measures how far one track runs ahead of the
other in the order a demuxer hands out the packets, so a test can check that its file really is as
adversarial as it claims.
"""

import functools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from merclip.stream.sources import sample_path

DATA = Path(__file__).parent / "data"
LJ_EXCERPT = DATA / "lj-60s.opus"  # 60 s of ../shared/media/lj-reading.flac (LJ Speech, public domain)
SR = 16000


# The file kinds users make: name -> (how ``build`` makes it, which track the demuxer hands out ahead of the
# other, and by at least how much)
FILE_KINDS = {
    "mp4-video-0.5s-ahead": (dict(chunk_s=0.5), "video", 0.4),
    "mp4-video-1s-ahead": (dict(chunk_s=1.0), "video", 0.9),
    # the MP4 demuxer itself reorders packets more than ~1 s apart: written 2 s ahead, handed out 1.26 s ahead
    "mp4-video-2s-ahead": (dict(chunk_s=2.0), "video", 1.2),
    "mp4-audio-ahead": (dict(chunk_s=1.0, audio_first=True), "audio", 0.8),
    "mkv-video-2s-ahead": (dict(chunk_s=2.0, container="matroska"), "video", 1.8),
    "mkv-audio-2s-ahead": (dict(chunk_s=2.0, container="matroska", audio_first=True), "audio", 1.8),
    "webm-vp9-opus-48k": (dict(container="webm", video_codec="libvpx-vp9", audio_codec="libopus", rate=48000), "", 0),
    "mov-pcm-44k-stereo": (dict(container="mov", audio_codec="pcm_s16le", rate=44100, layout="stereo"), "", 0),
    "mkv-variable-frame-rate": (dict(container="matroska", variable_rate=True), "", 0),
    "mkv-audio-starts-1s-late": (dict(container="matroska", audio_offset_s=1.0), "audio", 0.9),
}
_SUFFIX = {"matroska": ".mkv", "webm": ".webm", "mov": ".mov", None: ".mp4"}


_AUDIO_SUFFIX = {"matroska": ".mka", "webm": ".webm", "mov": ".mov", None: ".m4a"}


def file_name(kind: str, audio_only: bool = False) -> str:
    container = FILE_KINDS[kind][0].get("container")
    return kind + ("-audio" + _AUDIO_SUFFIX[container] if audio_only else _SUFFIX[container])


@functools.cache
def face_frames(width: int = 192, height: int = 256) -> tuple[np.ndarray, ...]:
    """The sample clip's video (a person facing the camera), 25 fps, downscaled: cheap to encode."""
    with av.open(str(sample_path())) as box:
        return tuple(f.reformat(width, height, format="rgb24").to_ndarray() for f in box.decode(video=0))


@functools.cache
def speech(path: str | None = None) -> np.ndarray:
    """16-kHz mono float speech: the sample clip's own track (JFK, 11 s), or another file's first track."""
    with av.open(path or str(sample_path())) as box:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
        chunks = [c.to_ndarray().reshape(-1) for f in box.decode(audio=0) for c in resampler.resample(f)]
    return np.concatenate(chunks).astype(np.float32)


def build(
    path: Path,
    wave: np.ndarray,
    seconds: float | None = None,
    container: str | None = None,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    rate: int = SR,
    layout: str = "mono",
    chunk_s: float | None = None,
    audio_first: bool = False,
    audio_offset_s: float = 0.0,
    variable_rate: bool = False,
    frames: tuple[np.ndarray, ...] | None = None,
) -> Path:
    """Mux the face video (looped to ``seconds``) with ``wave`` (16 kHz mono, resampled to ``rate`` and
    ``layout``). ``chunk_s``: the muxer groups each track's packets in chunks of this duration (FFmpeg's
    ``chunk_duration``): one track is then stored that far ahead of the other. ``audio_first`` adds the audio
    track before the video. ``audio_offset_s``: the audio starts that late. ``variable_rate``: frames 30 ms
    and 90 ms apart by turns instead of 40 ms (a phone's variable frame rate)."""
    frames = frames or face_frames()
    seconds = seconds or len(wave) / SR
    options = {"chunk_duration": str(int(chunk_s * 1e6))} if chunk_s else {}
    box = av.open(str(path), "w", format=container, options=options)
    h, w = frames[0].shape[:2]

    def add_video():
        stream = box.add_stream(video_codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        if video_codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        return stream

    def add_audio():
        stream = box.add_stream(audio_codec, rate=rate, layout=layout)
        stream.time_base = Fraction(1, rate)
        return stream

    if audio_first:
        astream, vstream = add_audio(), add_video()
    else:
        vstream, astream = add_video(), add_audio()
    if variable_rate:
        times = [0.03 * i + 0.06 * (i // 3) for i in range(int(seconds / 0.05))]
    else:
        times = [i / 25 for i in range(int(seconds * 25))]
    packets = []
    for i, t in enumerate(times):
        frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
        frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
        packets += vstream.encode(frame)
    packets += vstream.encode(None)
    resampler = av.AudioResampler(format=astream.codec_context.format.name, layout=layout, rate=rate)
    source = av.AudioFrame.from_ndarray(wave[None, : int(seconds * SR)].astype(np.float32), format="flt",
                                        layout="mono")  # fmt: skip
    source.sample_rate, source.pts, source.time_base = SR, int(round(audio_offset_s * SR)), Fraction(1, SR)
    size = astream.codec_context.frame_size or (960 if "opus" in audio_codec else 1024)
    for chunk in resampler.resample(source) + resampler.resample(None):
        data = chunk.to_ndarray()
        # packed formats (s16) interleave the channels in one row: step through samples, not values
        width = 1 if chunk.format.is_planar else len(chunk.layout.channels)
        for lo in range(0, chunk.samples, size):
            part = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[..., lo * width : (lo + size) * width]),
                                              format=chunk.format.name, layout=layout)  # fmt: skip
            part.sample_rate, part.pts, part.time_base = rate, (chunk.pts or 0) + lo, Fraction(1, rate)
            packets += astream.encode(part)
    packets += astream.encode(None)
    for packet in packets:
        box.mux(packet)
    box.close()
    return path


def file_order(path: Path) -> tuple[float, float]:
    """(how far the video runs ahead of the audio, how far the audio runs ahead of the video), in seconds of
    stream time, at the worst point of the order in which the demuxer hands out the file's packets."""
    newest = {"video": None, "audio": None}
    lead = {"video": 0.0, "audio": 0.0}
    with av.open(str(path)) as box:
        for packet in box.demux():
            if packet.pts is None or packet.stream.type not in newest:
                continue
            kind = packet.stream.type
            t = float(packet.pts * packet.time_base)
            newest[kind] = t if newest[kind] is None else max(newest[kind], t)
            other = "audio" if kind == "video" else "video"
            if newest[other] is not None:
                lead[kind] = max(lead[kind], newest[kind] - newest[other])
    return lead["video"], lead["audio"]


def track_audio(path: Path) -> tuple[float, np.ndarray]:
    """The file's audio track decoded on its own, at 16 kHz mono: (time of its first sample, samples)."""
    with av.open(str(path)) as box:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
        start, chunks = None, []
        for frame in box.decode(audio=0):
            start = float(frame.time or 0.0) if start is None else start
            chunks += [c.to_ndarray().reshape(-1) for c in resampler.resample(frame)]
    return start or 0.0, np.concatenate(chunks).astype(np.float32)


def write_video(path: Path, seconds: float = 1.0, fps: int = 10, size: tuple[int, int] = (64, 48), tone_hz=300.0):
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


def audio_track_only(path: Path, out: Path) -> Path:
    """The file's audio track alone, its packets copied unchanged (no re-encoding) into ``out``, a container
    of the same kind (.m4a for an MP4, so the AAC priming trim stays): the audio-only run a muxed file's
    session is compared with."""
    with av.open(str(path)) as box, av.open(str(out), "w") as dest:
        source = box.streams.audio[0]
        stream = dest.add_stream_from_template(source)
        for packet in box.demux(source):
            if packet.dts is None:
                continue
            packet.stream = stream
            dest.mux(packet)
    return out
