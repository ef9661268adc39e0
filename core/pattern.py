"""The attention pattern across frames: the one owner of "which frame sees which".

VideoMAR (arXiv 2506.14168) attends block-causally: a token sees its whole frame and every
earlier frame, which is what lets a KV cache hold the finished frames. Its "total mask" baseline
attends fully: every frame sees every other, all generated frames are masked and trained jointly,
and nothing can be cached. The temporal window (not in the paper) bands the causal pattern: a
frame sees the `anchor` conditioning frames, its `window` predecessors and itself.

`AttentionPattern.of(model_cfg)` answers, for the model, the KV cache, the sampler and the FLOP
counter: which frames a frame sees (`visible`), the SDPA mask of a pass or None (`sdpa_mask`),
the mask of the two-stream teacher-forced pass (`teacher_forcing_mask`), what the cache holds
and evicts (`cache_frames`, `held_frames`) and how many frames a cached pass attends to
(`attended_frames`). The boolean rules themselves live in core/masks.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from core.masks import expand_frame_mask, frame_visibility
from core.masks import teacher_forcing_frames as _teacher_forcing_frames


@dataclass(frozen=True)
class AttentionPattern:
    causal: bool = True  # False: full attention ("total mask"), no order between frames
    window: int = 0  # causal only: W > 0 earlier frames besides the anchor (0 = unlimited)
    anchor: int = 1  # the conditioning frames, visible to every frame under a window

    def __post_init__(self) -> None:
        if self.window < 0 or self.anchor < 0:
            raise ValueError(f"window={self.window} and anchor={self.anchor} must be >= 0")
        if self.window and not self.causal:
            raise ValueError("a temporal window needs the causal pattern: full attention has no "
                             "frame order to window")

    @classmethod
    def of(cls, model_cfg) -> "AttentionPattern":
        """The pattern of a ModelConfig (model.attn, model.temporal_window, num_cond_frames)."""
        return cls(causal=model_cfg.attn == "causal", window=model_cfg.temporal_window,
                   anchor=model_cfg.num_cond_frames)

    # ------------------------------------------------------------------ which frames a frame sees
    def visible(self, query_frames: torch.Tensor, key_frames: torch.Tensor) -> torch.Tensor:
        """(Lq,) and (Lk,) absolute frame indices -> (Lq, Lk) bool, True where q may attend k."""
        if not self.causal:
            return torch.ones(len(query_frames), len(key_frames), dtype=torch.bool)
        return frame_visibility(query_frames, key_frames, window=self.window,
                                anchor_frames=self.anchor)

    def frame_mask(self, num_frames: int, *, frame_offset: int = 0,
                   held: Sequence[int] = ()) -> Optional[torch.Tensor]:
        """The frame-level (F, F_keys) bool mask of one pass, or None when every key is visible.

        Queries: frames frame_offset.. (num_frames of them); keys: the cached frames `held`
        (slot order) followed by the queries.
        """
        if not self.causal:
            return None
        queries = torch.arange(frame_offset, frame_offset + num_frames)
        keys = torch.cat([torch.tensor(list(held), dtype=torch.long), queries])
        visible = self.visible(queries, keys)
        return None if bool(visible.all()) else visible

    def sdpa_mask(self, num_frames: int, tokens_per_frame: int, device=None, *,
                  frame_offset: int = 0, held: Sequence[int] = ()) -> Optional[torch.Tensor]:
        """`frame_mask` at token level, (L, L_keys) bool for SDPA, or None."""
        frames = self.frame_mask(num_frames, frame_offset=frame_offset, held=held)
        return None if frames is None else expand_frame_mask(frames.to(device), tokens_per_frame)

    def teacher_forcing_frames(self, num_frames: int) -> torch.Tensor:
        """The frame-level mask of the two-stream pass training every generated frame."""
        if not self.causal:
            raise ValueError("teacher forcing needs the causal pattern (full attention already "
                             "trains every generated frame)")
        return _teacher_forcing_frames(num_frames, self.anchor, window=self.window)

    def teacher_forcing_mask(self, num_frames: int, tokens_per_frame: int,
                             device=None) -> torch.Tensor:
        """`teacher_forcing_frames` at token level (causal only)."""
        return expand_frame_mask(self.teacher_forcing_frames(num_frames).to(device),
                                 tokens_per_frame)

    def block_mask(self, frames: torch.Tensor, block: int):
        """A FlexAttention BlockMask of a frame-level mask (`frame_mask`,
        `teacher_forcing_frames`) with one frame of `block` tokens per tile: flex_attention
        computes only the tiles with a visible key, and no token-level mask is ever built."""
        from torch.nn.attention.flex_attention import create_block_mask

        q_len, kv_len = frames.shape[0] * block, frames.shape[1] * block
        return create_block_mask(lambda b, h, q, k: frames[q // block, k // block], None, None,
                                 q_len, kv_len, device=frames.device, BLOCK_SIZE=block)

    # ------------------------------------------------------------------ the KV cache
    def cache_frames(self, num_frames: int) -> int:
        """Frame slots a KV cache needs for a clip of `num_frames`: all of them, or under a window
        the anchor, the window and the frame being generated."""
        if not self.causal:
            raise ValueError("full attention has nothing to cache: every frame attends to later "
                             "frames")
        return min(num_frames, self.anchor + self.window + 1) if self.window else num_frames

    def held_frames(self, committed: int) -> list[int]:
        """The frames a cache holds (in slot order) once `committed` frames are committed."""
        if not self.window:
            return list(range(committed))
        anchor = min(self.anchor, committed)
        return list(range(anchor)) + list(range(max(anchor, committed - self.window), committed))

    # ------------------------------------------------------------------ FLOPs
    def attended_frames(self, frame_index: int) -> int:
        """Frames a cached pass of frame `frame_index` attends to, its own included."""
        return len(self.held_frames(frame_index)) + 1
