"""CLIP towers as MER-CLIP modality encoders (paper §3.1).

The image tower encodes frames (and, as a second copy, log-mel images); the text tower returns per-token
features as well as the EOS feature, because the cross-modal decoder attends over token sequences.
"""

from __future__ import annotations

import torch
from torch import nn


class ImageEncoder(nn.Module):
    """(N, 3, H, W) normalised images -> (N, D) projected CLS features, one per image."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.visual(images)
        return out[0] if isinstance(out, tuple) else out


class TextEncoder(nn.Module):
    """CLIP text tower returning (tokens (B, L, D), valid mask (B, L), pooled EOS feature (B, D))."""

    def __init__(self, clip: nn.Module, context_length: int = 77):
        super().__init__()
        if getattr(clip, "text_pool_type", "argmax") not in ("argmax", "last"):
            raise ValueError(f"unsupported text pooling {clip.text_pool_type!r}")
        self.pool_type = getattr(clip, "text_pool_type", "argmax")
        self.context_length = context_length
        self.token_embedding = clip.token_embedding
        # A shorter context than CLIP's 77 keeps the first positions: a 2-s transcript is a few words.
        self.positional_embedding = nn.Parameter(clip.positional_embedding.detach()[:context_length].clone())
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        mask = clip.attn_mask
        self.register_buffer(
            "attn_mask", None if mask is None else mask[:context_length, :context_length].clone(), persistent=False
        )

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def eos_index(self, ids: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "last":
            return torch.full(ids.shape[:1], ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        return ids.argmax(dim=-1)  # EOT has the highest id in CLIP's vocabulary

    def encode_embeddings(self, x: torch.Tensor, ids: torch.Tensor):
        length = ids.shape[1]
        x = x + self.positional_embedding[:length].to(x.dtype)
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        tokens = self._project(x)
        eos = self.eos_index(ids)
        pooled = tokens[torch.arange(tokens.shape[0], device=ids.device), eos]
        positions = torch.arange(length, device=ids.device)[None, :]
        valid = positions <= eos[:, None]
        return tokens, valid, pooled

    def forward(self, ids: torch.Tensor):
        return self.encode_embeddings(self.embed(ids), ids)
