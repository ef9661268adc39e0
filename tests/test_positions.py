"""The model must know where a token is: tests that fail when attention ignores positions.

A frame that is entirely mask tokens carries no content of its own, so whatever makes its
positions differ must come from the positional encoding (3D RoPE in attention, or the learned
absolute tables of the ablation baseline). Without it self-attention is permutation-equivariant:
every masked token would get the same feature, and rearranging the conditioning frame's tokens
would change nothing, so a model could never learn to continue a frame where things are.
"""

from __future__ import annotations

import pytest
import torch

import core.attention
from helpers import tiny
from core.model import VideoMAR


def _masked_next_frame(model: VideoMAR, first: torch.Tensor) -> torch.Tensor:
    """Features (S, W) of frame 1, entirely masked, after the clean frame `first` (h, w, D)."""
    tokens = torch.stack([first, torch.zeros_like(first)])[None]  # (1, 2, h, w, D)
    mask = torch.zeros(1, 2, first.shape[0] * first.shape[1], dtype=torch.bool)
    mask[:, 1] = True
    with torch.no_grad():
        return model.backbone(tokens, mask, 0)[0, 1]


@pytest.fixture(params=["rope", "learned"])
def model(request) -> VideoMAR:
    return VideoMAR(tiny(pos_emb=request.param, text_dim=0), seed=3).eval()


def _frame(seed: int, model: VideoMAR) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 4, model.cfg.token_dim, generator=g)


def test_masked_tokens_differ_by_position(model):
    feats = _masked_next_frame(model, _frame(0, model))
    spread = (feats - feats.mean(0)).norm(dim=-1)  # distance of each position from the mean
    assert spread.min() > 1e-3 * feats.norm(dim=-1).mean()


def test_rearranging_the_conditioning_frame_changes_the_next_frame(model):
    first = _frame(1, model)
    shuffled = first.reshape(16, -1)[torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    a = _masked_next_frame(model, first)
    b = _masked_next_frame(model, shuffled.reshape(first.shape))
    assert (a - b).abs().max() > 1e-3 * a.abs().mean()


def test_the_tests_above_fail_without_positions(monkeypatch):
    """Guard for the guards: with RoPE switched off in attention both properties break."""
    monkeypatch.setattr(core.attention, "apply_rope", lambda qk, cos, sin: qk)
    model = VideoMAR(tiny(pos_emb="rope", text_dim=0), seed=3).eval()
    feats = _masked_next_frame(model, _frame(0, model))
    assert torch.allclose(feats, feats[:1].expand_as(feats), atol=1e-5)
    first = _frame(1, model)
    shuffled = first.reshape(16, -1).flip(0).reshape(first.shape)
    assert torch.allclose(_masked_next_frame(model, first), _masked_next_frame(model, shuffled),
                          atol=1e-5)
