"""Temporal attention window with an anchor on the conditioning frames (model.temporal_window).

A frame attends to the conditioning frames, its W previous frames and itself; the KV cache keeps
just those frames, so cached sampling must give the video the recompute path gives (which uses
the training mask). Tiny models, few frames and head steps: every test runs in about a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from core.config import ConfigError, ModelConfig, SamplerConfig, TrainConfig
from core.flops import attended_frames, generate_frame_flops
from core.kv_cache import KVCache
from core.pattern import AttentionPattern
from core.masks import block_causal_mask, frame_visibility
from core.model import VideoMAR
from core.sampler import sample_latents
from core.train import train
from tests.helpers import tiny, trained_like

BENCH = Path(__file__).resolve().parents[1] / "bench"


def tokens(batch=2, frames=5, h=2, w=2, dim=48, seed=0) -> torch.Tensor:
    return torch.randn(batch, frames, h, w, dim, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- mask


@pytest.mark.parametrize("window,anchor", [(1, 1), (2, 1), (1, 2), (3, 2), (5, 1)])
def test_windowed_mask_sees_anchor_window_and_own_frame_only(window, anchor):
    frames, per_frame = 7, 3
    mask = block_causal_mask(frames, per_frame, window=window, anchor_frames=anchor)
    assert mask.shape == (frames * per_frame, frames * per_frame)
    for q in range(frames):
        for k in range(frames):
            block = mask[q * per_frame:(q + 1) * per_frame, k * per_frame:(k + 1) * per_frame]
            assert block.all() or not block.any(), "a frame is seen whole or not at all"
            expected = k <= q and (k < anchor or k >= q - window)
            assert bool(block[0, 0]) == expected, (q, k)
        seen = [k for k in range(frames) if mask[q * per_frame, k * per_frame]]
        assert q in seen and all(a in seen for a in range(min(anchor, q + 1)))
        assert len(seen) == min(q + 1, anchor + window + 1)


def test_window_zero_is_the_block_causal_mask_exactly():
    frame = torch.arange(5).repeat_interleave(4)
    old = frame[None, :] <= frame[:, None]  # VideoMAR's mask as it was defined
    assert torch.equal(block_causal_mask(5, 4), old)
    assert torch.equal(block_causal_mask(5, 4, window=0, anchor_frames=2), old)
    with pytest.raises(ValueError, match="window"):
        frame_visibility(frame, frame, window=-1)


def test_one_layer_features_ignore_frames_outside_the_window():
    """With depth 1 a frame's features depend only on anchor + window (deeper models widen the
    receptive field by W frames per layer, exactly as the KV cache reproduces it)."""
    model = VideoMAR(tiny(depth=1, temporal_window=1)).eval()
    x = tokens(frames=5)
    base = model.backbone(x, None, 0)
    far = x.clone()
    far[:, 2] += 3.0  # outside frame 4's window {0 (anchor), 3, 4}
    out = model.backbone(far, None, 0)
    assert torch.equal(out[:, 4], base[:, 4]) and torch.equal(out[:, :2], base[:, :2])
    assert not torch.allclose(out[:, 3], base[:, 3])  # frame 2 is inside frame 3's window
    anchor = x.clone()
    anchor[:, 0] += 3.0  # the anchor reaches every frame
    assert not torch.allclose(model.backbone(anchor, None, 0)[:, 4], base[:, 4])


# ----------------------------------------------------------------------------- KV cache


def test_cache_keeps_anchor_and_last_window_frames_in_bounded_slots():
    model = VideoMAR(tiny(temporal_window=2, num_cond_frames=1))
    cache = model.new_cache(2, 10, 4)
    assert cache.max_len == (1 + 2 + 1) * 4  # anchor + window + the frame being generated
    x = tokens(frames=10, h=2, w=2)
    with torch.no_grad():
        model.backbone(x[:, :1], None, 0, cache=cache, commit=True)
        for f in range(1, 8):
            model.backbone(x[:, f:f + 1], None, f, cache=cache, commit=True)
            assert cache.length == (f + 1) * 4
            assert cache.held_frames() == [0] + list(range(max(1, f - 1), f + 1))
            assert cache.stored == len(cache.held_frames()) * 4


def test_windowed_cache_matches_the_full_forward_with_multi_frame_passes():
    """Keys stay RoPE-rotated at their absolute frame after eviction, and a multi-frame pass
    against the cache gets the banded mask: features equal the uncached windowed forward."""
    model = VideoMAR(tiny(temporal_window=1)).eval()
    x = tokens(frames=6)
    ctx, ctx_mask = model.encode_context(["a", "b"], 2)
    full = model.backbone(x, None, 0, ctx, ctx_mask)
    cache = KVCache(model.cfg.depth, 2, model.cfg.num_heads, 6 * 4, model.cfg.head_dim,
                    frame_len=4, pattern=AttentionPattern(window=1, anchor=1))
    prefill = model.backbone(x[:, :4], None, 0, ctx, ctx_mask, cache, commit=True)
    assert cache.held_frames() == [0, 3]  # frames 1 and 2 evicted
    rest = model.backbone(x[:, 4:], None, 4, ctx, ctx_mask, cache)  # frame 5 must not see 3
    torch.testing.assert_close(prefill, full[:, :4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rest, full[:, 4:], atol=1e-5, rtol=1e-5)


@pytest.fixture
def float64():
    """Caching is an exact rewrite of the computation: in float64 the two paths agree to ~1e-15,
    where float32 rounding, amplified by the head's sampling chain, can reach 5e-4 on one token
    on some CPUs (seen with AVX512 kernels)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("window,num_cond,cfg_scale", [(2, 1, 1.0), (1, 1, 2.0), (1, 2, 1.0)])
def test_cached_and_recompute_sampling_agree_under_a_window(window, num_cond, cfg_scale, float64):
    model = trained_like(VideoMAR(tiny(temporal_window=window, num_cond_frames=num_cond)))
    cond = tokens(frames=num_cond, h=3, w=3, seed=1).clamp(-1, 1)
    caps = ["a red circle", "a blue square"]
    video = {}
    for use_cache in (True, False):
        sampler = SamplerConfig(num_iter=2, cfg_scale=cfg_scale, use_kv_cache=use_cache)
        video[use_cache] = sample_latents(model, cond, num_cond + 5, sampler,
                                          torch.Generator().manual_seed(3), caps)
    assert video[True].dtype == torch.float64
    diff = (video[True] - video[False]).abs().max()
    assert diff < 1e-10, f"cached vs recompute under window {window}: max {diff:.2e}"
    # Frames up to num_cond + window see every earlier frame: only later ones differ from the
    # unlimited model (same seed, same weights).
    unlimited_model = trained_like(VideoMAR(tiny(num_cond_frames=num_cond)))
    unlimited = sample_latents(unlimited_model, cond, num_cond + 5,
                               SamplerConfig(num_iter=2, cfg_scale=cfg_scale),
                               torch.Generator().manual_seed(3), caps)
    same = num_cond + window + 1
    torch.testing.assert_close(unlimited[:, :same], video[True][:, :same], atol=1e-6, rtol=0)
    assert not torch.allclose(unlimited[:, -1], video[True][:, -1])


# ----------------------------------------------------------------------------- training, config


class RandomClips(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(100 + i)
        return {"video": torch.rand(5, 3, 8, 8, generator=g), "caption": f"clip {i}", "index": i}


def test_training_runs_with_a_window():
    model = VideoMAR(tiny(temporal_window=1), seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(steps=2, batch_size=2, warmup_steps=0, ckpt_every=0, log_every=1)
    summary = train(model, RandomClips(), cfg, seed=0, out_dir=None, progress=False)
    assert summary["steps"] == 2 and all(torch.isfinite(torch.tensor(summary["losses"])))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    # The loss sees the window: a late target frame's loss differs from the unlimited model's.
    clip = tokens(frames=5)
    draws = model.sample_train_draws(2, 5, (2, 2), torch.Generator().manual_seed(0))
    draws.target_frame = 4
    unlimited = VideoMAR(tiny(), seed=0)
    unlimited.load_state_dict(model.state_dict())
    assert not torch.equal(model(clip, ["a", "b"], draws), unlimited(clip, ["a", "b"], draws))


def test_config_errors_name_the_field():
    assert ModelConfig().temporal_window == 0
    with pytest.raises(ConfigError, match="temporal_window=-1"):
        ModelConfig(temporal_window=-1)
    with pytest.raises(ConfigError, match="attn='causal'"):
        ModelConfig(attn="full", temporal_window=2)
    ModelConfig(attn="full", temporal_window=0)


# ----------------------------------------------------------------------------- cost


def test_windowed_frame_cost_stops_growing():
    cfg = ModelConfig(temporal_window=2)  # anchor 1 + window 2 + the frame itself
    assert [attended_frames(cfg, f) for f in range(1, 7)] == [2, 3, 4, 4, 4, 4]
    costs = [generate_frame_flops(cfg, f, (8, 8)) for f in (3, 8, 16)]
    assert costs[0] == costs[1] == costs[2]
    assert costs[2] < generate_frame_flops(ModelConfig(), 16, (8, 8))
    # Recompute (dense SDPA over the whole clip) costs the same with or without a window.
    assert generate_frame_flops(cfg, 8, (8, 8), use_kv_cache=False) == \
        generate_frame_flops(ModelConfig(), 8, (8, 8), use_kv_cache=False)


def test_kv_cache_bench_reports_the_windowed_ratio(capsys):
    spec = importlib.util.spec_from_file_location("bench_kv_cache_window", BENCH / "kv_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--frames", "4", "--grid", "4", "--steps", "2", "--num-iter", "2",
                       "--batch", "2", "--modes", "cached,recompute", "--window-check", "1",
                       "--no-results"])
    assert out["window"] == 1 and out["temporal_window"] == 0
    assert out["last_over_first_frame_window"] > 0 and out["cached_window_backbone_s"] > 0
    assert out["analytic_last_over_first_window"] < out["analytic_last_over_first_frame"]
    assert out["kv_cache_mb_window"] < out["kv_cache_mb"]
    assert "temporal_window=1" in capsys.readouterr().out
