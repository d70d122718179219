from pathlib import Path

import numpy as np
import pytest
import torch
from merclip.model.audio import LogMelImage, MelConfig, mel_filterbank

MEDIA = Path(__file__).resolve().parents[1] / "stream" / "assets"


def _speech():
    import av

    with av.open(str(MEDIA / "sample-face-speech.mp4")) as box:
        stream = box.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        chunks = [r.to_ndarray().reshape(-1) for f in box.decode(stream) for r in resampler.resample(f)]
    return np.concatenate(chunks)[16000:48000].astype(np.float32)


def test_log_mel_matches_librosa_within_0_05_db():
    librosa = pytest.importorskip("librosa")
    wave = _speech()
    ours = LogMelImage().log_mel(torch.from_numpy(wave)[None]).numpy()[0]
    power = librosa.feature.melspectrogram(
        y=wave,
        sr=16000,
        n_fft=1024,
        hop_length=512,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=224,
        htk=False,
        norm="slaney",
    )
    ref = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
    assert ours.shape == ref.shape == (224, 63)
    assert np.abs(ours - ref).max() < 0.05
    assert np.abs(mel_filterbank(16000, 1024, 224) - librosa.filters.mel(sr=16000, n_fft=1024, n_mels=224)).max() < 1e-6


def test_log_mel_images_shape_and_segments():
    mel = LogMelImage(MelConfig())
    assert mel(torch.zeros(2, 32000)).shape == (2, 1, 3, 224, 224)
    assert mel(torch.zeros(1, 32001)).shape == (1, 2, 3, 224, 224)  # ceil(tau / 2) segments


def test_tokenizer_matches_open_clip(tokenizer):
    open_clip = pytest.importorskip("open_clip")
    texts = [
        "And so my fellow Americans, ask not what your country can do for you!",
        "Oh my God, Im so sorry... 123 dont",
        "It's you're we'll  HELLO   world",
        "X X X X X X X X happy.",
        "",
        "word " * 100,
        # typographic quotes, as in a quarter of MELD's transcripts (CLIP's cleaning straightens them)
        "Oh my God, he\u2019s lost it. You\u2019re a genius! I didn\u2019t\u2026",
        "\u2018Cause I said \u201cno\u201d \u2014 ma\u02bcam, it\u201bs \u201ehere\u201f",
    ]
    assert np.array_equal(tokenizer(texts), open_clip.get_tokenizer("ViT-B-32")(texts).numpy())


def test_a_bundles_tokenizer_file_straightens_quotes_too(tokenizer, tmp_path):
    """The live monitor tokenizes with the bundle's tokenizer.json: the normalizer travels in it."""
    from merclip.model.tokenizer import ClipTokenizer

    tokenizer.save(tmp_path / "tokenizer.json")
    carried = ClipTokenizer.from_file(tmp_path / "tokenizer.json")
    assert np.array_equal(carried(["he\u2019s \u201cfine\u201d"]), tokenizer(['he\'s "fine"']))


def test_every_meld_transcript_tokenizes_as_open_clip_does(tokenizer, shared_meld):
    """Real transcripts, as the dataset reader gives them: a model trained on them reads CLIP's ids."""
    open_clip = pytest.importorskip("open_clip")
    from merclip.train.datasets import read_meld

    texts = [clip.text for clip in read_meld(shared_meld, splits=("train", "dev"))]
    ours, ref = tokenizer(texts), open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
    assert [t for t, a, b in zip(texts, ours, ref, strict=True) if not np.array_equal(a, b)] == []
