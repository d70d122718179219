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
