"""model.target_frames="all": every generated frame trained in one pass, each exactly as the
single-target next-frame step would see it (clean earlier frames, its own visible tokens)."""

import pytest
import torch

from core.config import ConfigError, ModelConfig
from core.masks import block_causal_mask, teacher_forcing_mask
from core.model import VideoMAR


def test_mask_structure():
    # T=3, c=1: clean frames 0, 1 then masked frames 1, 2 (one token each).
    m = teacher_forcing_mask(3, 1, 1)
    want = torch.tensor([[1, 0, 0, 0],   # clean 0 sees clean 0
                         [1, 1, 0, 0],   # clean 1 sees clean 0, 1
                         [1, 0, 1, 0],   # masked 1 sees clean 0 and itself, not clean 1
                         [1, 1, 0, 1]],  # masked 2 sees clean 0, 1 and itself
                        dtype=torch.bool)
    assert torch.equal(m, want)
    # The clean stream alone is the block-causal mask.
    assert torch.equal(teacher_forcing_mask(5, 2, 1)[:8, :8], block_causal_mask(4, 2))


def test_windowed_mask_drops_the_same_frames_as_the_single_target_step():
    m = teacher_forcing_mask(5, 1, 1, window=1)  # clean 0..3, masked 1..4
    masked_4 = m[-1]
    assert masked_4.tolist() == [True, False, False, True, False, False, False, True]


@pytest.mark.parametrize("window", [0, 2])
def test_every_masked_frame_gets_its_single_target_features(window):
    cfg = ModelConfig(target_frames="all", temporal_window=window, depth=2)
    model = VideoMAR(cfg, seed=3).eval()
    g = torch.Generator().manual_seed(0)
    batch, frames, grid = 2, 5, (3, 4)
    per_frame = grid[0] * grid[1]
    tokens = torch.randn(batch, frames, *grid, cfg.token_dim, generator=g)
    mask = torch.rand(batch, frames - 1, per_frame, generator=g) < 0.7
    context, context_mask = model.encode_context(["a red ball", "two squares"], batch)
    with torch.no_grad():
        got = model.teacher_forced(tokens, mask, context, context_mask)
        for f in range(1, frames):
            full_mask = torch.zeros(batch, f + 1, per_frame, dtype=torch.bool)
            full_mask[:, f] = mask[:, f - 1]
            want = model.backbone(tokens[:, :f + 1], full_mask, 0, context, context_mask)[:, f]
            torch.testing.assert_close(got[:, f - 1], want, atol=1e-5, rtol=1e-5)


def test_later_frames_cannot_reach_earlier_losses():
    cfg = ModelConfig(target_frames="all", depth=2)
    model = VideoMAR(cfg, seed=0)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(1, 4, 2, 2, cfg.token_dim, generator=g, requires_grad=True)
    mask = torch.ones(1, 3, 4, dtype=torch.bool)
    out = model.teacher_forced(tokens, mask)
    weights = torch.randn(out[:, 1].shape, generator=g)  # a plain sum is flat through LayerNorm
    (out[:, 1] * weights).sum().backward()  # masked frame 2 depends on clean frames 0, 1 only
    touched = tokens.grad.abs().sum(dim=(0, 2, 3, 4)) > 0
    assert touched.tolist() == [True, True, False, False]


def test_loss_covers_every_generated_frame_and_is_deterministic():
    cfg = ModelConfig(target_frames="all")
    model = VideoMAR(cfg, seed=0)
    tokens = torch.randn(2, 4, 2, 2, cfg.token_dim, generator=torch.Generator().manual_seed(0))
    draws = model.sample_train_draws(2, 4, (2, 2), torch.Generator().manual_seed(1))
    assert draws.target_frame == -1 and draws.orders.shape == (2, 3 * 4)
    a = model(tokens, ["x", "y"], draws)
    b = model(tokens, ["x", "y"], draws)
    assert torch.isfinite(a) and torch.equal(a, b)


def test_unknown_value_is_a_clear_error():
    with pytest.raises(ConfigError, match="target_frames"):
        ModelConfig(target_frames="some")


def test_all_frames_needs_causal_attention():
    with pytest.raises(ConfigError, match="target_frames='one'"):
        ModelConfig(attn="full", target_frames="all")
    assert ModelConfig(attn="full").trains_all_frames
    assert ModelConfig(target_frames="all").trains_all_frames
    assert not ModelConfig().trains_all_frames
