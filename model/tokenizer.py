"""CLIP's byte-level BPE tokenizer as a ``tokenizers.Tokenizer``, usable without torch.

Training, export and the live runtime all tokenize through :class:`ClipTokenizer`, so the ids a bundle
sees are the ids the model was trained on. The vocabulary is built from open_clip's shipped BPE merges
(at export time) and carried in the bundle as ``tokenizer.json``.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

SOT = "<start_of_text>"
EOT = "<end_of_text>"
# open_clip's split pattern: contractions, letter runs, single digits, punctuation runs.
_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


# The characters ftfy's uncurl_quotes (part of open_clip's basic_clean) maps to ' and ".
CURLY_SINGLE_QUOTES = "[\u02bc\u2018-\u201b]"
CURLY_DOUBLE_QUOTES = "[\u201c-\u201f]"

PLACEHOLDER = "X"  # one token per word; its embedding is replaced by a learnable context vector


def prompt_text(label: str, n_ctx: int) -> str:
    """The label encoder's prompt ``"{ctx} {label}."`` with ``n_ctx`` placeholder words (paper §3.3)."""
    words = [PLACEHOLDER] * n_ctx + ([label.strip()] if label.strip() else [])
    return " ".join(words) + "."


def trim_padding(ids: np.ndarray) -> np.ndarray:
    """Drop the padding columns after the longest row's EOT. Exact for CLIP's causal text tower: a token's
    output never depends on later positions. Training uses it (median MELD utterance: 12 of 77 tokens)."""
    if ids.size == 0:
        return ids
    return ids[:, : int(ids.argmax(axis=1).max()) + 1]  # EOT has the highest id


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map, which CLIP's vocabulary is written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def build_clip_tokenizer(bpe_path: str | Path) -> Tokenizer:
    """Build the tokenizer from CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (49,408 tokens)."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            # CLIP's own cleaning (ftfy.fix_text) straightens typographic quotes: "don’t" must read as the
            # "don't" CLIP was trained on and Whisper writes, not as "don", "’", "t".
            normalizers.Replace(Regex(CURLY_SINGLE_QUOTES), "'"),
            normalizers.Replace(Regex(CURLY_DOUBLE_QUOTES), '"'),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
            normalizers.Lowercase(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([SOT, EOT])
    return tok


def default_bpe_path() -> Path:
    """open_clip's shipped merges file (needs open_clip; only export and training call this)."""
    from open_clip.tokenizer import default_bpe

    return Path(default_bpe())


class ClipTokenizer:
    """Text -> fixed-length id rows: ``[SOT] tokens… [EOT] 0…``; long text is cut, keeping EOT last."""

    def __init__(self, tokenizer: Tokenizer, context_length: int = 77):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.sot_id = tokenizer.token_to_id(SOT)
        self.eot_id = tokenizer.token_to_id(EOT)

    @classmethod
    def from_file(cls, path: str | Path, context_length: int = 77) -> ClipTokenizer:
        return cls(Tokenizer.from_file(str(path)), context_length)

    @classmethod
    def default(cls, context_length: int = 77) -> ClipTokenizer:
        return cls(build_clip_tokenizer(default_bpe_path()), context_length)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, enc in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids = [self.sot_id, *enc.ids[: length - 2], self.eot_id]
            out[row, : len(ids)] = ids
        return out
