"""bf16 autocast (as on a GPU, here torch.autocast("cpu")) against fp32: training loss and sampling.

Tolerances: the loss of a step within 1 % relative; sampled videos within 0.02 mean absolute
difference in [0, 1] pixels (a few tokens may land elsewhere: sampling amplifies rounding). The
KV cache holds K/V in the compute dtype.
"""

from __future__ import annotations

import torch

from core.config import ModelConfig
from core.model import VideoMAR
from core.sampler import sample_video

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _model() -> VideoMAR:
    model = VideoMAR(ModelConfig(width=64, depth=2, num_heads=2, head_width=64,
                                 num_sampling_steps=5), seed=0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # away from the zero-initialised start, where outputs ignore inputs
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_bf16_training_loss_matches_fp32():
    model = _model().train()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 3, 4, 4, model.cfg.token_dim, generator=g)
    fp32 = model.loss(tokens, ["a", "b"], torch.Generator().manual_seed(3))
    with torch.autocast(**BF16):
        bf16 = model.loss(tokens, ["a", "b"], torch.Generator().manual_seed(3))
    bf16.backward()
    assert abs(bf16.item() - fp32.item()) < 0.01 * abs(fp32.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bf16_sampling_matches_fp32_and_caches_in_bf16():
    model = _model().eval()
    frame = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    fp32 = sample_video(model, frame, 3, num_iter=2, captions=["a", "b"])
    with torch.autocast(**BF16):
        assert model.new_cache(1, 3, 16).k.dtype == torch.bfloat16
        bf16 = sample_video(model, frame, 3, num_iter=2, captions=["a", "b"])
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert (bf16 - fp32).abs().mean() < 0.02
    assert model.new_cache(1, 3, 16).k.dtype == torch.float32  # outside autocast: fp32
