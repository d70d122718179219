"""The whole MER-CLIP network and its ablations.

Variants (paper Table 4 and the CLIP-concat baseline report):
  full      cross-modal decoder (CMD) + label-encoder (LE) prediction
  no_cmd    pooled modality features concatenated -> FC -> one embedding, cosine with label embeddings
  no_le     CMD with learnable queries -> FC logits (fixed label set)
  concat_fc pooled features concatenated -> MLP -> logits (the baseline)

The forward pass is split into the parts the ONNX bundle exports (frames, audio, text, labels, fusion)
so that the torch model and the runtime compute the same thing the same way.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from merclip.errors import MerClipError

from .audio import LogMelImage
from .config import MODALITIES, Calibration, MerClipConfig
from .decoder import CrossModalDecoder
from .encoders import ImageEncoder, TextEncoder
from .factory import ClipArch
from .labels import LabelEncoder, LabelPrompts


@dataclass
class ModelOutput:
    emotion_logits: torch.Tensor  # (B, K_e)
    sentiment_logits: torch.Tensor  # (B, K_s)
    emotion_probs: torch.Tensor
    sentiment_probs: torch.Tensor


@dataclass
class Features:
    """Encoded modalities of a batch; zeros + ``present`` = 0 where a modality is missing."""

    vision: torch.Tensor  # (B, T_V, D) per-frame features
    audio: torch.Tensor  # (B, T_A, D) per-segment features
    text: torch.Tensor  # (B, L, D) per-token features
    text_valid: torch.Tensor  # (B, L) bool
    text_pooled: torch.Tensor  # (B, D)
    present: torch.Tensor  # (B, 3) float, columns L, V, A
    # (B, T_A) bool, True = a real audio segment. None = all are (one clip, or equal lengths): a batch's
    # audio is zero-padded to its longest clip, and the padding segments must not reach attention or means.
    audio_valid: torch.Tensor | None = None


class MerClip(nn.Module):
    def __init__(self, cfg: MerClipConfig, clip: nn.Module, arch: ClipArch):
        super().__init__()
        self.cfg = cfg
        self.arch = arch
        dim = arch.embed_dim
        self.vision = ImageEncoder(clip.visual)
        self.audio_frontend = LogMelImage(cfg.mel)
        self.audio = ImageEncoder(copy.deepcopy(clip.visual))
        text_tower = TextEncoder(clip, cfg.text_context_length)
        self.label_encoder = (
            LabelEncoder(copy.deepcopy(TextEncoder(clip, 77)), cfg.prompt_context) if cfg.uses_label_encoder else None
        )
        self.text = text_tower
        n_e, n_s = len(cfg.emotion_labels), len(cfg.sentiment_labels)
        if cfg.uses_decoder:
            if dim % cfg.decoder_heads:  # said as the setting to change, not as the layer that cannot be built
                divisors = [h for h in range(1, 65) if dim % h == 0]
                raise MerClipError(f"model.decoder_heads = {cfg.decoder_heads} does not divide the decoder width "
                                   f"{dim} of {cfg.arch}: choose one of {divisors}")  # fmt: skip
            self.decoder = CrossModalDecoder(cfg.modalities, dim, cfg.decoder_heads)
        if cfg.variant == "no_le":
            self.queries = nn.Parameter(torch.randn(2, dim) * 0.02)
            self.emotion_fc = nn.Linear(dim, n_e)
            self.sentiment_fc = nn.Linear(dim, n_s)
        if cfg.variant == "no_cmd":
            self.emotion_fc = nn.Linear(3 * dim, dim)
            self.sentiment_fc = nn.Linear(3 * dim, dim)
        if cfg.variant == "concat_fc":
            self.emotion_fc = nn.Sequential(nn.Linear(3 * dim, dim), nn.GELU(), nn.Linear(dim, n_e))
            self.sentiment_fc = nn.Sequential(nn.Linear(3 * dim, dim), nn.GELU(), nn.Linear(dim, n_s))
        # Sentiment: cosine x learnable logit scale, init 1/0.07 (paper supp. Alg. 1). Emotion: multi-label
        # standardised cosine x a learnable gain (init 1 = the paper's head; learnable so that BCE is not
        # capped at sqrt(K-1)); single-label (MELD) uses a logit scale like sentiment.
        self.sentiment_log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        init = 0.0 if cfg.emotion_mode == "multi_label" else math.log(1 / 0.07)
        self.emotion_log_scale = nn.Parameter(torch.tensor(init))
        # post-hoc calibration (not a weight: set from the checkpoint's metadata; constants in an exported graph)
        self.calibration = Calibration()

    def parameter_groups(self, lr: float, weight_decay: float, scale_lr: float = 0.01) -> list[dict]:
        """AdamW groups: the trainable network, and the two log-scales (scalars in log space: at the
        network's lr, e.g. 8e-6, they would never move; no weight decay pulls them towards 0)."""
        scales = [self.emotion_log_scale, self.sentiment_log_scale]
        ids = {id(p) for p in scales}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [
            {"params": rest, "lr": lr, "weight_decay": weight_decay},
            {"params": scales, "lr": max(lr, scale_lr), "weight_decay": 0.0},
        ]

    # ---- parts (each is one exported graph) -------------------------------------------------------
    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, D)."""
        return self.vision(images)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) at 16 kHz -> (B, segments, D)."""
        mel = self.audio_frontend(wave)
        batch, segments = mel.shape[:2]
        return self.audio(mel.flatten(0, 1)).reshape(batch, segments, -1)

    def encode_text(self, ids: torch.Tensor):
        """(B, L) token ids -> tokens (B, L, D), valid (B, L), pooled (B, D)."""
        return self.text(ids)

    def embed_labels(self, ids: torch.Tensor) -> torch.Tensor:
        """Prompt ids (K, L) -> unit-norm label embeddings (K, D)."""
        if self.label_encoder is None:
            raise MerClipError(f"variant {self.cfg.variant} has no label encoder: its labels are fixed")
        return F.normalize(self.label_encoder(ids), dim=-1)

    def fuse(
        self,
        feats: Features,
        queries: torch.Tensor | None,
        emotion_labels: torch.Tensor | None,
        sentiment_labels: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features + label embeddings -> (emotion logits, sentiment logits)."""
        present = {m: feats.present[:, i] for i, m in enumerate(MODALITIES)}
        if feats.audio_valid is None:
            audio_mean = feats.audio.mean(dim=1)
        else:  # mean over the clip's own segments only
            weight = feats.audio_valid.to(feats.audio.dtype)[..., None]
            audio_mean = (feats.audio * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)
        pooled = {
            "V": feats.vision.mean(dim=1),
            "A": audio_mean,
            "L": feats.text_pooled,
        }
        variant = self.cfg.variant
        if variant in ("no_cmd", "concat_fc"):
            parts = [
                pooled[m] * present[m][:, None].to(pooled[m].dtype)
                if m in self.cfg.modalities
                else torch.zeros_like(pooled[m])
                for m in MODALITIES
            ]
            joint = torch.cat(parts, dim=-1)
            emo, sent = self.emotion_fc(joint), self.sentiment_fc(joint)
        else:
            if self.cfg.attend == "tokens":
                memories = {"V": feats.vision, "A": feats.audio, "L": feats.text}
                masks = {"L": ~feats.text_valid}
                if feats.audio_valid is not None:
                    masks["A"] = ~feats.audio_valid
            else:
                memories = {m: v[:, None] for m, v in pooled.items()}
                masks = {}
            q = self.queries if variant == "no_le" else queries
            z = self.decoder(q[None].expand(feats.present.shape[0], -1, -1), memories, masks, present)
            emo, sent = z[:, 0], z[:, 1]
            if variant == "no_le":
                return self.emotion_fc(emo), self.sentiment_fc(sent)
        if variant == "concat_fc":
            return emo, sent
        emo_sim = F.normalize(emo, dim=-1) @ emotion_labels.T
        sent_sim = F.normalize(sent, dim=-1) @ sentiment_labels.T
        if self.cfg.emotion_mode == "multi_label":
            # standardise over the label set (supp. Alg. 1); population std, so one label gives 0, not NaN.
            spread = emo_sim.std(dim=1, keepdim=True, correction=0)
            emo_sim = (emo_sim - emo_sim.mean(dim=1, keepdim=True)) / (spread + 1e-6)
        emotion_logits = emo_sim * self.emotion_log_scale.exp()
        return emotion_logits, sent_sim * self.sentiment_log_scale.exp()

    def probabilities(self, emotion_logits: torch.Tensor, sentiment_logits: torch.Tensor):
        """Logits -> probabilities, calibrated with ``self.calibration`` (identity unless fitted)."""
        cal = self.calibration
        if self.cfg.emotion_mode == "multi_label":
            emo = torch.sigmoid(emotion_logits * cal.emotion_scale + cal.emotion_bias)
        else:
            emo = (emotion_logits * cal.emotion_scale).softmax(-1)
        return emo, (sentiment_logits * cal.sentiment_scale).softmax(-1)

    # ---- whole model --------------------------------------------------------------------------------
    def encode(
        self,
        frames: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
    ) -> Features:
        """frames (B, T, 3, H, W), audio (B, samples), text ids (B, L); None = missing for the batch.
        ``audio_lengths`` (B,): each clip's own samples before zero-padding to the batch's longest."""
        given = [x for x in (frames, audio, text) if x is not None]
        if not given:
            raise MerClipError("at least one modality is needed")
        batch = given[0].shape[0]
        device = given[0].device
        dim = self.arch.embed_dim
        use = self.cfg.modalities
        if frames is not None and "V" in use:
            vision = self.encode_frames(frames.flatten(0, 1)).reshape(batch, frames.shape[1], dim)
        else:
            vision = torch.zeros(batch, 1, dim, device=device)
        audio_feats = (
            self.encode_audio(audio) if audio is not None and "A" in use else torch.zeros(batch, 1, dim, device=device)
        )
        if text is not None and "L" in use:
            tokens, valid, pooled = self.encode_text(text)
        else:
            tokens = torch.zeros(batch, 2, dim, device=device)
            valid = torch.ones(batch, 2, dtype=torch.bool, device=device)
            pooled = torch.zeros(batch, dim, device=device)
        have = torch.tensor(
            [[float(x is not None and m in use) for m, x in zip(MODALITIES, (text, frames, audio), strict=True)]],
            device=device,
        ).expand(batch, -1)
        present = have if present is None else have * present.to(device)
        audio_valid = None
        if audio_lengths is not None and audio is not None and "A" in use:
            seg = self.cfg.mel.segment_samples
            counts = ((audio_lengths.to(device) + seg - 1) // seg).clamp(min=1)  # a clip has >= 1 segment
            audio_valid = torch.arange(audio_feats.shape[1], device=device)[None] < counts[:, None]
        return Features(vision, audio_feats, tokens, valid, pooled, present, audio_valid)

    def label_embeddings(self, prompts: LabelPrompts | None):
        if not self.cfg.uses_label_encoder:
            return None, None, None
        if prompts is None:
            raise MerClipError("this variant needs label prompts (LabelPrompts.build)")
        return (
            self.embed_labels(prompts.queries),
            self.embed_labels(prompts.emotion),
            self.embed_labels(prompts.sentiment),
        )

    def forward(
        self,
        frames: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        prompts: LabelPrompts | None = None,
        present: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
    ) -> ModelOutput:
        feats = self.encode(frames, audio, text, present, audio_lengths)
        queries, emo_labels, sent_labels = self.label_embeddings(prompts)
        emo, sent = self.fuse(feats, queries, emo_labels, sent_labels)
        return ModelOutput(emo, sent, *self.probabilities(emo, sent))


def build_model(cfg: MerClipConfig, weights: str = "random") -> MerClip:
    """Build MER-CLIP on ``cfg.arch`` with CLIP weights from a tag, a local file, or ``random``."""
    from .factory import create_clip

    clip, arch = create_clip(cfg.arch, weights, cfg.quick_gelu, cfg.image_mean, cfg.image_std)
    # Record what the weights were built with, so that a checkpoint of this model rebuilds the same function.
    cfg = replace(cfg, quick_gelu=arch.quick_gelu, image_mean=arch.image_mean, image_std=arch.image_std)
    if not cfg.decoder_heads:  # as the CLIP text tower (ViT-B-32: 8 of 64 dims, the paper's; tiny: 2 of 32)
        cfg = replace(cfg, decoder_heads=arch.text_heads)
    return MerClip(cfg, clip, arch)


def build_prompts(
    cfg: MerClipConfig, tokenize, emotion_labels=None, sentiment_labels=None, trim: bool = False
) -> LabelPrompts:
    """Token ids of the queries and labels; label lists default to the ones the model was built with.
    ``trim`` drops trailing padding (exact for the causal CLIP text tower; see ``trim_padding``)."""
    if trim:
        from .tokenizer import trim_padding

        def tokenize_trimmed(texts, _tokenize=tokenize):
            return trim_padding(_tokenize(texts))

        tokenize = tokenize_trimmed
    return LabelPrompts.build(
        tokenize,
        cfg.prompt_context,
        emotion_labels or cfg.emotion_labels,
        sentiment_labels or cfg.sentiment_labels,
        cfg.emotion_query,
        cfg.sentiment_query,
    )
