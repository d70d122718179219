"""Cross-modal decoder (paper §3.2): one layer per modality, fused in a configurable order.

Each layer lets the task query (``Z^[k]``) attend to one modality's features: self-attention on the
query, cross-attention to the modality (keys/values), then an MLP, all pre-norm with residuals.

The paper does not say whether the keys are pooled vectors or token sequences; attention over a single
key is degenerate (the softmax is always 1), so by default a layer attends over the modality's tokens
(frame features, word features, audio-segment features) and ``attend="pooled"`` gives the other reading.
A modality absent from a window (``present`` = 0) leaves the query unchanged through its layer.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossModalLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_query = nn.LayerNorm(width)
        self.ln_memory = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, z: torch.Tensor, memory: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        q = self.ln_self(z)
        z = z + self.self_attn(q, q, q, need_weights=False)[0]
        m = self.ln_memory(memory)
        z = z + self.cross_attn(self.ln_query(z), m, m, key_padding_mask=pad_mask, need_weights=False)[0]
        return z + self.mlp(self.ln_mlp(z))


class CrossModalDecoder(nn.Module):
    """Queries (B, Q, D) + per-modality memories -> fused representations (B, Q, D)."""

    def __init__(self, order: str, width: int, heads: int):
        super().__init__()
        self.order = order
        self.layers = nn.ModuleList(CrossModalLayer(width, heads) for _ in order)

    def forward(
        self,
        queries: torch.Tensor,
        memories: dict[str, torch.Tensor],
        pad_masks: dict[str, torch.Tensor | None],
        present: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        batch, n_queries, width = queries.shape
        # Each task query is decoded on its own (folded into the batch) so tasks never mix.
        z = queries.reshape(batch * n_queries, 1, width)
        for layer, modality in zip(self.layers, self.order, strict=True):
            memory = memories[modality].repeat_interleave(n_queries, dim=0)
            mask = pad_masks.get(modality)
            if mask is not None:
                mask = mask.repeat_interleave(n_queries, dim=0)
            gate = present[modality].repeat_interleave(n_queries, dim=0)[:, None, None].to(z.dtype)
            z = z + gate * (layer(z, memory, mask) - z)
        return z.reshape(batch, n_queries, width)
