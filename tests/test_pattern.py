"""The attention pattern is the one owner of "which frame sees which" (core/pattern.py)."""

from __future__ import annotations

import pytest
import torch

from core.config import ModelConfig
from core.masks import block_causal_mask, teacher_forcing_mask
from core.pattern import AttentionPattern

CAUSAL, FULL = AttentionPattern(), AttentionPattern(causal=False)
WINDOW = AttentionPattern(window=2, anchor=1)


def test_the_model_config_names_its_pattern():
    assert ModelConfig().pattern == CAUSAL
    assert ModelConfig(attn="full").pattern == FULL
    assert ModelConfig(temporal_window=2).pattern == WINDOW
    assert ModelConfig(attn="full").trains_all_frames and not ModelConfig().trains_all_frames


def test_full_attention_hides_nothing_and_caches_nothing():
    assert FULL.sdpa_mask(4, 3) is None
    assert bool(FULL.visible(torch.arange(4), torch.arange(4)).all())
    with pytest.raises(ValueError, match="nothing to cache"):
        FULL.cache_frames(8)
    with pytest.raises(ValueError, match="causal pattern"):
        FULL.teacher_forcing_mask(4, 2)
    with pytest.raises(ValueError, match="needs the causal pattern"):
        AttentionPattern(causal=False, window=1)


@pytest.mark.parametrize("pattern", [CAUSAL, WINDOW, AttentionPattern(window=1, anchor=2)])
def test_the_sdpa_mask_is_the_block_causal_rule(pattern):
    mask = pattern.sdpa_mask(6, 3)
    assert torch.equal(mask, block_causal_mask(6, 3, window=pattern.window,
                                               anchor_frames=pattern.anchor))
    assert pattern.sdpa_mask(1, 3) is None  # one frame sees itself: nothing to hide
    assert torch.equal(pattern.teacher_forcing_mask(5, 2),
                       teacher_forcing_mask(5, 2, pattern.anchor, window=pattern.window))


@pytest.mark.parametrize("pattern", [CAUSAL, WINDOW, AttentionPattern(window=1, anchor=2)])
def test_the_cache_holds_exactly_what_the_next_frame_sees(pattern):
    for committed in range(1, 10):
        held = pattern.held_frames(committed)
        sees = pattern.visible(torch.tensor([committed]), torch.arange(committed))[0]
        assert held == torch.nonzero(sees).flatten().tolist()
        assert pattern.attended_frames(committed) == len(held) + 1
        assert len(held) + 1 <= pattern.cache_frames(100)


def test_a_cached_pass_is_masked_only_where_the_window_bites():
    # keys: held frames [0, 2, 3] then the queries 4, 5; frame 4 sees all, frame 5 not frame 2
    mask = WINDOW.sdpa_mask(2, 1, frame_offset=4, held=[0, 2, 3])
    assert mask.tolist() == [[True, True, True, True, False], [True, False, True, True, True]]
    assert CAUSAL.sdpa_mask(1, 2, frame_offset=3, held=[0, 1, 2]) is None


@pytest.mark.parametrize("model_kw", [{}, dict(temporal_window=1), dict(target_frames="all")])
def test_flex_attention_with_a_block_mask_equals_masked_sdpa(model_kw):
    """model.attn_backend="flex" (GPU training) gives the SDPA features; forward only, since
    FlexAttention has no backward on the CPU."""
    from core.model import VideoMAR

    cfgs = [ModelConfig(width=32, depth=2, num_heads=2, head_width=32, attn_backend=b,
                        **model_kw) for b in ("sdpa", "flex")]
    sdpa, flex = (VideoMAR(c, seed=0).eval() for c in cfgs)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 4, 4, 4, cfgs[0].token_dim, generator=g)
    with torch.no_grad():
        if model_kw.get("target_frames") == "all":
            mask = torch.rand(2, 3, 16, generator=torch.Generator().manual_seed(1)) < 0.7
            a, b = sdpa.teacher_forced(tokens, mask), flex.teacher_forced(tokens, mask)
        else:
            a, b = sdpa.backbone(tokens, None, 0), flex.backbone(tokens, None, 0)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_the_block_mask_skips_the_hidden_frame_tiles():
    block = CAUSAL.block_mask(CAUSAL.frame_mask(8), 16)
    assert block.sparsity() == pytest.approx(100 * (1 - 36 / 64))  # 36 of 8 x 8 tiles computed
