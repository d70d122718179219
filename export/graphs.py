"""The exported graphs: thin torch modules around MER-CLIP's parts, one per ONNX file.

Input and output names here are the bundle's contract with ``merclip.export.runtime``.
"""

from __future__ import annotations

import torch.nn.functional as F
from merclip.model.merclip import Features, MerClip
from torch import nn

FUSE_INPUTS = [
    "vision",
    "audio",
    "text",
    "text_valid",
    "text_pooled",
    "present",
    "queries",
    "emotion_labels",
    "sentiment_labels",
]
FUSE_OUTPUTS = ["emotion_probs", "sentiment_probs"]


class VisionGraph(nn.Module):
    """images (N, 3, S, S) -> features (N, D). Per frame, so frames can be encoded as they arrive."""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.encode_frames(images)


class AudioGraph(nn.Module):
    """waveform (B, samples) at 16 kHz -> segment features (B, S, D); the log-mel front-end is inside."""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, waveform):
        return self.model.encode_audio(waveform)


class TextGraph(nn.Module):
    """token ids (B, L) -> tokens (B, L, D), valid (B, L), pooled (B, D)."""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        tokens, valid, pooled = self.model.encode_text(input_ids)
        return tokens, valid, pooled


class LabelGraph(nn.Module):
    """prompt ids (K, 77) -> unit-norm label embeddings (K, D), prompt context baked in."""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.embed_labels(input_ids)


class FuseGraph(nn.Module):
    """Encoded modalities + label embeddings -> probabilities (the decoder and heads)."""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, vision, audio, text, text_valid, text_pooled, present, queries, emotion_labels, sentiment_labels):
        feats = Features(vision, audio, text, text_valid, text_pooled, present)
        emo, sent = self.model.fuse(feats, queries, emotion_labels, sentiment_labels)
        return self.model.probabilities(emo, sent)


class ZeroShotLabelGraph(nn.Module):
    """Zero-shot: plain CLIP text embeddings of templated label prompts."""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return F.normalize(self.model.text(input_ids)[2], dim=-1)


class ZeroShotFuseGraph(nn.Module):
    """Zero-shot scoring with pretrained CLIP alone: cosine of the mean frame embedding and of the
    transcript embedding with each label prompt, averaged over the modalities present. Audio has no
    zero-shot meaning for CLIP and is ignored. Emotion and sentiment: softmax of similarity x 100 (CLIP's
    logit scale, the way CLIP's zero-shot classification is defined). The emotion labels include a neutral
    prompt (the export adds it), so a window can read low for every emotion."""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, vision, audio, text, text_valid, text_pooled, present, queries, emotion_labels, sentiment_labels):
        image = F.normalize(vision.mean(dim=1), dim=-1)
        words = F.normalize(text_pooled, dim=-1)
        w_text, w_image = present[:, 0:1], present[:, 1:2]
        weight = (w_text + w_image).clamp(min=1.0)

        def score(labels):
            return (w_image * (image @ labels.T) + w_text * (words @ labels.T)) / weight

        return (100.0 * score(emotion_labels)).softmax(-1), (100.0 * score(sentiment_labels)).softmax(-1)
