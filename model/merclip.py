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
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from merclip.errors import MerClipError

from .audio import LogMelImage, MelConfig
from .decoder import CrossModalDecoder
from .encoders import ImageEncoder, TextEncoder
from .factory import ClipArch
from .labels import LabelEncoder, LabelPrompts

MODALITIES = "LVA"  # column order of the ``present`` mask, whatever the fusion order
VARIANTS = ("full", "no_cmd", "no_le", "concat_fc")


@dataclass(frozen=True)
class MerClipConfig:
    arch: str = "tiny"
    variant: str = "full"
    modalities: str = "LVA"
    attend: str = "tokens"
    decoder_heads: int = 8
    prompt_context: int = 8
    text_context_length: int = 77
    emotion_mode: str = "multi_label"
    emotion_labels: tuple[str, ...] = ("happy", "sad", "angry", "surprise", "disgust", "fear")
    sentiment_labels: tuple[str, ...] = ("positive", "negative")
    emotion_query: str = "Emotion"
    sentiment_query: str = "Sentiment"
    mel: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise MerClipError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        mods = self.modalities
        if not mods or set(mods) - set(MODALITIES) or len(set(mods)) != len(mods):
            raise MerClipError(f"modalities must be an order of distinct letters from L, V, A, got {mods!r}")
        if self.attend not in ("tokens", "pooled"):
            raise MerClipError(f"attend must be 'tokens' or 'pooled', got {self.attend!r}")
        if self.emotion_mode not in ("multi_label", "single_label"):
            raise MerClipError(f"emotion_mode must be multi_label or single_label, got {self.emotion_mode!r}")

    @property
    def uses_label_encoder(self) -> bool:
        return self.variant in ("full", "no_cmd")

    @property
    def uses_decoder(self) -> bool:
        return self.variant in ("full", "no_le")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MerClipConfig:
        data = dict(data)
        data["mel"] = MelConfig(**data.get("mel", {}))
        for key in ("emotion_labels", "sentiment_labels"):
            if key in data:
                data[key] = tuple(data[key])
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise MerClipError(f"model config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**data)


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
        pooled = {
            "V": feats.vision.mean(dim=1),
            "A": feats.audio.mean(dim=1),
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
        emo = torch.sigmoid(emotion_logits) if self.cfg.emotion_mode == "multi_label" else emotion_logits.softmax(-1)
        return emo, sentiment_logits.softmax(-1)

    # ---- whole model --------------------------------------------------------------------------------
    def encode(
        self,
        frames: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
    ) -> Features:
        """frames (B, T, 3, H, W), audio (B, samples), text ids (B, L); None = missing for the batch."""
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
        return Features(vision, audio_feats, tokens, valid, pooled, present)

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
    ) -> ModelOutput:
        feats = self.encode(frames, audio, text, present)
        queries, emo_labels, sent_labels = self.label_embeddings(prompts)
        emo, sent = self.fuse(feats, queries, emo_labels, sent_labels)
        return ModelOutput(emo, sent, *self.probabilities(emo, sent))


def build_model(cfg: MerClipConfig, weights: str = "random") -> MerClip:
    """Build MER-CLIP on ``cfg.arch`` with CLIP weights from a tag, a local file, or ``random``."""
    from .factory import create_clip

    clip, arch = create_clip(cfg.arch, weights)
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
