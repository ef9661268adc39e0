"""Temporal KV cache with frame granularity (nanochat's preallocated cache, per layer).

Every pass writes the K/V of its query tokens into the slots right after the stored prefix
and attends over prefix + those slots. A read-only pass (the K masked iterations of a frame)
leaves the cache unchanged, so the next pass overwrites the same slots; an append pass (the
finished, clean frame) calls `commit` to make them part of the prefix. Both CFG branches live in
the batch dimension.

Temporal window (a windowed `AttentionPattern`, core/pattern.py): the cache holds the frames
the pattern says a new frame can see, the anchor (conditioning frames) and the W most recently
committed ones; `commit` evicts the others by shifting the kept ones left, so the storage is bounded
by anchor + W + 1 frames whatever the clip length. Keys are stored after RoPE, so a shifted key
keeps its absolute frame position. `length` always counts every committed token (the absolute
position of the next frame); `stored` counts the tokens actually held.
"""

from __future__ import annotations

import torch

from core.pattern import AttentionPattern


class KVCache:
    """Preallocated keys and values, (layers, B, heads, max_len, head_dim) each."""

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, max_len: int,
                 head_dim: int, device=None, dtype=torch.float32, *, frame_len: int,
                 pattern: AttentionPattern = AttentionPattern()):
        if frame_len < 1:
            raise ValueError(f"frame_len={frame_len} (tokens per frame) must be >= 1")
        if not pattern.causal:
            raise ValueError("a KV cache needs the causal pattern: under full attention every "
                             "frame attends to later frames, so nothing can be cached")
        shape = (num_layers, batch_size, num_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # committed tokens (whole frames), evicted ones included
        self.stored = 0  # committed tokens held in the slots (== length without a window)
        self.max_len = max_len
        self.frame_len, self.pattern = frame_len, pattern
        self._slots: list[int] = []  # the frame held in each frame slot
        # Text cross-attention K/V per layer: the same for every pass of a clip, so computed once
        # per context tensor (identity-checked; holding it keeps the check sound).
        self._cross_context = None
        self._cross: dict = {}

    def held_frames(self) -> list[int]:
        """Absolute indices of the committed frames held, in slot order."""
        return list(self._slots)

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
        """Make the last written `num_tokens` (whole frames) part of the prefix, then keep only
        the frames the attention pattern lets the next frame see."""
        if self.stored + num_tokens > self.max_len:
            raise RuntimeError("KV cache commit beyond max_len")
        if num_tokens % self.frame_len:
            raise ValueError(f"commit of {num_tokens} tokens: not whole frames of {self.frame_len}")
        first = self.length // self.frame_len
        self.length += num_tokens
        self.stored += num_tokens
        self._slots += range(first, self.length // self.frame_len)
        self._evict(self.pattern.held_frames(self.length // self.frame_len))

    def _evict(self, keep: list[int]) -> None:
        """Keep the frames `keep` (a subsequence of the slots): shift them left, in order."""
        if keep == self._slots:
            return
        n = self.frame_len
        src = torch.cat([torch.arange(n) + self._slots.index(f) * n for f in keep])
        src = src.to(self.k.device)
        end = len(keep) * n
        self.k[:, :, :, :end] = self.k[:, :, :, src].clone()  # clone: the ranges may overlap
        self.v[:, :, :, :end] = self.v[:, :, :, src].clone()
        self._slots, self.stored = list(keep), end

    def cross_kv(self, layer: int, context: torch.Tensor, compute):
        """Cross-attention (k, v) of `layer` for `context`: `compute()` once, then reused."""
        if context is not self._cross_context:
            self._cross_context, self._cross = context, {}
        if layer not in self._cross:
            self._cross[layer] = compute()
        return self._cross[layer]

    def reset(self) -> None:
        self.length = self.stored = 0
        self._slots = []
        self._cross_context, self._cross = None, {}
