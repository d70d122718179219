"""Build a random-weight Whisper of a real architecture as a local CTranslate2 folder.

No model hub is needed: the tokenizer comes from openai-whisper's bundled tiktoken file, the network from
``transformers`` (random init), the conversion from CTranslate2. The result runs through the real
faster-whisper path, so tests and benchmarks exercise decoding, padding and timing honestly (the words
are meaningless). Needs the dev extras (transformers, openai-whisper, ctranslate2).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

# Architectures of the published checkpoints (d_model, layers, heads, ffn).
SIZES = {
    "test": (64, 1, 2, 128),
    "tiny": (384, 4, 6, 1536),
    "base": (512, 6, 8, 2048),
}


def build_random_whisper(out: str | Path, size: str = "test", quantization: str = "int8", seed: int = 0) -> Path:
    import torch
    import whisper
    import whisper.tokenizer as wt
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    out = Path(out)
    if (out / "model.bin").is_file():
        return out
    d_model, layers, heads, ffn = SIZES[size]
    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp)
        enc = wt.get_encoding("multilingual")
        specials = sorted(enc._special_tokens, key=enc._special_tokens.get)
        vocab_file = Path(whisper.__file__).parent / "assets" / "multilingual.tiktoken"
        tokenizer = TikTokenConverter(
            vocab_file=str(vocab_file), pattern=enc._pat_str, extra_special_tokens=specials
        ).converted()
        tokenizer.save(str(hf / "tokenizer.json"))
        eot = "<|endoftext|>"
        WhisperTokenizerFast(
            tokenizer_file=str(hf / "tokenizer.json"), bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot
        ).save_pretrained(hf)
        cfg = WhisperConfig(
            vocab_size=enc.n_vocab, num_mel_bins=80, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
            encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
            max_source_positions=1500, max_target_positions=448, decoder_start_token_id=enc._special_tokens[
                "<|startoftranscript|>"], pad_token_id=enc.eot_token, bos_token_id=enc.eot_token,
            eos_token_id=enc.eot_token, begin_suppress_tokens=[220, enc.eot_token], suppress_tokens=[],
        )  # fmt: skip
        torch.manual_seed(seed)
        WhisperForConditionalGeneration(cfg).save_pretrained(hf)
        staging = out.with_name(out.name + ".tmp")
        TransformersConverter(str(hf)).convert(str(staging), quantization=quantization, force=True)
        shutil.copy(hf / "tokenizer.json", staging / "tokenizer.json")
        preprocessor = {"feature_size": 80, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30,
                        "n_fft": 400}  # fmt: skip
        (staging / "preprocessor_config.json").write_text(json.dumps(preprocessor))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return out
