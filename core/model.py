"""VideoMAR: a decoder-only transformer over frame-major continuous tokens + a per-token diffusion head.

Follows VideoMAR (Yu et al., arXiv 2506.14168, sec. 3) and its public training code:
- tokens (B, T, h, w, D) are linearly embedded; masked positions take one learned mask token;
  no absolute position embeddings (3D RoPE only), no buffer tokens;
- block-causal self-attention (a token sees its whole frame and all earlier frames) or, for the
  "total mask" baseline (`attn="full"`), bidirectional attention over all frames; an optional
  temporal window (`temporal_window=W`, not in the paper) limits the earlier frames to the
  conditioning frames (the anchor) and the W most recent ones, in training and in the KV cache;
- optional text cross-attention with a learned null embedding and condition dropout (CFG);
- training objective: the next-frame diffusion loss. One target frame f ~ U{1..T-1} per step,
  frames < f clean and unmasked, the clip truncated to frames 0..f (the commented-out "version 2"
  of the released code), ceil(S*r) tokens of frame f masked by a random in-frame order,
  r ~ TruncNormal(1, 0.25) on [0.7, 1]; the loss is the MAR diffusion loss on the masked tokens
  of frame f with `diffusion_batch_mul` (t, eps) draws per token.
- `target_frames="all"` (causal, not in the paper): the same loss on every generated frame at
  once, masked jointly as for full attention, each masked frame attending to the clean frames
  before it through a second stream (`teacher_forced`, MAGI's complete teacher forcing).
- `attn="full"`: every frame after the conditioning frames is masked jointly (one random order
  over all of their tokens), the loss covers every masked token.

All randomness of a training step is drawn up front by `sample_train_draws`: the batch's shared
draws from the step's generator, each sample's own from a generator of its global index, so a DDP
rank draws its slice only, the slices equal the batch drawn in one process, and a resumed run
replays it exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.utils.checkpoint
from torch import nn

from core.attention import Block, NORM_EPS
from core.config import ModelConfig
from core.diffusion_head import DiffusionHead
from core.kv_cache import KVCache
from core.masks import (expand_frame_mask, mask_by_order, num_masked_tokens, random_orders,
                        sample_mask_ratio)
from core.rope import grid_positions, rope_tables
from core.text_encoder import build_text_encoder
from core.tokenizer_factory import build_tokenizer
from core.tokenizers import Tokenizer


@dataclass
class TrainDraws:
    """Every random quantity of one training step for a batch (see module docstring)."""

    target_frame: int  # the frame carrying the loss; -1: all generated frames (full attention,
    # or causal with model.target_frames="all")
    num_masked: int  # masked tokens per sample (shared by the batch, as in MAR)
    orders: torch.Tensor  # (B, N) random order over the maskable tokens
    cond_drop: torch.Tensor  # (B,) bool, replace the caption by the null embedding
    timesteps: torch.Tensor  # (B, mul, num_masked) diffusion timesteps
    noise: torch.Tensor  # (B, mul, num_masked, D) diffusion noise

    def slice(self, start: int, stop: int) -> "TrainDraws":
        """The draws of samples start..stop-1 (a DDP rank's share of a global batch)."""
        return dataclasses.replace(self, orders=self.orders[start:stop],
                                   cond_drop=self.cond_drop[start:stop],
                                   timesteps=self.timesteps[start:stop],
                                   noise=self.noise[start:stop])

    def to(self, device) -> "TrainDraws":
        return dataclasses.replace(self, orders=self.orders.to(device),
                                   cond_drop=self.cond_drop.to(device),
                                   timesteps=self.timesteps.to(device),
                                   noise=self.noise.to(device))


class VideoMAR(nn.Module):
    def __init__(self, cfg: ModelConfig = None, tokenizer: Optional[Tokenizer] = None,
                 seed: int = 0):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.pattern = cfg.pattern  # which frame sees which (core/pattern.py)
        self._rope_tables: dict = {}  # (frames, grid, device) -> (cos, sin); not module state
        # Deterministic init from `seed` without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):  # CPU state only; initialisers draw on the CPU
            torch.random.default_generator.manual_seed(seed)
            self._build(cfg, tokenizer)

    def _build(self, cfg: ModelConfig, tokenizer: Optional[Tokenizer]) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg.tokenizer)
        width = cfg.width
        self.token_embed = nn.Linear(cfg.token_dim, width)  # VideoMAR's z_proj
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        if cfg.pos_emb == "learned":  # the absolute-position baseline of the RoPE ablation
            self.pos_t = nn.Parameter(torch.zeros(cfg.max_frames, width))
            self.pos_h = nn.Parameter(torch.zeros(cfg.max_grid, width))
            self.pos_w = nn.Parameter(torch.zeros(cfg.max_grid, width))
        has_text = cfg.text_dim > 0
        self.text_encoder = build_text_encoder(cfg) if has_text else None
        self.text_proj = nn.Linear(cfg.text_dim, width) if has_text else None
        self.null_text = nn.Parameter(torch.zeros(1, cfg.text_len, width)) if has_text else None
        self.blocks = nn.ModuleList(
            Block(width, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm, cross_attention=has_text,
                  qkv_bias=cfg.qkv_bias)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(width, eps=NORM_EPS)
        self._init_backbone()
        self.head = DiffusionHead(cfg.token_dim, width, cfg.head_depth, cfg.head_width,
                                  cfg.num_train_timesteps, cfg.num_sampling_steps)

    def _init_backbone(self) -> None:
        """Xavier-uniform linears with zero bias, N(0, 0.02) learned tokens (MAR's init)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)
        if self.cfg.pos_emb == "learned":
            for table in (self.pos_t, self.pos_h, self.pos_w):
                nn.init.normal_(table, std=0.02)
        if self.null_text is not None:
            nn.init.normal_(self.null_text, std=0.02)

    # ----------------------------------------------------------------- conditioning and backbone
    def encode_context(self, captions: Optional[Sequence[str]], batch_size: int,
                       drop: Optional[torch.Tensor] = None):
        """Projected text (B, Lt, W) and mask (B, Lt); `drop` (B,) bool selects the null embedding."""
        if self.text_encoder is None:
            return None, None
        device = self.null_text.device
        if captions is None:  # unconditional: every sample gets the null embedding
            captions, drop = [""] * batch_size, torch.ones(batch_size, dtype=torch.bool, device=device)
        if len(captions) != batch_size:
            raise ValueError(f"{len(captions)} captions for a batch of {batch_size}")
        features, valid = self.text_encoder(captions)
        context = self.text_proj(features)
        if drop is not None:  # torch.where keeps the null embedding in the graph (DDP-safe)
            drop = drop.to(device)
            context = torch.where(drop[:, None, None], self.null_text.to(context.dtype), context)
            valid = valid | drop[:, None]
        return context, valid

    def _rope(self, frame_offset: int, num_frames: int, height: int, width: int, device):
        """RoPE cos/sin tables for a frame range, memoised: the sampler asks for the same ones K times.
        (None, None) for learned absolute positions."""
        if self.cfg.pos_emb != "rope":
            return None, None
        key = (frame_offset, num_frames, height, width, str(device))
        if key not in self._rope_tables:
            positions = grid_positions(frame_offset, num_frames, height, width, device)
            self._rope_tables[key] = rope_tables(positions, self.cfg.rope_axes, self.cfg.rope_base)
        return self._rope_tables[key]

    def _learned_positions(self, frame_offset: int, num_frames: int, height: int,
                           width: int) -> torch.Tensor:
        """Sum of the learned t/h/w embeddings for a frame range -> (F*H*W, W_model)."""
        cfg = self.cfg
        if frame_offset + num_frames > cfg.max_frames or max(height, width) > cfg.max_grid:
            raise ValueError(f"learned position tables hold {cfg.max_frames} frames and "
                             f"{cfg.max_grid} tokens per side; asked for frames up to "
                             f"{frame_offset + num_frames} on a {height}x{width} grid: raise "
                             f"model.max_frames / model.max_grid")
        t = self.pos_t[frame_offset:frame_offset + num_frames]
        pos = t[:, None, None] + self.pos_h[:height, None] + self.pos_w[None, :width]
        return pos.reshape(num_frames * height * width, -1)

    def new_cache(self, batch_size: int, num_frames: int, tokens_per_frame: int) -> KVCache:
        """An empty KV cache for a clip of `num_frames` frames.

        With model.temporal_window = W > 0 it holds at most the anchor (num_cond_frames) + W + 1
        frames: older frames are evicted on commit, so the cache does not grow with the clip.
        """
        ref, slots = self.mask_token, self.pattern.cache_frames(num_frames)
        dtype = ref.dtype  # under autocast the compute dtype: K/V are produced (and kept) in it
        if torch.is_autocast_enabled(ref.device.type):
            dtype = torch.get_autocast_dtype(ref.device.type)
        return KVCache(self.cfg.depth, batch_size, self.cfg.num_heads, slots * tokens_per_frame,
                       self.cfg.head_dim, device=ref.device, dtype=dtype,
                       frame_len=tokens_per_frame, pattern=self.pattern)

    def _embed(self, tokens: torch.Tensor, mask: Optional[torch.Tensor],
               frame_offset: int) -> torch.Tensor:
        """Tokens (B, F, h, w, D) -> frame-major input sequence (B, F*h*w, W), mask tokens placed."""
        batch, num_frames, height, width_tokens, _ = tokens.shape
        x = self.token_embed(tokens.reshape(batch, num_frames, height * width_tokens, -1))
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x = x.reshape(batch, num_frames * height * width_tokens, -1)
        if self.cfg.pos_emb == "learned":  # added after masking: mask tokens need positions too
            x = x + self._learned_positions(frame_offset, num_frames, height, width_tokens).to(x.dtype)
        return x

    def _self_attn_mask(self, frames: Optional[torch.Tensor], per_frame: int, device):
        """A frame-level mask for the blocks: expanded to tokens for SDPA, or, with
        model.attn_backend="flex", a FlexAttention BlockMask of frame tiles."""
        if frames is None:
            return None
        if self.cfg.attn_backend == "flex":
            return self.pattern.block_mask(frames.to(device), per_frame)
        return expand_frame_mask(frames.to(device), per_frame)

    def _run_blocks(self, x, cos, sin, attn_mask, context, context_mask, cache):
        """The transformer blocks in order. With model.grad_checkpoint, while training with
        gradients, each block's activations are recomputed in backward instead of kept."""
        checkpoint = self.cfg.grad_checkpoint and self.training and torch.is_grad_enabled()
        for layer, block in enumerate(self.blocks):
            if checkpoint and cache is None:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, attn_mask, context,
                                                      context_mask, None, layer,
                                                      use_reentrant=False)
            else:
                x = block(x, cos, sin, attn_mask, context, context_mask, cache, layer)
        return x

    def teacher_forced(self, tokens: torch.Tensor, mask: torch.Tensor, context=None,
                       context_mask=None) -> torch.Tensor:
        """Features of every generated frame in one pass (model.target_frames="all").

        tokens (B, T, h, w, D) clean; mask (B, T-c, h*w) marks the masked tokens of frames c..T-1.
        The sequence is [clean frames 0..T-2 | masked frames c..T-1] under `teacher_forcing_mask`,
        each stream at its frames' true RoPE positions, so masked frame f gets the features the
        single-target step with target f would give it. Returns (B, T-c, h*w, W).
        """
        batch, num_frames, height, width_tokens, _ = tokens.shape
        per_frame, first = height * width_tokens, self.cfg.num_cond_frames
        if context is None and self.text_encoder is not None:
            context, context_mask = self.encode_context(None, batch)
        x = torch.cat([self._embed(tokens[:, :-1], None, 0),
                       self._embed(tokens[:, first:], mask, first)], dim=1)
        cos, sin = self._rope(0, num_frames - 1, height, width_tokens, x.device)
        if cos is not None:
            cos2, sin2 = self._rope(first, num_frames - first, height, width_tokens, x.device)
            cos, sin = torch.cat([cos, cos2]), torch.cat([sin, sin2])
        attn_mask = self._self_attn_mask(self.pattern.teacher_forcing_frames(num_frames),
                                         per_frame, x.device)
        x = self._run_blocks(x, cos, sin, attn_mask, context, context_mask, None)
        x = x[:, (num_frames - 1) * per_frame:]  # the masked stream
        return self.norm(x).reshape(batch, num_frames - first, per_frame, -1)

    def backbone(self, tokens: torch.Tensor, mask: Optional[torch.Tensor], frame_offset: int,
                 context=None, context_mask=None, cache: Optional[KVCache] = None,
                 commit: bool = False) -> torch.Tensor:
        """Transformer features for tokens (B, F, h, w, D) of frames frame_offset.. -> (B, F, h*w, W).

        mask (B, F, h*w) bool marks masked tokens. With a cache, earlier frames come from it (and
        must be exactly the frames < frame_offset, minus those a temporal window evicted);
        `commit=True` appends these frames to it.
        """
        batch, num_frames, height, width_tokens, _ = tokens.shape
        per_frame = height * width_tokens
        if context is None and self.text_encoder is not None:  # no caption: the null embedding
            context, context_mask = self.encode_context(None, batch)
        x = self._embed(tokens, mask, frame_offset)
        cos, sin = self._rope(frame_offset, num_frames, height, width_tokens, x.device)
        if cache is not None and cache.length != frame_offset * per_frame:
            raise RuntimeError(f"KV cache has committed {cache.length} tokens but frame_offset="
                               f"{frame_offset} needs {frame_offset * per_frame}")
        if cache is None:  # a training-style pass over whole frames (SDPA or FlexAttention)
            attn_mask = self._self_attn_mask(self.pattern.frame_mask(num_frames), per_frame,
                                             x.device)
        else:
            attn_mask = self.pattern.sdpa_mask(num_frames, per_frame, x.device,
                                               frame_offset=frame_offset,
                                               held=cache.held_frames())
        x = self._run_blocks(x, cos, sin, attn_mask, context, context_mask, cache)
        if cache is not None and commit:
            cache.commit(num_frames * per_frame)
        return self.norm(x).reshape(batch, num_frames, per_frame, -1)

    # ----------------------------------------------------------------- training objective
    def sample_train_draws(self, batch_size: int, num_frames: int, grid: tuple[int, int],
                           generator: torch.Generator, *, rows: Optional[range] = None,
                           sample_generator=None) -> TrainDraws:
        """Draw target frame, mask ratio, orders, condition dropout, timesteps and noise.

        By default every draw comes from `generator`, batched. With `sample_generator(i)` (a
        generator for global sample i) only the batch's shared draws (target frame, mask count)
        come from `generator`, and each sample's own draws from its generator, for the samples
        in `rows` only (default: all): a DDP rank draws its slice of the global batch and
        nothing else, and the ranks' slices together equal the batch drawn in one process.
        """
        cfg, device = self.cfg, generator.device
        per_frame = grid[0] * grid[1]
        if num_frames < 2:
            raise ValueError("the next-frame diffusion loss needs clips of at least 2 frames")
        if not cfg.trains_all_frames:
            target = int(torch.randint(1, num_frames, (), generator=generator, device=device))
            maskable = per_frame
        else:
            if cfg.num_cond_frames >= num_frames:
                raise ValueError(f"num_cond_frames={cfg.num_cond_frames} leaves no frame to "
                                 f"generate in a {num_frames}-frame clip")
            target, maskable = -1, (num_frames - cfg.num_cond_frames) * per_frame
        ratio = sample_mask_ratio(generator, cfg.mask_ratio_min, cfg.mask_ratio_std)
        num_masked = num_masked_tokens(maskable, ratio)
        if sample_generator is None:
            own = self._sample_own_draws(batch_size, maskable, num_masked, generator)
        else:
            rows = range(batch_size) if rows is None else rows
            parts = [self._sample_own_draws(1, maskable, num_masked, sample_generator(i))
                     for i in rows]
            own = [torch.cat(p) for p in zip(*parts)]
        return TrainDraws(target, num_masked, *own)

    def _sample_own_draws(self, n: int, maskable: int, num_masked: int,
                          generator: torch.Generator) -> list[torch.Tensor]:
        """The draws each sample has of its own, for n samples: order, dropout, timesteps, noise."""
        cfg, device = self.cfg, generator.device
        orders = random_orders(n, maskable, generator)
        drop = torch.rand(n, generator=generator, device=device) < cfg.cond_drop_prob
        shape = (n, cfg.diffusion_batch_mul, num_masked)
        timesteps = torch.randint(0, cfg.num_train_timesteps, shape, generator=generator, device=device)
        noise = torch.randn(*shape, cfg.token_dim, generator=generator, device=device)
        return [orders, drop, timesteps, noise]

    def forward(self, tokens: torch.Tensor, captions: Optional[Sequence[str]],
                draws: TrainDraws) -> torch.Tensor:
        """Next-frame diffusion loss (causal) or joint masked loss (full) for tokens (B, T, h, w, D)."""
        batch, num_frames, height, width_tokens, dim = tokens.shape
        per_frame = height * width_tokens
        draws = draws.to(tokens.device)
        # 1. Which tokens are masked: frame f only (causal) or every generated frame (full, or
        # causal with target_frames="all").
        if draws.target_frame >= 0:
            tokens = tokens[:, : draws.target_frame + 1]  # frames after f cannot matter
            first = draws.target_frame
        else:
            first = self.cfg.num_cond_frames
        num_frames = tokens.shape[1]
        masked = mask_by_order(draws.orders, draws.num_masked)  # (B, N) over frames first..
        mask = torch.zeros(batch, num_frames, per_frame, dtype=torch.bool, device=tokens.device)
        mask[:, first:] = masked.view(batch, num_frames - first, per_frame)
        # 2. Conditioning with dropout to the learned null embedding.
        context, context_mask = self.encode_context(captions, batch, draws.cond_drop)
        # 3. Backbone over the (truncated) clip.
        if self.cfg.target_frames == "all":  # every generated frame, teacher-forced
            mask = mask[:, first:]
            features = self.teacher_forced(tokens, mask, context, context_mask)
            tokens = tokens[:, first:]
            num_frames -= first
        else:
            features = self.backbone(tokens, mask, 0, context, context_mask)  # (B, F, S, W)
        # 4. Gather the masked tokens (same count per sample) and their conditions.
        z = features[mask].view(batch, 1, draws.num_masked, -1)
        target = tokens.reshape(batch, num_frames, per_frame, dim)[mask]
        target = target.view(batch, 1, draws.num_masked, dim)
        mul = draws.timesteps.shape[1]
        # 5. Diffusion loss with `diffusion_batch_mul` independent (t, eps) per token.
        losses = self.head.loss(target.expand(-1, mul, -1, -1).reshape(-1, dim),
                                z.expand(-1, mul, -1, -1).reshape(-1, z.shape[-1]),
                                draws.timesteps.reshape(-1), draws.noise.reshape(-1, dim))
        return losses.mean()

    def loss(self, tokens: torch.Tensor, captions: Optional[Sequence[str]],
             generator: torch.Generator) -> torch.Tensor:
        """Convenience: draw this batch's randomness from `generator`, then `forward`."""
        draws = self.sample_train_draws(tokens.shape[0], tokens.shape[1], tokens.shape[2:4], generator)
        return self(tokens, captions, draws)

    def num_params(self, exclude_head: bool = False) -> int:
        return sum(p.numel() for name, p in self.named_parameters()
                   if not (exclude_head and name.startswith("head.")))
