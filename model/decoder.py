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


class Attention(nn.Module):
    """Multi-head attention written out so that ONNX export keeps batch and sequence lengths dynamic
    (nn.MultiheadAttention's traced graph bakes the key length in)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"decoder width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, pad_mask: torch.Tensor | None = None):
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(memory)), self._split(self.v_proj(memory))
        scores = (q @ k.transpose(-1, -2)) * self.scale
        if pad_mask is not None:  # True = ignore this key
            scores = scores.masked_fill(pad_mask[:, None, None, :], float("-inf"))
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class CrossModalLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_self = nn.LayerNorm(width)
        self.self_attn = Attention(width, heads)
        self.ln_query = nn.LayerNorm(width)
        self.ln_memory = nn.LayerNorm(width)
        self.cross_attn = Attention(width, heads)
        self.ln_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, z: torch.Tensor, memory: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        q = self.ln_self(z)
        z = z + self.self_attn(q, q)
        m = self.ln_memory(memory)
        z = z + self.cross_attn(self.ln_query(z), m, pad_mask)
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
