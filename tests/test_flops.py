"""Analytic FLOP counts (core/flops.py) against what torch executes, and the SDPA counting trap."""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from core.config import ModelConfig, SamplerConfig
from core.flops import (expected_num_masked, generate_frame_flops, generate_video_flops,
                        measured_flops, measured_flops_by_op, train_step_breakdown,
                        train_step_flops)
from core.masks import num_masked_tokens, sample_mask_ratio
from core.model import VideoMAR
from core.sampler import sample_latents

TOL = 0.02  # "within a few percent"; the formulas are exact in practice


def _train_step(model, tokens, captions, draws):
    def step():
        model.zero_grad(set_to_none=True)
        model(tokens, captions, draws).backward()
    return step


@pytest.mark.parametrize("attn,targets", [("causal", "one"), ("causal", "all"), ("full", "one")])
@pytest.mark.parametrize("frames,grid,batch", [(4, (8, 8), 2), (3, (4, 6), 1), (6, (2, 2), 3)])
def test_train_step_analytic_matches_flop_counter(attn, targets, frames, grid, batch):
    cfg = ModelConfig(attn=attn, target_frames=targets)  # the tiny preset
    model = VideoMAR(cfg)
    tokens = torch.randn(batch, frames, *grid, cfg.token_dim,
                         generator=torch.Generator().manual_seed(0))
    draws = model.sample_train_draws(batch, frames, grid, torch.Generator().manual_seed(1))
    measured = measured_flops(_train_step(model, tokens, ["a red ball"] * batch, draws))
    pinned = {"num_masked": draws.num_masked}
    if draws.target_frame >= 0:
        pinned["target_frame"] = draws.target_frame
    analytic = train_step_flops(cfg, batch, frames, grid, **pinned)
    assert measured > 0
    assert abs(analytic / measured - 1) < TOL, (analytic, measured)


def test_without_text_and_other_widths():
    cfg = ModelConfig(width=64, depth=2, num_heads=2, text_dim=0, mlp_ratio=2.0, head_depth=2,
                      head_width=48, diffusion_batch_mul=2)
    model = VideoMAR(cfg)
    tokens = torch.randn(2, 3, 4, 4, cfg.token_dim, generator=torch.Generator().manual_seed(0))
    draws = model.sample_train_draws(2, 3, (4, 4), torch.Generator().manual_seed(2))
    measured = measured_flops(_train_step(model, tokens, None, draws))
    analytic = train_step_flops(cfg, 2, 3, (4, 4), target_frame=draws.target_frame,
                                num_masked=draws.num_masked)
    assert abs(analytic / measured - 1) < TOL


def test_plain_flop_counter_misses_cpu_attention_and_ours_does_not():
    q = torch.randn(1, 2, 16, 8)
    out = {}
    with FlopCounterMode(display=False) as plain:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    _, out = measured_flops_by_op(torch.nn.functional.scaled_dot_product_attention, q, q, q)
    assert plain.get_total_flops() == 0  # the trap (stack.md section 3)
    assert sum(out.values()) == 4 * 2 * 16 * 16 * 8  # QK^T + PV, dense


@pytest.mark.parametrize("cfg_scale", [1.0, 2.0])
@pytest.mark.parametrize("attn,use_cache", [("causal", True), ("causal", False), ("full", False)])
def test_generation_analytic_matches_flop_counter(attn, use_cache, cfg_scale):
    cfg = ModelConfig(attn=attn, num_sampling_steps=3)
    model = VideoMAR(cfg).eval()
    cond = torch.randn(2, 1, 4, 4, cfg.token_dim, generator=torch.Generator().manual_seed(0))
    sampler = SamplerConfig(num_iter=4, use_kv_cache=use_cache, cfg_scale=cfg_scale)
    measured = measured_flops(sample_latents, model, cond, 4, sampler,
                              torch.Generator().manual_seed(0), ["a", "b"])
    mode = "joint" if attn == "full" else ("cached" if use_cache else "recompute")
    analytic = generate_video_flops(cfg, 4, (4, 4), mode=mode, num_iter=4, batch=2,
                                    cfg_scale=cfg_scale)
    assert abs(analytic["total"] / measured - 1) < TOL
    assert analytic["total"] == pytest.approx(analytic["backbone"] + analytic["head"]
                                              + analytic["text"])


@pytest.mark.parametrize("window", [1, 2])
def test_windowed_analytic_matches_flop_counter(window):
    """model.temporal_window: training and recompute stay dense; cached passes see fewer keys."""
    cfg = ModelConfig(num_sampling_steps=2, temporal_window=window)
    model = VideoMAR(cfg)
    tokens = torch.randn(2, 5, 4, 4, cfg.token_dim, generator=torch.Generator().manual_seed(0))
    draws = model.sample_train_draws(2, 5, (4, 4), torch.Generator().manual_seed(1))
    draws.target_frame = 4  # beyond the window of the anchor
    measured = measured_flops(_train_step(model, tokens, ["a", "b"], draws))
    analytic = train_step_flops(cfg, 2, 5, (4, 4), target_frame=4, num_masked=draws.num_masked)
    assert abs(analytic / measured - 1) < TOL, (analytic, measured)
    model.eval()
    cond = tokens[:, :1]
    for use_cache in (True, False):
        sampler = SamplerConfig(num_iter=2, use_kv_cache=use_cache, cfg_scale=2.0)
        measured = measured_flops(sample_latents, model, cond, 6, sampler,
                                  torch.Generator().manual_seed(0), ["a", "b"])
        analytic = generate_video_flops(cfg, 6, (4, 4), mode="cached" if use_cache else "recompute",
                                        num_iter=2, batch=2, cfg_scale=2.0)
        assert abs(analytic["total"] / measured - 1) < TOL, (use_cache, analytic["total"], measured)


def test_expectation_over_draws():
    cfg = ModelConfig()
    frames, grid = 5, (4, 4)
    pinned = [train_step_flops(cfg, 2, frames, grid, target_frame=f, num_masked=10)
              for f in range(1, frames)]
    mean = train_step_flops(cfg, 2, frames, grid, num_masked=10)
    assert mean == pytest.approx(sum(pinned) / len(pinned))
    # Later target frames cost more (the clip is truncated at the target).
    assert pinned == sorted(pinned) and pinned[0] < pinned[-1]
    # E[ceil(N r)] agrees with the model's own sampler of the mask ratio.
    g = torch.Generator().manual_seed(0)
    draws = [num_masked_tokens(16, sample_mask_ratio(g)) for _ in range(4000)]
    empirical = sum(draws) / len(draws)
    assert expected_num_masked(cfg, 16) == pytest.approx(empirical, abs=0.1)
    assert 0.7 * 16 <= expected_num_masked(cfg, 16) <= 16


def test_cache_saves_flops_and_grows_linearly_with_the_frame_index():
    cfg = ModelConfig()
    cached = [generate_frame_flops(cfg, f, (8, 8)) for f in (1, 8, 16)]
    recompute = [generate_frame_flops(cfg, f, (8, 8), use_kv_cache=False) for f in (1, 8, 16)]
    assert all(c < r for c, r in zip(cached[1:], recompute[1:]))
    # The cached frame's cost grows only through attention to the cache (linear in f).
    step1, step2 = cached[1] - cached[0], cached[2] - cached[1]
    assert step2 / 8 == pytest.approx(step1 / 7, rel=1e-9)
    video = generate_video_flops(cfg, 6, (8, 8))
    assert len(video["per_frame"]) == 5
    assert generate_video_flops(cfg, 6, (8, 8), mode="recompute")["backbone"] > video["backbone"]


def test_train_breakdown_components_add_up():
    parts = train_step_breakdown(ModelConfig(), 4, 8, (8, 8))
    assert parts["total"] == pytest.approx(parts["backbone"] + parts["head"] + parts["text"])
    assert parts["total"] == pytest.approx(parts["forward"] + parts["backward"])
    assert 2.0 < parts["backward"] / parts["forward"] < 2.6


def test_bad_arguments_fail_clearly():
    cfg = ModelConfig()
    with pytest.raises(ValueError, match="num_frames"):
        train_step_flops(cfg, 2, 1, (4, 4))
    with pytest.raises(ValueError, match="target_frame"):
        train_step_flops(cfg, 2, 4, (4, 4), target_frame=4)
    with pytest.raises(ValueError, match="grid"):
        train_step_flops(cfg, 2, 4, (0, 4))
    with pytest.raises(ValueError, match="num_iter"):
        generate_frame_flops(cfg, 1, (2, 2), num_iter=5)
    with pytest.raises(ValueError, match="frame_index"):
        generate_frame_flops(cfg, 0, (4, 4))
    with pytest.raises(ValueError, match="joint"):
        generate_video_flops(dataclasses.replace(cfg, attn="full"), 4, (4, 4), mode="cached")
    with pytest.raises(ValueError, match="use_kv_cache"):
        generate_frame_flops(dataclasses.replace(cfg, attn="full"), 1, (4, 4))
