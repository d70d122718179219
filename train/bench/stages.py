"""Stage timings: each part of the model per window on the sample clip's windows, for each runtime beside
the default (onnxruntime fp32, torch eager, OpenVINO bf16, int8), how far their readings are from fp32's,
and the model's throughput with windows batched."""

from __future__ import annotations

import statistics
import time

import numpy as np
from merclip.export.cpu import this_cpu
from merclip.stream.engine import BundleEngine
from merclip.stream.sources import FileSource, sample_path
from merclip.stream.windowing import Windower, cut_windows

from .measure import timed


class TimedFace:
    """A face tracker that records how long each frame took (detect + follow + crop)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.seconds: list[float] = []

    def __call__(self, rgb, t_s: float):
        start = time.perf_counter()
        out = self.tracker(rgb, t_s)
        self.seconds.append(time.perf_counter() - start)
        return out


def sample_windows(frames: int, face=None) -> tuple[list, float, list[float]]:
    """The packaged clip cut into windows (faces cropped as ``face``, a ``FaceSetting``, says), the decode +
    windowing time per window, and the face stage's time per frame."""
    from merclip.model.face import FaceTracker

    timed_face = TimedFace(FaceTracker(face)) if face is not None and face.on else None
    start = time.perf_counter()
    windows = list(
        cut_windows(FileSource(sample_path(), realtime=False), Windower(frames_per_window=frames, face=timed_face))
    )
    face_s = timed_face.seconds if timed_face else []
    return windows, (time.perf_counter() - start - sum(face_s)) / len(windows), face_s


def stage_times(bundle, windows, texts, repeats) -> dict[str, list[float]]:
    w = windows[1]
    images = bundle.preprocess_frames(w.frames)
    text = texts[1] or "ask not what your country can do for you"
    vision = bundle.encode_frames(images)[None]
    audio = bundle.encode_audio(w.audio)
    tfeat = bundle.encode_text([text])
    return {
        "preprocess": timed(lambda: bundle.preprocess_frames(w.frames), repeats),
        "vision": timed(lambda: bundle.encode_frames(images), repeats),
        "vision_per_frame": timed(lambda: bundle.encode_frames(images[:1]), repeats),
        "audio": timed(lambda: bundle.encode_audio(w.audio), repeats),
        "text": timed(lambda: bundle.encode_text([text]), repeats),
        "decoder": timed(lambda: bundle.fuse(vision, audio, tfeat), repeats),
    }


def torch_times(model, bundle, windows, texts, repeats) -> dict[str, list[float]]:
    import torch
    from merclip.model import build_prompts
    from merclip.model.merclip import Features

    w = windows[1]
    images = torch.from_numpy(bundle.preprocess_frames(w.frames))
    wave = torch.from_numpy(w.audio)[None]
    ids = torch.from_numpy(bundle.tokenizer([texts[1] or "ask not what your country can do for you"]))
    model.eval()
    with torch.no_grad():
        prompts = build_prompts(model.cfg, bundle.tokenizer)
        q, e, s = model.label_embeddings(prompts)
        vis = model.encode_frames(images)[None]
        aud = model.encode_audio(wave)
        tok, valid, pooled = model.encode_text(ids)
        feats = Features(vis, aud, tok, valid, pooled, torch.ones(1, 3))

        def run(fn):
            def call():
                with torch.no_grad():
                    fn()

            return timed(call, repeats)

        return {
            "vision": run(lambda: model.encode_frames(images)),
            "vision_per_frame": run(lambda: model.encode_frames(images[:1])),
            "audio": run(lambda: model.encode_audio(wave)),
            "text": run(lambda: model.encode_text(ids)),
            "decoder": run(lambda: model.fuse(feats, q, e, s)),
        }


def model_throughput(bundle, windows, texts, streams: int, repeats: int) -> float:
    """Windows per second of the model alone (encoders + fusion; frames already preprocessed, no decode, ASR
    or face stage) when ``streams`` windows are batched into one call per part (1: one window per call)."""
    batch = [windows[i % len(windows)] for i in range(streams)]
    images = np.concatenate([bundle.preprocess_frames(w.frames) for w in batch])
    waves = np.stack([w.audio for w in batch])
    words = [(texts[i % len(texts)] or "hello there") for i in range(streams)]

    def step():
        vis = bundle.encode_frames(images).reshape(streams, -1, bundle.embed_dim)
        aud = bundle.encode_audio(waves)
        txt = bundle.encode_text(words)
        bundle.fuse(vis, aud, txt, batch=streams)

    return streams / statistics.median(timed(step, repeats))


def ort_providers(providers: str) -> str:
    """The onnxruntime providers nearest to ``providers`` (the reference and int8 run on onnxruntime)."""
    return "cpu" if providers == "openvino" else providers


def runtime_record(bundle) -> dict:
    plan = bundle.plan
    return {"line": bundle.runtime_line(), "backend": plan.backend, "precision": plan.precision, "why": plan.why,
            "cpu": this_cpu().describe()}  # fmt: skip


def compare_stages(stages: dict, ratios: dict, other: dict, prefix: str, ratio: str, base: dict | None = None,
             reference: bool = False) -> None:  # fmt: skip
    """Add ``other``'s stage times under ``prefix`` and the speed-up of the one against the other: fp32 over
    ``other`` (``base`` = the fp32 stages), or, ``reference`` = True, ``other`` is fp32 over the default."""
    for key, samples in other.items():
        if key == "preprocess":
            continue
        stages[f"{prefix}_{key}"] = samples
        fp32, faster = (samples, stages[key]) if reference else (base[key], samples)
        ratios[f"{ratio}_{key}"] = statistics.median(fp32) / statistics.median(faster)


def agreement(reference, other, windows, texts) -> dict:
    """How far another bundle's (e.g. int8) readings are from fp32's on the sample windows."""
    diffs, same_top = [], []
    for w, text in zip(windows, texts, strict=False):
        a = BundleEngine(reference).run(w, text)
        b = BundleEngine(other).run(w, text)
        diffs += [abs(a.emotions[k] - b.emotions[k]) for k in a.emotions]
        diffs += [abs(a.sentiment[k] - b.sentiment[k]) for k in a.sentiment]
        same_top.append(max(a.emotions, key=a.emotions.get) == max(b.emotions, key=b.emotions.get))
    return {"max_abs_diff": float(max(diffs)), "mean_abs_diff": float(np.mean(diffs)),
            "top_emotion_agreement": float(np.mean(same_top)), "windows": len(same_top)}  # fmt: skip
