"""3D rotary position embedding over (t, h, w) token positions.

VideoMAR applies RoPE to Q and K of self-attention on a [latent_frames, H_tokens, W_tokens] grid
(base 10,000, Step-Video's RoPE3D). The head dimension is split into three parts, one per axis;
each part is a standard 1D RoPE with inv_freq = base^(-2i / D_axis). We rotate interleaved pairs
(x[2i], x[2i+1]), which is a fixed permutation of the rotate-half form and has the same relative
position property. Cached frames keep their absolute temporal index, so positions never shift
when frames are appended (see tests/test_rope.py).
"""

from __future__ import annotations

from typing import Sequence

import torch


def grid_positions(frame_start: int, num_frames: int, height: int, width: int,
                   device=None) -> torch.Tensor:
    """Integer (t, h, w) positions of a frame-major, row-major token grid -> (F*H*W, 3)."""
    t = torch.arange(frame_start, frame_start + num_frames, device=device)
    h = torch.arange(height, device=device)
    w = torch.arange(width, device=device)
    tt, hh, ww = torch.meshgrid(t, h, w, indexing="ij")
    return torch.stack([tt, hh, ww], dim=-1).reshape(-1, 3)


def rope_angles(positions: torch.Tensor, axes_dims: Sequence[int], base: float) -> torch.Tensor:
    """Rotation angles for (L, 3) positions -> (L, sum(axes_dims) // 2), computed in float64."""
    parts = []
    for axis, dim in enumerate(axes_dims):
        if dim == 0:
            continue
        exponents = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim
        inv_freq = base ** (-exponents)  # (dim/2,)
        parts.append(positions[:, axis, None].to(torch.float64) * inv_freq)
    return torch.cat(parts, dim=-1)


def rope_tables(positions: torch.Tensor, axes_dims: Sequence[int], base: float,
                dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (L, head_dim // 2), for `apply_rope`."""
    angles = rope_angles(positions, axes_dims, base)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (..., L, D) by the (L, D/2) angle tables; dtype preserved."""
    if x.shape[-1] != 2 * cos.shape[-1] or x.shape[-2] != cos.shape[0]:
        raise ValueError(f"RoPE tables {tuple(cos.shape)} do not fit input {tuple(x.shape)}: "
                         "expected (L, D/2) for input (..., L, D)")
    compute = torch.promote_types(x.dtype, torch.float32)  # bf16 inputs rotate in fp32
    pairs = x.to(compute).unflatten(-1, (-1, 2))  # (..., L, D/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.to(compute), sin.to(compute)
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)
