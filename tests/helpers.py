"""Small shared builders for the sampler/window tests (not a test module)."""

from __future__ import annotations

import torch

from core.config import ModelConfig
from core.model import VideoMAR


def tiny(**kw) -> ModelConfig:
    """A seconds-fast text-conditioned model config; keyword arguments override it."""
    base = dict(width=32, depth=2, num_heads=2, text_dim=16, text_len=8, head_width=32,
                head_depth=2, num_sampling_steps=4)
    return ModelConfig(**{**base, **kw})


def trained_like(model: VideoMAR) -> VideoMAR:
    """Give the zero-initialised head non-zero outputs so the tests exercise real sampling."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()
