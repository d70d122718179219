import copy

import pytest
import torch
import torch.nn.functional as F
from merclip.model import MerClipConfig, build_model, build_prompts, load_checkpoint, save_checkpoint

from merclip.errors import MerClipError


def _inputs(tokenizer, batch=2, frames=2, seconds=2.0):
    g = torch.Generator().manual_seed(1)
    return {
        "frames": torch.randn(batch, frames, 3, 224, 224, generator=g),
        "audio": torch.randn(batch, int(16000 * seconds), generator=g) * 0.1,
        "text": torch.from_numpy(tokenizer(["what a lovely day", "i lost my keys again"][:batch])),
    }


@pytest.mark.parametrize("modalities", ["LVA", "VL", "A", "L", "AV", "VAL"])
@pytest.mark.parametrize("attend", ["tokens", "pooled"])
def test_every_modality_subset_gives_probabilities(tokenizer, modalities, attend):
    model = build_model(MerClipConfig(modalities=modalities, attend=attend)).eval()
    inputs = _inputs(tokenizer)
    with torch.no_grad():
        out = model(**inputs, prompts=build_prompts(model.cfg, tokenizer))
    assert out.emotion_probs.shape == (2, 6)
    assert out.sentiment_probs.shape == (2, 2)
    assert torch.allclose(out.sentiment_probs.sum(-1), torch.ones(2))
    assert ((out.emotion_probs > 0) & (out.emotion_probs < 1)).all()


@pytest.mark.parametrize("variant", ["no_cmd", "no_le", "concat_fc"])
def test_ablations_run(tokenizer, variant):
    model = build_model(MerClipConfig(variant=variant)).eval()
    with torch.no_grad():
        out = model(**_inputs(tokenizer), prompts=build_prompts(model.cfg, tokenizer))
    assert out.emotion_probs.shape == (2, 6) and out.sentiment_probs.shape == (2, 2)
    assert (model.label_encoder is None) == (variant in ("no_le", "concat_fc"))


def test_multi_segment_audio(tiny_model):
    feats = tiny_model.encode_audio(torch.zeros(1, 16000 * 5))
    assert feats.shape == (1, 3, 64)  # ceil(5 s / 2 s) segments


def test_label_encoder_frozen_rest_trains(tiny_model, tiny_prompts, tokenizer):
    model = copy.deepcopy(tiny_model).train()
    out = model(**_inputs(tokenizer), prompts=tiny_prompts)
    (out.emotion_logits.sum() + out.sentiment_logits.sum()).backward()
    le = model.label_encoder
    assert all(p.grad is None and not p.requires_grad for p in le.text.parameters())
    assert le.ctx.grad is not None and le.ctx.grad.abs().sum() > 0
    for part in (model.vision, model.audio, model.text, model.decoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), type(part).__name__


def test_missing_modality_is_the_same_as_absent(tiny_model, tiny_prompts, tokenizer):
    inputs = _inputs(tokenizer)
    with torch.no_grad():
        without = tiny_model(audio=inputs["audio"], text=inputs["text"], prompts=tiny_prompts)
        masked = tiny_model(**inputs, prompts=tiny_prompts, present=torch.tensor([[1.0, 0.0, 1.0]] * 2))
        full = tiny_model(**inputs, prompts=tiny_prompts)
    assert torch.allclose(without.emotion_probs, masked.emotion_probs, atol=1e-6)
    assert not torch.allclose(full.emotion_probs, masked.emotion_probs, atol=1e-4)


def test_labels_are_text_width_follows_labels(tiny_model, tokenizer):
    sentences = [
        "A state of feeling delighted and fulfilled.",
        "A feeling of deep sorrow resulting from loss.",
        "An intense sensation of dread.",
    ]
    prompts = build_prompts(
        tiny_model.cfg, tokenizer, emotion_labels=sentences, sentiment_labels=["good", "bad", "meh"]
    )
    with torch.no_grad():
        out = tiny_model(**_inputs(tokenizer), prompts=prompts)
    assert out.emotion_probs.shape == (2, 3) and out.sentiment_probs.shape == (2, 3)


def test_tiny_model_overfits_a_fixed_batch(tokenizer):
    torch.manual_seed(0)
    model = build_model(MerClipConfig(modalities="LV")).train()
    prompts = build_prompts(model.cfg, tokenizer)
    batch = _inputs(tokenizer, batch=2, frames=1)
    emo_target = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 1.0, 0]])
    sent_target = torch.tensor([0, 1])
    opt = torch.optim.AdamW(model.parameter_groups(lr=3e-3, weight_decay=0.0, scale_lr=0.05))

    def loss_fn():
        out = model(frames=batch["frames"], text=batch["text"], prompts=prompts)
        return F.binary_cross_entropy_with_logits(out.emotion_logits, emo_target) + F.cross_entropy(
            out.sentiment_logits, sent_target
        )

    first = loss_fn().item()
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() <= 0.1 * first


def test_checkpoint_round_trip_is_exact(tiny_model, tiny_prompts, tokenizer, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_model, path, extra={"epoch": 3})
    loaded, extra = load_checkpoint(path)
    assert extra == {"epoch": 3}
    assert loaded.cfg == tiny_model.cfg
    inputs = _inputs(tokenizer)
    with torch.no_grad():
        a = tiny_model(**inputs, prompts=tiny_prompts)
        b = loaded(**inputs, prompts=tiny_prompts)
    own, again = tiny_model.state_dict(), loaded.state_dict()
    assert own.keys() == again.keys() and all(torch.equal(own[k], again[k]) for k in own)
    assert torch.allclose(a.emotion_probs, b.emotion_probs, atol=1e-6)
    assert torch.allclose(a.sentiment_probs, b.sentiment_probs, atol=1e-6)


def test_decoder_heads_follow_the_text_tower_unless_set(tmp_path):
    """0 (the default): as many heads as the CLIP text tower (tiny: 2 of 32 dims; ViT-B-32: 8 of 64, the
    paper's), recorded in the checkpoint so that it rebuilds the same; a number set is kept, and a model
    saved with 8 (every one from before the default) loads with 8."""
    auto = build_model(MerClipConfig(arch="tiny"))
    assert auto.cfg.decoder_heads == 2 and auto.decoder.layers[0].cross_attn.heads == 2
    set8 = build_model(MerClipConfig(arch="tiny", decoder_heads=8))
    for model, heads in ((auto, 2), (set8, 8)):
        save_checkpoint(model, tmp_path / "m.safetensors")
        loaded, _ = load_checkpoint(tmp_path / "m.safetensors", expect=MerClipConfig(arch="tiny"))
        assert loaded.cfg.decoder_heads == loaded.decoder.layers[0].cross_attn.heads == heads
    # resuming an 8-head run with a 2-head model would load 8-head weights into 2 heads: refused, with the fix
    with pytest.raises(MerClipError, match="set model.decoder_heads = 8 to resume it"):
        load_checkpoint(tmp_path / "m.safetensors", expect=auto.cfg)


def test_checkpoint_mismatch_is_refused(tiny_model, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_model, path)
    with pytest.raises(MerClipError, match="differs in variant"):
        load_checkpoint(path, expect=MerClipConfig(variant="no_le"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MerClipError, match="not a safetensors"):
        load_checkpoint(junk)


def test_unknown_architecture_and_offline_tag_fail_in_one_line(monkeypatch):
    import open_clip
    from merclip.model import create_clip

    with pytest.raises(MerClipError, match="unknown architecture"):
        create_clip("NoSuchNet-1")

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(MerClipError, match="--weights PATH, or --weights random"):
        create_clip("ViT-B-32", "openai")


def test_local_weights_file_loads(tmp_path):
    from merclip.model import create_clip
    from safetensors.torch import save_file

    clip, _ = create_clip("tiny", "random")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    again, _ = create_clip("tiny", str(path))
    assert torch.equal(again.token_embedding.weight, clip.token_embedding.weight)
    with pytest.raises(MerClipError, match="weights file not found"):
        create_clip("tiny", str(tmp_path / "missing.safetensors"))
