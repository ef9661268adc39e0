"""Masking for MAR-style generation inside a frame and block-causal attention across frames.

- `block_causal_mask`: VideoMAR's frame-wise causal mask, allowed(q, k) = frame(k) <= frame(q);
  with `window=W > 0` the banded variant with an anchor (`frame_visibility`): a frame sees the
  `anchor_frames` conditioning frames and the W frames before it, plus itself.
- `teacher_forcing_mask`: the same rule for a two-stream sequence that trains every frame at once.
- `random_orders` / `mask_by_order`: MAR's random generation order; the first `m` positions of
  the order are the masked ones.
- `sample_mask_ratio`: MAR's training mask ratio r ~ TruncNormal(1.0, 0.25) on [0.7, 1.0], drawn
  by inverse-CDF from an explicit generator (MAR uses SciPy's global RNG).
- `reveal_schedule`: MAR's cosine schedule of tokens still masked after each of K iterations.
All randomness comes from a `torch.Generator` passed in.
"""

from __future__ import annotations

import math

import torch

MASK_RATIO_LOC = 1.0  # mean of MAR's truncated normal; the upper bound is 1.0 as well


def frame_visibility(query_frames: torch.Tensor, key_frames: torch.Tensor, *, window: int = 0,
                     anchor_frames: int = 0) -> torch.Tensor:
    """May query frame q attend to key frame k? (Lq,) and (Lk,) absolute frame indices -> (Lq, Lk) bool.

    window=0: block causality, k <= q. window=W > 0: additionally k >= q - W unless k is one of the
    first `anchor_frames` frames (the clean conditioning frames, always visible): a frame sees the
    anchor, its W predecessors and itself. The indices may be per frame or per token.
    """
    if window < 0:
        raise ValueError(f"window={window} must be >= 0 (0 = unlimited)")
    q, k = query_frames[:, None], key_frames[None, :]
    allowed = k <= q
    if window > 0:
        allowed = allowed & ((k < anchor_frames) | (k >= q - window))
    return allowed


def expand_frame_mask(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Frame-level (Fq, Fk) bool -> token-level (Fq*S, Fk*S) bool for S = tokens_per_frame (frame-major)."""
    return (frame_mask.repeat_interleave(tokens_per_frame, dim=0)
            .repeat_interleave(tokens_per_frame, dim=1))


def block_causal_mask(num_frames: int, tokens_per_frame: int, device=None, *, window: int = 0,
                      anchor_frames: int = 0) -> torch.Tensor:
    """Boolean (L, L) mask, True where attention is allowed, L = num_frames * tokens_per_frame.

    window=0 is VideoMAR's block-causal mask; window > 0 its banded version with an anchor on the
    first `anchor_frames` frames (see `frame_visibility`).
    """
    frame = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
    return frame_visibility(frame, frame, window=window, anchor_frames=anchor_frames)


def teacher_forcing_mask(num_frames: int, tokens_per_frame: int, num_cond_frames: int,
                         device=None, *, window: int = 0) -> torch.Tensor:
    """Boolean (L, L) mask of the two-stream sequence [clean frames 0..T-2 | masked frames c..T-1].

    Clean frames attend block-causally among themselves (window and anchor as in
    `frame_visibility`); the masked copy of frame f attends to the clean frames before f that
    `frame_visibility` allows and to itself, never to another masked frame; no clean frame
    attends to a masked one. So every masked frame sees exactly what the single-target step with
    target f shows it, and all of them train in one pass. L = (2T - 1 - c) * tokens_per_frame.
    """
    allowed = teacher_forcing_frames(num_frames, num_cond_frames, window=window)
    return expand_frame_mask(allowed, tokens_per_frame).to(device)


def teacher_forcing_frames(num_frames: int, num_cond_frames: int, *,
                           window: int = 0) -> torch.Tensor:
    """The frame-level (2T-1-c, 2T-1-c) bool mask behind `teacher_forcing_mask`."""
    if not 1 <= num_cond_frames < num_frames:
        raise ValueError(f"num_cond_frames={num_cond_frames} must be in [1, {num_frames - 1}] for "
                         f"a {num_frames}-frame clip")
    frames = torch.cat([torch.arange(num_frames - 1), torch.arange(num_cond_frames, num_frames)])
    masked = torch.arange(frames.numel()) >= num_frames - 1
    visible = frame_visibility(frames, frames, window=window, anchor_frames=num_cond_frames)
    own = masked[:, None] & (frames[:, None] == frames[None, :])  # a masked frame and its clean twin
    return torch.where(masked[None, :], own, visible & ~own)


def random_orders(batch_size: int, num_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """One random permutation of range(num_tokens) per sample -> (B, N) long, on generator's device."""
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=generator.device)
    return noise.argsort(dim=-1)


def mask_by_order(orders: torch.Tensor, num_masked: int) -> torch.Tensor:
    """Mask the first `num_masked` positions of each order: (B, N) long -> (B, N) bool (True = masked)."""
    mask = torch.zeros(orders.shape, dtype=torch.bool, device=orders.device)
    return mask.scatter(-1, orders[:, :num_masked], True)


def sample_mask_ratio(generator: torch.Generator, ratio_min: float = 0.7,
                      std: float = 0.25) -> float:
    """Draw r ~ TruncNormal(MASK_RATIO_LOC, std) restricted to [ratio_min, 1] (one per batch)."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    lo = normal.cdf(torch.tensor((ratio_min - MASK_RATIO_LOC) / std, dtype=torch.float64))
    hi = normal.cdf(torch.tensor((1.0 - MASK_RATIO_LOC) / std, dtype=torch.float64))
    u = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).cpu()
    r = MASK_RATIO_LOC + std * normal.icdf(lo + u * (hi - lo))
    return float(r.clamp(ratio_min, 1.0))


def num_masked_tokens(num_tokens: int, ratio: float) -> int:
    """ceil(N * r), at least one token (as in MAR)."""
    return max(1, min(num_tokens, math.ceil(num_tokens * ratio)))


def reveal_schedule(num_tokens: int, num_iter: int) -> list[int]:
    """Tokens still masked after each of `num_iter` steps on MAR's cosine schedule -> list of K ints.

    m_k = floor(N * cos(pi/2 * (k+1)/K)), clamped so that every step reveals at least one token
    and at least one token is left for each remaining step; the last entry is 0. This equals
    MAR's schedule except where MAR's clamp would make a step reveal nothing (K close to N).
    """
    if not 1 <= num_iter <= num_tokens:
        raise ValueError(f"num_iter={num_iter} must be between 1 and the number of tokens "
                         f"{num_tokens}: every iteration has to reveal at least one token")
    remaining, prev = [], num_tokens
    for k in range(num_iter):
        target = math.floor(num_tokens * math.cos(math.pi / 2.0 * (k + 1) / num_iter))
        left_for_rest = num_iter - 1 - k  # one token per remaining step
        m = max(left_for_rest, min(prev - 1, target))
        remaining.append(m)
        prev = m
    return remaining
