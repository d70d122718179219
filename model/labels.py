"""Label encoder (paper §3.3): a frozen CLIP text encoder with a learnable prompt context.

Labels and the task query are wrapped as ``"{ctx} {label}."``: the prompt is tokenised with ``n_ctx``
placeholder words whose embeddings are replaced by the learnable context vectors (CoOp-style). The
query ``Z^E`` is the same encoder applied to the query word ("Emotion", "Sentiment") or, with an empty
word, to the context alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .encoders import TextEncoder
from .tokenizer import prompt_text


@dataclass(frozen=True)
class LabelPrompts:
    """Token ids of everything the label encoder embeds: both tasks' queries and label sets."""

    queries: torch.Tensor  # (2, L): emotion query, sentiment query
    emotion: torch.Tensor  # (K_e, L)
    sentiment: torch.Tensor  # (K_s, L)

    @classmethod
    def build(
        cls,
        tokenize: Callable[[Sequence[str]], np.ndarray],
        n_ctx: int,
        emotion_labels: Sequence[str],
        sentiment_labels: Sequence[str],
        emotion_query: str = "Emotion",
        sentiment_query: str = "Sentiment",
    ) -> LabelPrompts:
        def ids(texts: Sequence[str]) -> torch.Tensor:
            return torch.from_numpy(tokenize([prompt_text(t, n_ctx) for t in texts]))

        return cls(ids([emotion_query, sentiment_query]), ids(emotion_labels), ids(sentiment_labels))

    def to(self, device) -> LabelPrompts:
        return LabelPrompts(self.queries.to(device), self.emotion.to(device), self.sentiment.to(device))


class LabelEncoder(nn.Module):
    """Prompt token ids (K, L) -> label embeddings (K, D). The text tower is frozen; ``ctx`` trains."""

    def __init__(self, text: TextEncoder, n_ctx: int = 8):
        super().__init__()
        self.text = text
        for p in self.text.parameters():
            p.requires_grad_(False)
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(torch.randn(n_ctx, text.width) * 0.02)

    def train(self, mode: bool = True) -> LabelEncoder:
        super().train(mode)
        self.text.eval()  # frozen: never in training mode
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.text.embed(ids)
        if self.n_ctx:
            ctx = self.ctx.to(x.dtype)[None].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], ctx, x[:, 1 + self.n_ctx :]], dim=1)
        return self.text.encode_embeddings(x, ids)[2]
