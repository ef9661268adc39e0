"""3D RoPE: relative-position property per axis, dtype, shape checks."""

import pytest
import torch

from core.rope import apply_rope, grid_positions, rope_tables

AXES = [8, 4, 4]  # head dim 16


def _rotate(x, pos):
    cos, sin = rope_tables(pos, AXES, 10000.0, dtype=torch.float64)
    return apply_rope(x, cos, sin)


def test_grid_positions_frame_major():
    pos = grid_positions(2, 2, 2, 3)
    assert pos.shape == (12, 3)
    assert pos[0].tolist() == [2, 0, 0] and pos[1].tolist() == [2, 0, 1]
    assert pos[3].tolist() == [2, 1, 0] and pos[6].tolist() == [3, 0, 0]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_dot_product_depends_only_on_relative_offset(axis):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 16, generator=g, dtype=torch.float64)
    k = torch.randn(1, 16, generator=g, dtype=torch.float64)

    def score(pq, pk):
        a = _rotate(q, torch.tensor([pq]))
        b = _rotate(k, torch.tensor([pk]))
        return (a * b).sum().item()

    base_q, base_k = [3, 1, 2], [1, 4, 0]
    shifted_q, shifted_k = list(base_q), list(base_k)
    shifted_q[axis] += 7
    shifted_k[axis] += 7
    assert score(base_q, base_k) == pytest.approx(score(shifted_q, shifted_k), abs=1e-9)
    # and it does change with the offset itself
    moved_k = list(base_k)
    moved_k[axis] += 1
    assert abs(score(base_q, base_k) - score(base_q, moved_k)) > 1e-6


def test_norm_and_dtype_preserved():
    x = torch.randn(2, 3, 6, 16, dtype=torch.bfloat16)
    out = _rotate(x, grid_positions(0, 1, 2, 3))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    x32 = torch.randn(2, 6, 16)
    out32 = _rotate(x32, grid_positions(0, 1, 2, 3))
    torch.testing.assert_close(out32.norm(dim=-1), x32.norm(dim=-1))


def test_position_zero_is_identity_and_bad_shapes_raise():
    x = torch.randn(4, 16)
    torch.testing.assert_close(_rotate(x, torch.zeros(4, 3, dtype=torch.long)), x)
    cos, sin = rope_tables(torch.zeros(3, 3), AXES, 10000.0)
    with pytest.raises(ValueError, match="do not fit"):
        apply_rope(x, cos, sin)
