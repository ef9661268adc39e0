"""Transformer block of the VideoMAR backbone (after Step-Video-T2V's block, as VideoMAR uses it).

pre-LayerNorm -> self-attention (fused QKV without bias, per-head RMSNorm on Q and K, 3D RoPE on
Q and K, block-causal mask, optional KV cache) -> pre-LayerNorm -> text cross-attention (Q/K
RMSNorm, padding mask) -> pre-LayerNorm -> FFN (d -> 4d, GELU-tanh, 4d -> d, no bias).
Step-Video's adaLN timestep modulation is dropped: VideoMAR calls the block with timestep=None.
All attention goes through `F.scaled_dot_product_attention`, except self-attention given a
FlexAttention `BlockMask` (model.attn_backend="flex", core/pattern.py `block_mask`), which goes
through `flex_attention` and skips the blocks the pattern hides.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from core.kv_cache import KVCache
from core.rope import apply_rope

NORM_EPS = 1e-6


class SelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int, qk_norm: bool = True, qkv_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        head_dim = width // num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.q_norm = nn.RMSNorm(head_dim, eps=NORM_EPS) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=NORM_EPS) if qk_norm else nn.Identity()
        self.proj = nn.Linear(width, width, bias=False)

    def _norm_qk(self, qk: torch.Tensor) -> torch.Tensor:
        """q_norm on qk[0] and k_norm on qk[1] in one call; qk (2, B, h, L, d)."""
        if isinstance(self.q_norm, nn.Identity):
            return qk
        weight = torch.stack([self.q_norm.weight, self.k_norm.weight])[:, None, None, None]
        return F.rms_norm(qk, qk.shape[-1:], eps=self.q_norm.eps) * weight

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None,
                cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        """x (B, L, W) -> (B, L, W); attn_mask (L, L_keys) bool, True = may attend."""
        qkv = rearrange(self.qkv(x), "b l (three h d) -> three b h l d",
                        three=3, h=self.num_heads)
        qk = self._norm_qk(qkv[:2])  # Q and K as one (2, B, h, L, d) tensor: half the small ops
        if cos is not None:  # None: the model uses learned absolute positions instead of RoPE
            qk = apply_rope(qk, cos, sin)
        (q, k), v = qk.unbind(0), qkv[2]
        if cache is not None:  # keys/values = cached earlier frames + this pass's tokens
            k, v = cache.write(layer, k, v)
        if isinstance(attn_mask, BlockMask):
            out = flex_attention(q, k, v, block_mask=attn_mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class CrossAttention(nn.Module):
    def __init__(self, width: int, num_heads: int, qk_norm: bool = True):
        super().__init__()
        self.num_heads = num_heads
        head_dim = width // num_heads
        self.q = nn.Linear(width, width, bias=False)
        self.kv = nn.Linear(width, 2 * width, bias=False)
        self.q_norm = nn.RMSNorm(head_dim, eps=NORM_EPS) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=NORM_EPS) if qk_norm else nn.Identity()
        self.proj = nn.Linear(width, width, bias=False)
        self.set_processor(None)

    def set_processor(self, processor) -> None:
        """Route forward through `processor(self, x, context, context_mask, cache, layer)`, or
        back to the plain attention with None. Kept outside the module tree (object attribute),
        so an installed adapter never enters the model's state_dict, parameters or EMA."""
        object.__setattr__(self, "processor", processor)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (RMS-normed) and values (B, h, Lt, d) of the projected text."""
        k, v = rearrange(self.kv(context), "b l (two h d) -> two b h l d",
                         two=2, h=self.num_heads)
        return self.k_norm(k), v

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        """x (B, L, W) attends to context (B, Lt, W); context_mask (B, Lt) bool, True = valid.

        With a KV cache the text K/V are computed on the first pass and reused (they do not change
        while a clip is generated). An installed processor (core/sun/backbone_adapter.py) takes
        over the whole call.
        """
        if self.processor is not None:
            return self.processor(self, x, context, context_mask, cache, layer)
        q = self.q_norm(rearrange(self.q(x), "b l (h d) -> b h l d", h=self.num_heads))
        if cache is not None:
            k, v = cache.cross_kv(layer, context, lambda: self.context_kv(context))
        else:
            k, v = self.context_kv(context)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=context_mask[:, None, None, :])
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class FeedForward(nn.Module):
    def __init__(self, width: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """One decoder block; cross-attention exists only when the model has text conditioning."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, qk_norm: bool,
                 cross_attention: bool, qkv_bias: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=NORM_EPS)
        self.attn = SelfAttention(width, num_heads, qk_norm, qkv_bias)
        self.norm2 = nn.LayerNorm(width, eps=NORM_EPS) if cross_attention else None
        self.cross = CrossAttention(width, num_heads, qk_norm) if cross_attention else None
        self.norm3 = nn.LayerNorm(width, eps=NORM_EPS)
        self.mlp = FeedForward(width, mlp_ratio)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: Optional[torch.Tensor], context: Optional[torch.Tensor],
                context_mask: Optional[torch.Tensor], cache: Optional[KVCache] = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, attn_mask, cache, layer)
        if self.cross is not None:
            x = x + self.cross(self.norm2(x), context, context_mask, cache, layer)
        return x + self.mlp(self.norm3(x))
