"""Temporal KV cache with frame granularity (nanochat's preallocated cache, per layer).

Every pass writes the K/V of its query tokens into the slots right after the committed prefix
and attends over prefix + those slots. A read-only pass (the K masked iterations of a frame)
leaves `length` unchanged, so the next pass overwrites the same slots; an append pass (the
finished, clean frame) calls `commit` to make them part of the prefix. Both CFG branches live in
the batch dimension.
"""

from __future__ import annotations

import torch


class KVCache:
    """Preallocated keys and values, (layers, B, heads, max_len, head_dim) each."""

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, max_len: int,
                 head_dim: int, device=None, dtype=torch.float32):
        shape = (num_layers, batch_size, num_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # committed tokens (whole frames)
        self.max_len = max_len
        # Text cross-attention K/V per layer: the same for every pass of a clip, so computed once
        # per context tensor (identity-checked; holding it keeps the check sound).
        self._cross_context = None
        self._cross: dict = {}

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, L, D) k/v after the prefix; return prefix+new k/v views, (B, H, length+L, D)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV cache overflow: {end} tokens > max_len {self.max_len}; "
                               "build the cache for the full number of frames")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def commit(self, num_tokens: int) -> None:
        """Make the last written `num_tokens` part of the prefix (append the finished frame)."""
        if self.length + num_tokens > self.max_len:
            raise RuntimeError("KV cache commit beyond max_len")
        self.length += num_tokens

    def cross_kv(self, layer: int, context: torch.Tensor, compute):
        """Cross-attention (k, v) of `layer` for `context`: `compute()` once, then reused."""
        if context is not self._cross_context:
            self._cross_context, self._cross = context, {}
        if layer not in self._cross:
            self._cross[layer] = compute()
        return self._cross[layer]

    def reset(self) -> None:
        self.length = 0
        self._cross_context, self._cross = None, {}
