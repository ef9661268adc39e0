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
