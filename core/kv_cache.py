"""Temporal KV cache with frame granularity (nanochat's preallocated cache, per layer).

Every pass writes the K/V of its query tokens into the slots right after the stored prefix
and attends over prefix + those slots. A read-only pass (the K masked iterations of a frame)
leaves the cache unchanged, so the next pass overwrites the same slots; an append pass (the
finished, clean frame) calls `commit` to make them part of the prefix. Both CFG branches live in
the batch dimension.

Temporal window (`window=W > 0`, model.temporal_window): the cache keeps the first
`anchor_frames` frames (the conditioning frames) and only the W most recently committed frames;
`commit` evicts older frames by shifting the kept ones left, so the storage is bounded by
anchor + W + 1 frames whatever the clip length. Keys are stored after RoPE, so a shifted key keeps
its absolute frame position. `length` always counts every committed token (the absolute position
of the next frame); `stored` counts the tokens actually held.
"""

from __future__ import annotations

from typing import Optional

import torch


class KVCache:
    """Preallocated keys and values, (layers, B, heads, max_len, head_dim) each."""

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, max_len: int,
                 head_dim: int, device=None, dtype=torch.float32, *,
                 frame_len: Optional[int] = None, anchor_frames: int = 0, window: int = 0):
        if window < 0 or anchor_frames < 0:
            raise ValueError(f"window={window} and anchor_frames={anchor_frames} must be >= 0")
        if window > 0 and not frame_len:
            raise ValueError("a windowed KV cache needs frame_len (tokens per frame) to evict "
                             "whole frames")
        shape = (num_layers, batch_size, num_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # committed tokens (whole frames), evicted ones included
        self.stored = 0  # committed tokens held in the slots (== length without a window)
        self.max_len = max_len
        self.frame_len, self.anchor_frames, self.window = frame_len, anchor_frames, window
        # Text cross-attention K/V per layer: the same for every pass of a clip, so computed once
        # per context tensor (identity-checked; holding it keeps the check sound).
        self._cross_context = None
        self._cross: dict = {}

    def held_frames(self, frame_len: int) -> list[int]:
        """Absolute indices of the committed frames held, in slot order (frames of `frame_len` tokens)."""
        committed = self.length // frame_len
        if self.window <= 0:
            return list(range(self.stored // frame_len))
        anchor = min(self.anchor_frames, committed)
        recent = max(anchor, committed - self.window)
        return list(range(anchor)) + list(range(recent, committed))

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, L, D) k/v after the stored prefix; return prefix+new views, (B, H, stored+L, D)."""
        end = self.stored + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache overflow: {end} tokens > max_len {self.max_len}; "
                               "build the cache for the full number of frames (with a temporal "
                               "window: for anchor + window + the frames of one pass)")
        self.k[layer, :, :, self.stored:end] = k
        self.v[layer, :, :, self.stored:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def commit(self, num_tokens: int) -> None:
        """Make the last written `num_tokens` part of the prefix (append the finished frame),
        then, with a window, evict the frames that fell out of it."""
        if self.stored + num_tokens > self.max_len:
            raise RuntimeError("KV cache commit beyond max_len")
        self.length += num_tokens
        self.stored += num_tokens
        if self.window > 0:
            self._evict()

    def _evict(self) -> None:
        """Drop the oldest non-anchor frames beyond the window: shift the kept ones left."""
        anchor = min(self.anchor_frames, self.length // self.frame_len) * self.frame_len
        keep = min(self.window * self.frame_len, self.stored - anchor)
        drop = self.stored - anchor - keep
        if drop <= 0:
            return
        src = slice(anchor + drop, self.stored)
        dst = slice(anchor, anchor + keep)
        self.k[:, :, :, dst] = self.k[:, :, :, src].clone()  # clone: the ranges may overlap
        self.v[:, :, :, dst] = self.v[:, :, :, src].clone()
        self.stored = anchor + keep

    def cross_kv(self, layer: int, context: torch.Tensor, compute):
        """Cross-attention (k, v) of `layer` for `context`: `compute()` once, then reused."""
        if context is not self._cross_context:
            self._cross_context, self._cross = context, {}
        if layer not in self._cross:
            self._cross[layer] = compute()
        return self._cross[layer]

    def reset(self) -> None:
        self.length = self.stored = 0
        self._cross_context, self._cross = None, {}
