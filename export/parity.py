"""Torch vs onnxruntime on the same windows: printed after every export and asserted in tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from merclip.model.merclip import MerClip

from .agreement import Readings, modality_sets, model_modalities
from .runtime import Bundle

WORDS = (
    "i",
    "really",
    "love",
    "this",
    "hate",
    "that",
    "so",
    "sad",
    "today",
    "wow",
    "great",
    "terrible",
    "we",
    "can",
    "do",
    "it",
    "never",
    "again",
    "thank",
    "you",
)


@dataclass(frozen=True)
class Parity:
    windows: int
    max_abs_diff: float
    mean_abs_diff: float
    top_emotion_agreement: float
    top_sentiment_agreement: float

    def line(self, precision: str) -> str:
        return (
            f"parity torch vs onnxruntime ({precision}, {self.windows} windows): max |dp| {self.max_abs_diff:.2e}, "
            f"mean |dp| {self.mean_abs_diff:.2e}, top-emotion agreement {self.top_emotion_agreement:.1%}, "
            f"top-sentiment agreement {self.top_sentiment_agreement:.1%}"
        )


def random_windows(count: int, frames: int, size: int, samples: int, seed: int = 0):
    """Synthetic windows: random images, band-limited noise bursts, random word strings; some windows
    lack a modality so the missing-modality path is compared too."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        images = rng.integers(0, 256, size=(frames, size, size, 3), dtype=np.uint8)
        audio = (rng.standard_normal(samples) * rng.uniform(0.01, 0.3)).astype(np.float32)
        text = " ".join(rng.choice(WORDS, size=rng.integers(1, 12)))
        yield (None if i % 7 == 3 else images), (None if i % 7 == 5 else audio), (None if i % 7 == 6 else text)


@torch.no_grad()
def check_parity(model: MerClip, bundle: Bundle, count: int = 32, frames: int = 4, seed: int = 0) -> Parity:
    model = model.eval()
    size = bundle.image_size
    diffs, top_e, top_s = [], [], []
    zero_shot = bundle.mode == "zero-shot"
    for images, audio, text in random_windows(count, frames, size, bundle.window_samples, seed):
        got = bundle.predict(images, audio, text)
        if zero_shot:
            want_e, want_s = _zero_shot_torch(model, bundle, images, text)
        else:
            present = got.present
            out = model(
                frames=torch.from_numpy(bundle.preprocess_frames(images))[None] if images is not None else None,
                audio=torch.from_numpy(audio)[None] if audio is not None else None,
                text=torch.from_numpy(bundle.tokenizer([text])) if text else None,
                prompts=_prompts(model, bundle),
                present=torch.from_numpy(present),
            )
            want_e, want_s = out.emotion_probs.numpy(), out.sentiment_probs.numpy()
        diffs.append(np.abs(np.concatenate([got.emotion - want_e, got.sentiment - want_s], axis=1)).ravel())
        top_e.append(got.emotion.argmax() == want_e.argmax())
        top_s.append(got.sentiment.argmax() == want_s.argmax())
    d = np.concatenate(diffs)
    return Parity(count, float(d.max()), float(d.mean()), float(np.mean(top_e)), float(np.mean(top_s)))


def torch_readings(model: MerClip, bundle: Bundle) -> Readings:
    """The torch model's fp32 readings of a window, per set of its modalities (``export/agreement.py``): the
    reference a bundle's precisions are compared with. Each modality is encoded once and the labels embedded
    once; absent modalities are zero-filled for the fusion exactly as ``Bundle.fuse`` does."""
    from merclip.model.merclip import Features

    from .graphs import ZeroShotFuseGraph, ZeroShotLabelGraph

    model = model.eval()
    dim, length = bundle.embed_dim, bundle.context_length
    zero_shot = bundle.mode == "zero-shot"
    used = model_modalities(bundle)
    with torch.no_grad():
        if zero_shot:
            labels = ZeroShotLabelGraph(model)
            queries = torch.zeros(2, dim)
            emotions = labels(torch.from_numpy(bundle.tokenizer(bundle._prompts(bundle.emotion_labels, "emotion"))))
            sentiments = labels(
                torch.from_numpy(bundle.tokenizer(bundle._prompts(bundle.sentiment_labels, "sentiment")))
            )
        else:
            queries, emotions, sentiments = model.label_embeddings(_prompts(model, bundle))

    @torch.no_grad()
    def read(window) -> list:
        frames, audio, text = window
        encoded = {}
        if text:
            encoded["L"] = model.encode_text(torch.from_numpy(bundle.tokenizer([text])))
        if frames is not None and len(frames):
            encoded["V"] = model.encode_frames(torch.from_numpy(bundle.preprocess_frames(frames)))[None]
        if audio is not None:
            encoded["A"] = model.encode_audio(torch.from_numpy(audio)[None])
        out = []
        for mods in modality_sets("".join(encoded), used):
            tokens, valid, pooled = encoded["L"] if "L" in mods else (
                torch.zeros(1, length, dim), torch.ones(1, length, dtype=torch.bool), torch.zeros(1, dim))  # fmt: skip
            vision = encoded["V"] if "V" in mods else torch.zeros(1, 1, dim)
            sound = encoded["A"] if "A" in mods else torch.zeros(1, 1, dim)
            present = torch.tensor([[float(m in mods) for m in "LVA"]])
            if zero_shot:
                e, s = ZeroShotFuseGraph(model)(vision, sound, tokens, valid, pooled, present, queries, emotions,
                                                 sentiments)  # fmt: skip
            else:
                feats = Features(vision, sound, tokens, valid, pooled, present)
                e, s = model.probabilities(*model.fuse(feats, queries, emotions, sentiments))
            out.append((mods, e[0].numpy(), s[0].numpy()))
        return out

    return read


def _prompts(model: MerClip, bundle: Bundle):
    from merclip.model.merclip import build_prompts

    if model.label_encoder is None:
        return None
    return build_prompts(model.cfg, bundle.tokenizer, bundle.emotion_labels, bundle.sentiment_labels)


def _zero_shot_torch(model: MerClip, bundle: Bundle, images, text):
    from .graphs import ZeroShotFuseGraph, ZeroShotLabelGraph

    dim = bundle.embed_dim
    length = bundle.context_length
    present = torch.tensor([[float(bool(text)), float(images is not None), 0.0]])
    vision = (
        model.encode_frames(torch.from_numpy(bundle.preprocess_frames(images)))[None]
        if images is not None
        else torch.zeros(1, 1, dim)
    )
    if text:
        tokens, valid, pooled = model.encode_text(torch.from_numpy(bundle.tokenizer([text])))
    else:
        tokens, valid, pooled = (
            torch.zeros(1, length, dim),
            torch.ones(1, length, dtype=torch.bool),
            torch.zeros(1, dim),
        )
    label_graph = ZeroShotLabelGraph(model)
    emo_ids = torch.from_numpy(bundle.tokenizer(bundle._prompts(bundle.emotion_labels, "emotion")))
    sent_ids = torch.from_numpy(bundle.tokenizer(bundle._prompts(bundle.sentiment_labels, "sentiment")))
    emo, sent = ZeroShotFuseGraph(model)(
        vision,
        torch.zeros(1, 1, dim),
        tokens,
        valid,
        pooled,
        present,
        torch.zeros(2, dim),
        label_graph(emo_ids),
        label_graph(sent_ids),
    )
    return emo.numpy(), sent.numpy()
