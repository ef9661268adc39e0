"""Mask utilities: block causality, orders, the reveal schedule and the mask-ratio sampler."""

import pytest
import torch

from core.masks import (block_causal_mask, mask_by_order, num_masked_tokens, random_orders,
                        reveal_schedule, sample_mask_ratio)


def test_block_causal_mask_structure():
    m = block_causal_mask(3, 2)
    expected = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]).bool()
    assert torch.equal(m, expected)


def test_windowed_block_causal_mask_structure():
    """Window 1, anchor frame 0: frame 3 sees frames 0, 2, 3 (frame 1 fell out of the window)."""
    m = block_causal_mask(4, 1, window=1, anchor_frames=1)
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 1, 1]]).bool()
    assert torch.equal(m, expected)
    assert torch.equal(block_causal_mask(4, 1, window=3, anchor_frames=1), block_causal_mask(4, 1))


@pytest.mark.parametrize("num_tokens", [1, 7, 64, 256])
def test_reveal_schedule_reveals_every_token_exactly_once(num_tokens):
    g = torch.Generator().manual_seed(1)
    for num_iter in sorted({k for k in (1, 2, 3, num_tokens // 2, num_tokens - 1, num_tokens)
                             if 1 <= k <= num_tokens}):
        remaining = reveal_schedule(num_tokens, num_iter)
        assert len(remaining) == num_iter and remaining[-1] == 0
        steps = [num_tokens] + remaining
        assert all(a > b for a, b in zip(steps, steps[1:])), "every step reveals >= 1 token"
        order = random_orders(2, num_tokens, g)
        seen = torch.zeros(2, num_tokens, dtype=torch.long)
        masked = torch.ones(2, num_tokens, dtype=torch.bool)
        for m in remaining:
            nxt = mask_by_order(order, m)
            assert not (nxt & ~masked).any(), "a revealed token was masked again"
            seen += (masked & ~nxt).long()
            masked = nxt
        assert torch.equal(seen, torch.ones_like(seen))


def test_reveal_schedule_is_cosine_for_small_k_and_rejects_bad_k():
    assert reveal_schedule(256, 4) == [236, 181, 97, 0]
    with pytest.raises(ValueError, match="num_iter"):
        reveal_schedule(16, 17)
    with pytest.raises(ValueError, match="num_iter"):
        reveal_schedule(16, 0)


def test_orders_are_permutations_and_seeded():
    a = random_orders(3, 10, torch.Generator().manual_seed(5))
    b = random_orders(3, 10, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(a.sort(dim=-1).values, torch.arange(10).expand(3, 10))
    mask = mask_by_order(a, 4)
    assert mask.sum(dim=-1).tolist() == [4, 4, 4]


def test_mask_ratio_distribution():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_mask_ratio(g, 0.7, 0.25) for _ in range(4000)])
    assert draws.min() >= 0.7 and draws.max() <= 1.0
    # mean of TruncNormal(1, 0.25) on [0.7, 1]: about 0.87 (MAR reference)
    assert abs(draws.mean().item() - 0.868) < 0.01
    assert num_masked_tokens(64, 0.7) == 45 and num_masked_tokens(64, 0.001) == 1
