"""Pretrained CLIP weights through open_clip's real download code, offline, and the settings a tag carries.

A Hugging Face hub cache is laid out in a tmp dir exactly as huggingface_hub stores a repository
(``models--ORG--NAME/refs/main`` -> commit, ``snapshots/<commit>/<file>`` -> ``blobs/<sha256>``) for the repo
open_clip's registry names for a tag, holding random stand-in weights in the file open_clip fetches. With
HF_HUB_OFFLINE the real path (our factory -> ``open_clip.create_model`` -> ``download_pretrained`` ->
``hf_hub_download``) reads them; any socket connection fails the test.

ViT-B-32/openai (the real registry entry) covers build, activation and checkpoint round trip; the ONNX
export + parity runs on a tiny architecture registered with an OpenAI-style QuickGELU tag (the same code
path; a ViT-B-32 MER-CLIP is four ~88M-parameter towers, whose export and parity take minutes on 2 cores).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import socket
from pathlib import Path

import open_clip
import pytest
import torch
from merclip.model import MerClipConfig, build_model, create_clip, load_checkpoint, save_checkpoint
from merclip.model.factory import TINY_CLIP, arch_quick_gelu
from open_clip.constants import HF_SAFE_WEIGHTS_NAME
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from torch import nn

from merclip.errors import MerClipError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # open_clip's own chatter; asserted where it matters


# ---- an offline Hugging Face cache ------------------------------------------------------------------------
def _hf_repo(tag_cfg: dict) -> tuple[str, str]:
    """(repo id, file name) open_clip's download_pretrained asks the hub for, from a registry entry."""
    repo_id, filename = os.path.split(tag_cfg["hf_hub"])
    # A trailing slash means "the default weights file": open_clip asks for the safetensors one first.
    return repo_id, filename or HF_SAFE_WEIGHTS_NAME


def put_in_hf_cache(cache: Path, repo_id: str, filename: str, state: dict) -> Path:
    """Store ``state`` as huggingface_hub would after downloading ``repo_id``/``filename`` at ``main``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir(exist_ok=True)
    tmp = repo / "blobs" / "incoming"
    save_file(state, str(tmp))
    blob = repo / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()  # LFS files: etag = sha256
    tmp.replace(blob)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / filename).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot / filename


def stand_in_weights(model: nn.Module, seed: int) -> dict:
    """The model's own keys and shapes, every value random (no LayerNorm left at 1, no bias at 0)."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: (v + 0.02 * torch.randn(v.shape, generator=g, dtype=v.dtype)).contiguous()
        for k, v in model.state_dict().items()
    }


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE with an empty cache in tmp_path; any network connection fails the test."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for name, value in {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(cache)}.items():
        monkeypatch.setenv(name, value)
    # huggingface_hub reads these at import time; hf_hub_download looks them up on its constants module.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError(f"a test tried to reach the network: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return cache


def gelus(module: nn.Module) -> list[nn.Module]:
    """The activation of every transformer block's MLP."""
    return [m for name, m in module.named_modules() if name.endswith("mlp.gelu")]


# ---- ViT-B-32 / openai, the real registry entry --------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_b32_openai_state():
    torch.manual_seed(0)
    return stand_in_weights(open_clip.create_model("ViT-B-32"), seed=1234)


@pytest.fixture
def vit_b32_openai(offline_hub, vit_b32_openai_state):
    tag = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    assert tag["quick_gelu"] is True  # open_clip's record: OpenAI trained with QuickGELU
    repo_id, filename = _hf_repo(tag)
    assert (repo_id, filename) == ("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors")
    return put_in_hf_cache(offline_hub, repo_id, filename, vit_b32_openai_state), vit_b32_openai_state


def test_the_cache_is_what_huggingface_hub_reads(vit_b32_openai, offline_hub):
    from huggingface_hub import hf_hub_download, scan_cache_dir

    path, _ = vit_b32_openai
    scan = scan_cache_dir(offline_hub)
    (repo,) = scan.repos
    assert not scan.warnings and repo.repo_id == "timm/vit_base_patch32_clip_224.openai" and set(repo.refs) == {"main"}
    (revision,) = repo.revisions
    assert [f.file_name for f in revision.files] == ["open_clip_model.safetensors"]
    got = hf_hub_download("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors")
    assert Path(got) == path


def test_openai_weights_build_quick_gelu_and_survive_checkpoint(vit_b32_openai, tmp_path):
    _, state = vit_b32_openai
    torch.manual_seed(99)  # a random init differs from the stand-in: equality below means "read from the cache"
    model = build_model(MerClipConfig(arch="ViT-B-32"), weights="openai")

    # The activation the weights were trained with, in all four towers (old behaviour: nn.GELU).
    acts = gelus(model)
    assert len(acts) == 4 * 12 and all(type(a) is QuickGELU for a in acts)
    assert model.cfg.quick_gelu is True and model.arch.activation == "quick_gelu"
    assert model.cfg.image_mean == tuple(open_clip.get_pretrained_cfg("ViT-B-32", "openai")["mean"])
    visual = model.vision.visual.state_dict()
    assert all(torch.equal(visual[k], state[f"visual.{k}"]) for k in visual)
    assert torch.equal(
        model.text.transformer.resblocks[5].mlp.c_fc.weight, state["transformer.resblocks.5.mlp.c_fc.weight"]
    )
    assert torch.equal(model.text.token_embedding.weight, state["token_embedding.weight"])

    path = tmp_path / "vitb32.safetensors"
    save_checkpoint(model, path, extra={"epoch": 1})
    loaded, extra = load_checkpoint(path, expect=MerClipConfig(arch="ViT-B-32"))  # None = "whatever it used"
    assert extra == {"epoch": 1} and loaded.cfg == model.cfg
    assert all(type(a) is QuickGELU for a in gelus(loaded)) and len(gelus(loaded)) == 48
    own, again = model.state_dict(), loaded.state_dict()
    assert own.keys() == again.keys() and all(torch.equal(own[k], again[k]) for k in own)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.encode_frames(image), loaded.encode_frames(image))


def test_quickgelu_name_with_a_local_file_is_the_same_model(vit_b32_openai):
    path, state = vit_b32_openai
    by_tag, tag_arch = create_clip("ViT-B-32", "openai")
    by_file, file_arch = create_clip("ViT-B-32-quickgelu", str(path))
    assert all(type(a) is QuickGELU for a in gelus(by_tag) + gelus(by_file))
    assert file_arch.quick_gelu and tag_arch.quick_gelu and file_arch.image_mean == tag_arch.image_mean
    a, b = by_tag.state_dict(), by_file.state_dict()
    assert a.keys() == b.keys() == state.keys() and all(torch.equal(a[k], b[k]) for k in a)
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = by_tag.encode_image(image)
        assert torch.equal(ours, by_file.encode_image(image))
        # What open_clip builds by itself for this tag (the old behaviour): nn.GELU, with a mere warning.
        with pytest.warns(UserWarning, match="QuickGELU mismatch"):
            plain = open_clip.create_model("ViT-B-32", pretrained="openai")
        assert all(type(a) is nn.GELU for a in gelus(plain))
        assert (plain.encode_image(image) - ours).abs().max() > 1e-3  # the activation matters for these weights


def test_tag_missing_from_the_cache_fails_in_one_line(offline_hub):
    with pytest.raises(MerClipError, match=r"ViT-B-32/openai .*offline\?") as err:
        create_clip("ViT-B-32", "openai")
    assert "\n" not in str(err.value)


def test_explicit_settings_must_agree_with_the_weights():
    with pytest.raises(MerClipError, match="quick_gelu=False contradicts pretrained weights ViT-B-32/openai"):
        create_clip("ViT-B-32", "openai", quick_gelu=False)
    with pytest.raises(MerClipError, match="contradicts the architecture name"):
        create_clip("ViT-B-32-quickgelu", "random", quick_gelu=False)
    assert arch_quick_gelu("ViT-B-32-quickgelu") and not arch_quick_gelu("ViT-B-32") and not arch_quick_gelu("tiny")


# ---- a tiny architecture with an OpenAI-style QuickGELU tag: build -> checkpoint -> export -> parity --------
TINY_ARCH = "MerTest-Tiny"
TINY_REPO = "merclip-test/tiny-clip-openai"


@pytest.fixture
def tiny_openai(offline_hub, monkeypatch):
    """Register TINY_ARCH in open_clip with an 'openai' tag that copies ViT-B-32/openai's record (QuickGELU,
    OpenAI normalisation) but points at TINY_REPO, and put random stand-in weights in the cache."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY_ARCH, copy.deepcopy(TINY_CLIP))
    record = dict(open_clip.get_pretrained_cfg("ViT-B-32", "openai"), url="", hf_hub=f"{TINY_REPO}/")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_ARCH, {"openai": record})
    state = stand_in_weights(open_clip.CLIP(**TINY_CLIP), seed=7)
    put_in_hf_cache(offline_hub, *_hf_repo(record), state)
    return state


def test_tiny_openai_tag_exports_quick_gelu_with_parity(tiny_openai, tmp_path):
    from merclip.export.cli import export_from_config
    from merclip.export.parity import check_parity
    from merclip.export.runtime import Bundle
    from rich.console import Console

    from merclip.config import Config, override

    torch.manual_seed(0)
    model = build_model(MerClipConfig(arch=TINY_ARCH), weights="openai")
    acts = gelus(model)
    assert len(acts) == 4 * 2 and all(type(a) is QuickGELU for a in acts)
    assert torch.equal(model.vision.visual.conv1.weight, tiny_openai["visual.conv1.weight"])
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(model, ckpt)

    # `merclip export --onnx --checkpoint`: reload (QuickGELU from the checkpoint's config), export, parity.
    printed = io.StringIO()
    out = tmp_path / "bundle"
    manifest = export_from_config(
        override(Config(), export={"parity_samples": 4}),
        out,
        checkpoint=str(ckpt),
        console=Console(file=printed, width=400),
    )
    assert manifest["model"]["activation"] == "quick_gelu" and manifest["model_config"]["quick_gelu"] is True
    assert json.loads((out / "manifest.json").read_text())["model"]["activation"] == "quick_gelu"
    assert "activation quick_gelu" in printed.getvalue() and "parity torch vs onnxruntime (fp32" in printed.getvalue()

    loaded, _ = load_checkpoint(ckpt)
    assert all(type(a) is QuickGELU for a in gelus(loaded))
    bundle = Bundle.load(out, providers="cpu")
    assert check_parity(loaded, bundle, count=4).max_abs_diff <= 1e-4
    # The check has teeth: the same weights with nn.GELU (what the old reload built) do not match the bundle.
    gelu_twin = build_model(MerClipConfig(arch=TINY_ARCH, quick_gelu=False))
    gelu_twin.load_state_dict(loaded.state_dict())
    assert all(type(a) is nn.GELU for a in gelus(gelu_twin.eval()))
    gelu_diff = check_parity(gelu_twin, bundle, count=4).max_abs_diff
    assert gelu_diff > 1e-3, gelu_diff


# ---- checkpoints written before the activation was recorded, and malformed ones --------------------------
def _rewrite_metadata(src: Path, dst: Path, **meta) -> Path:
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        old = f.metadata()
    save_file(tensors, str(dst), metadata={k: v for k, v in {**old, **meta}.items() if v is not None})
    return dst


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(tiny_model, path)
    return path


def test_old_checkpoint_without_activation_loads_as_it_was_built(tiny_ckpt, tmp_path):
    data = json.loads(_read_meta(tiny_ckpt)["config"])
    assert data["quick_gelu"] is False
    for key in ("quick_gelu", "image_mean", "image_std"):
        del data[key]
    old = _rewrite_metadata(tiny_ckpt, tmp_path / "old.safetensors", config=json.dumps(data))
    model, _ = load_checkpoint(old)
    assert model.cfg.quick_gelu is False and all(type(a) is nn.GELU for a in gelus(model))


def _read_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _edit(**changes):
    """A config edit: set keys (mel keys as ``mel__key``), or drop those set to _DROP."""

    def apply(data: dict) -> dict:
        for key, value in changes.items():
            where, key = (data["mel"], key[5:]) if key.startswith("mel__") else (data, key)
            if value is _DROP:
                where.pop(key)
            else:
                where[key] = value
        return data

    return apply


_DROP = object()


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"config": None}, "no 'config' entry"),
        ({"config": "{not json"}, "'config' metadata is not valid JSON"),
        ({"config": "[1, 2]"}, "must be a JSON object, got a list"),
        ({"extra": "[]"}, "'extra' metadata must be a JSON object"),
        ({"extra": "{oops"}, "'extra' metadata is not valid JSON"),
        (_edit(arch=_DROP), "lacks arch"),
        (_edit(mel__sample_rate=_DROP), "lacks mel.sample_rate"),
        (_edit(colour="blue"), "unknown keys: colour"),
        (_edit(mel__colour=1), "mel has unknown keys: colour"),
        (_edit(decoder_heads="8"), "decoder_heads must be an integer >= 1, got '8'"),
        (_edit(decoder_heads=True), "decoder_heads must be an integer"),
        (_edit(text_context_length=7.5), "text_context_length must be an integer"),
        (_edit(emotion_labels="happy"), "emotion_labels must be a non-empty list"),
        (_edit(sentiment_labels=[1, 2]), "sentiment_labels must be a non-empty list"),
        (_edit(variant=3), "variant must be a string, got 3"),
        (_edit(variant="bigger"), "variant must be one of"),
        (_edit(mel=5), "mel must be an object"),
        (_edit(mel__n_fft="big"), "mel.n_fft must be an integer >= 1, got 'big'"),
        (_edit(quick_gelu="yes"), "quick_gelu must be true, false or null"),
        (_edit(image_mean=[0.5, 0.5]), "image_mean must be null or a list of 3 numbers"),
        (_edit(decoder_heads=3), "model.decoder_heads = 3 does not divide the decoder width 64"),
    ],
)
def test_malformed_checkpoint_metadata_is_one_clear_line(tiny_ckpt, tmp_path, meta, message):
    if callable(meta):
        meta = {"config": json.dumps(meta(json.loads(_read_meta(tiny_ckpt)["config"])))}
    bad = _rewrite_metadata(tiny_ckpt, tmp_path / "bad.safetensors", **meta)
    with pytest.raises(MerClipError) as err:
        load_checkpoint(bad)
    text = str(err.value)
    assert message in text and str(bad) in text and "\n" not in text


def test_config_schema_covers_every_field(tiny_model):
    from dataclasses import fields

    from merclip.model.audio import MelConfig
    from merclip.model.config import _CONFIG_KINDS, _MEL_KINDS

    assert set(_CONFIG_KINDS) == {f.name for f in fields(MerClipConfig)}
    assert set(_MEL_KINDS) == {f.name for f in fields(MelConfig)}
    cfg = tiny_model.cfg
    assert MerClipConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
