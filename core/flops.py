"""FLOP counts of VideoMAR: analytic formulas for training and generation, and a measured counter.

Convention (that of `torch.utils.flop_counter`): only matrix products count, 2*m*k*n each;
elementwise ops, norms, softmax and RoPE count zero. Attention is counted **dense**, as SDPA's
fused kernels compute it: QK^T and PV are 4*B*H*Lq*Lk*d forward whatever the mask (a
block-causal boolean mask saves nothing on CPU; measured in tests/test_flops.py), and
the backward pass of the fused kernel recomputes the scores, 2.5x its forward. A linear layer's
backward is 2x its forward (input and weight gradients), 1x when its input needs no gradient
(the token embedding, the head's input projection and its timestep MLP's first layer).

What is counted mirrors `VideoMAR.forward` and `core.sampler`:

* training step (`train_step_flops`): the clip truncated to frames 0..f for causal attention
  (f ~ U{1..T-1}; all T frames for full attention), the text projection, every block (fused QKV,
  self-attention, projection, cross-attention with its K/V projection of the text, FFN), and the
  diffusion head applied to `diffusion_batch_mul` copies of the masked tokens. Without explicit
  `target_frame` / `num_masked` it returns the expectation over the step's random draws (exact:
  the cost is linear in the masked count and the frame draw is averaged over its support).
* generation (`generate_frame_flops`, `generate_video_flops`): per generated frame, K backbone
  passes (over the current frame against the KV cache, or over all frames so far without it),
  the commit pass that appends the finished frame to the cache, and the head's
  `num_sampling_steps` network evaluations for each of the frame's tokens (doubled under CFG).
  With the cache the text cross-attention K/V are computed once per clip (in the prefill) and
  the head embeds each token's condition z once per chain, as the sampler does.
* temporal window (model.temporal_window = W > 0): the cached passes of frame f attend to the
  frames the cache holds, min(f + 1, num_cond_frames + W + 1) of them (`attended_frames`), so a
  generated frame's cost stops growing with f. Training and the recompute path still run dense
  SDPA over the whole (truncated) clip with a banded mask, which saves nothing under this
  convention: their counts do not change.

`measured_flops` runs a function under `FlopCounterMode` with formulas for the CPU flash-attention
kernels that torch leaves uncounted (without them SDPA silently counts 0 on CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch.utils import flop_counter as _fc

from core.config import ModelConfig

FREQ_DIM = 256  # sinusoidal timestep features of the head (core.diffusion_head.FREQ_DIM)
ATTN_BACKWARD_FACTOR = 2.5  # fused SDPA backward: recomputed scores + 4 products (torch's formula)
GENERATION_MODES = ("cached", "recompute", "joint")


# ----------------------------------------------------------------------------- accounting


@dataclass
class _Tally:
    """Forward and backward FLOPs of one component."""

    forward: float = 0.0
    backward: float = 0.0

    def linear(self, rows: float, d_in: int, d_out: int, input_grad: bool = True) -> None:
        flops = 2.0 * rows * d_in * d_out
        self.forward += flops
        self.backward += flops * (2.0 if input_grad else 1.0)

    def attention(self, batch: float, queries: float, keys: float, width: int) -> None:
        """Dense SDPA over all heads: QK^T + PV = 2 * (2 * B * H * Lq * Lk * d), H * d = width."""
        flops = 4.0 * batch * queries * keys * width
        self.forward += flops
        self.backward += ATTN_BACKWARD_FACTOR * flops

    @property
    def train(self) -> float:
        return self.forward + self.backward


@dataclass
class _Ledger:
    parts: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> _Tally:
        return self.parts.setdefault(name, _Tally())

    def summary(self, train: bool) -> dict:
        out = {name: (t.train if train else t.forward) for name, t in self.parts.items()}
        out["total"] = sum(out.values())
        if train:
            out["forward"] = sum(t.forward for t in self.parts.values())
            out["backward"] = sum(t.backward for t in self.parts.values())
        return out


def _text_len(cfg: ModelConfig, text_len: Optional[int]) -> int:
    if cfg.text_dim <= 0:
        return 0
    length = cfg.text_len if text_len is None else int(text_len)
    if length < 1:
        raise ValueError(f"text_len={text_len} must be >= 1 (or None for model.text_len)")
    return length


def _backbone_pass(t: _Tally, cfg: ModelConfig, batch: float, queries: float, keys: float,
                   text_len: int, text_kv: bool = True) -> None:
    """One `VideoMAR.backbone` call: `queries` tokens per sample attending to `keys` tokens.

    text_kv=False: the text K/V come from the KV cache (computed on the clip's first pass).
    """
    w = cfg.width
    hidden = int(w * cfg.mlp_ratio)
    rows = batch * queries
    t.linear(rows, cfg.token_dim, w, input_grad=False)  # token_embed
    for _ in range(cfg.depth):
        t.linear(rows, w, 3 * w)  # fused QKV
        t.attention(batch, queries, keys, w)
        t.linear(rows, w, w)  # output projection
        if text_len:
            t.linear(rows, w, w)  # cross-attention query
            if text_kv:
                t.linear(batch * text_len, w, 2 * w)  # cross-attention K/V of the projected text
            t.attention(batch, queries, text_len, w)
            t.linear(rows, w, w)
        t.linear(rows, w, hidden)
        t.linear(rows, hidden, w)


def _head_net(t: _Tally, cfg: ModelConfig, rows: float, cond: bool = True) -> None:
    """One SimpleMLPAdaLN evaluation on `rows` tokens (x_t, t and z need no gradient except z).

    cond=False: cond_embed(z) is reused (the sampler computes it once per chain, `_head_chain`).
    """
    hw, dim = cfg.head_width, cfg.token_dim
    t.linear(rows, dim, hw, input_grad=False)  # input_proj on x_t
    t.linear(rows, FREQ_DIM, hw, input_grad=False)  # timestep MLP on sinusoid features
    t.linear(rows, hw, hw)
    if cond:
        t.linear(rows, cfg.width, hw)  # cond_embed(z)
    for _ in range(cfg.head_depth):
        t.linear(rows, hw, 3 * hw)  # adaLN (shift, scale, gate)
        t.linear(rows, hw, hw)
        t.linear(rows, hw, hw)
    t.linear(rows, hw, 2 * hw)  # final adaLN
    t.linear(rows, hw, 2 * dim)  # [eps | v]


def _head_chain(t: _Tally, cfg: ModelConfig, rows: float, steps: int) -> None:
    """`DiffusionHead.sample` over `rows` net rows: cond_embed once, then `steps` evaluations."""
    t.linear(rows, cfg.width, cfg.head_width)
    for _ in range(steps):
        _head_net(t, cfg, rows, cond=False)


# ----------------------------------------------------------------------------- training


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def expected_num_masked(cfg: ModelConfig, maskable: int) -> float:
    """E[ceil(N * r)] (clamped to [1, N]) for MAR's r ~ TruncNormal(1, std) on [min, 1]."""
    lo, std = cfg.mask_ratio_min, cfg.mask_ratio_std
    a, b = _normal_cdf((lo - 1.0) / std), _normal_cdf(0.0)

    def cdf(r: float) -> float:  # P(ratio <= r)
        return min(1.0, max(0.0, (_normal_cdf((r - 1.0) / std) - a) / (b - a)))

    expected, prev = 0.0, 0.0
    for k in range(1, maskable + 1):  # P(ceil(N r) <= k) = P(r <= k / N)
        c = cdf(k / maskable)
        expected += k * (c - prev)
        prev = c
    return expected


def train_step_breakdown(model_cfg: ModelConfig, batch: int, num_frames: int,
                         grid: tuple[int, int], text_len: int | None = None, *,
                         target_frame: int | None = None,
                         num_masked: float | None = None) -> dict:
    """FLOPs of one training step (forward + backward) by component, plus totals.

    Keys: backbone, head, text (each forward + backward), total, forward, backward.
    `target_frame` / `num_masked` pin the step's draws (as in `TrainDraws`); left None they are
    averaged over their distributions.
    """
    cfg = model_cfg
    if batch < 1 or num_frames < 2:
        raise ValueError(f"batch={batch} must be >= 1 and num_frames={num_frames} >= 2 (a "
                         "conditioning frame and a target)")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid={grid} must be (tokens per column, tokens per row), both >= 1")
    per_frame = grid[0] * grid[1]
    lt = _text_len(cfg, text_len)
    if not cfg.trains_all_frames:
        if target_frame is not None and not 1 <= target_frame < num_frames:
            raise ValueError(f"target_frame={target_frame} must be in [1, {num_frames - 1}]")
        targets = [target_frame] if target_frame is not None else list(range(1, num_frames))
        lengths = [f + 1 for f in targets]  # the clip truncated after the target frame
        maskable = per_frame
    else:
        if cfg.num_cond_frames >= num_frames:
            raise ValueError(f"num_cond_frames={cfg.num_cond_frames} leaves no frame to generate "
                             f"in a {num_frames}-frame clip")
        # full: the whole clip; causal: clean frames 0..T-2 then masked frames c..T-1
        joint = not cfg.pattern.causal
        lengths = [num_frames if joint else 2 * num_frames - 1 - cfg.num_cond_frames]
        maskable = (num_frames - cfg.num_cond_frames) * per_frame
    masked = expected_num_masked(cfg, maskable) if num_masked is None else float(num_masked)
    ledger = _Ledger()
    weight = 1.0 / len(lengths)
    for frames in lengths:
        part = _Ledger()
        tokens = frames * per_frame
        _backbone_pass(part["backbone"], cfg, batch, tokens, tokens, lt)
        for name, tally in part.parts.items():
            ledger[name].forward += weight * tally.forward
            ledger[name].backward += weight * tally.backward
    if lt:
        ledger["text"].linear(batch * lt, cfg.text_dim, cfg.width)  # text_proj
    _head_net(ledger["head"], cfg, batch * cfg.diffusion_batch_mul * masked)
    return ledger.summary(train=True)


def train_step_flops(model_cfg: ModelConfig, batch: int, num_frames: int,
                     grid: tuple[int, int], text_len: int | None = None, **draws: Any) -> float:
    """Analytic FLOPs of one training step (forward + backward) of `VideoMAR.forward`.

    num_frames and grid are token-level (latent frames, latent tokens per side). Keyword
    `target_frame=` / `num_masked=` pin the random draws; by default the expectation.
    """
    return train_step_breakdown(model_cfg, batch, num_frames, grid, text_len, **draws)["total"]


# ----------------------------------------------------------------------------- generation


def _check_generation(cfg: ModelConfig, grid, num_iter: int, batch: int) -> int:
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid={grid} must be (tokens per column, tokens per row), both >= 1")
    per_frame = grid[0] * grid[1]
    if not 1 <= num_iter <= per_frame:
        raise ValueError(f"num_iter={num_iter} must be in [1, {per_frame}] (tokens per frame)")
    if batch < 1:
        raise ValueError(f"batch={batch} must be >= 1")
    return per_frame


def attended_frames(cfg: ModelConfig, frame_index: int) -> int:
    """Frames a cached pass of frame `frame_index` attends to (its own included), as the
    attention pattern's KV cache holds them (core/pattern.py)."""
    return cfg.pattern.attended_frames(frame_index)


def generate_frame_breakdown(model_cfg: ModelConfig, frame_index: int, grid: tuple[int, int], *,
                             num_iter: int = 8, batch: int = 1, use_kv_cache: bool = True,
                             cfg_scale: float = 1.0, num_sampling_steps: int | None = None,
                             text_len: int | None = None, commit: bool = True) -> dict:
    """Inference FLOPs {backbone, head, total} of generating latent frame `frame_index` (>= 1).

    With the cache: K passes of the frame's tokens against the cached frames (frame_index of
    them, or the anchor + window under model.temporal_window, see `attended_frames`), plus (when
    `commit`) the pass appending the finished frame; the text K/V come from the cache (counted
    once, in the prefill of `generate_video_flops`). Without: K passes over frames
    0..frame_index (dense, whatever the window). The head embeds z once per chain and runs
    `num_sampling_steps` evaluations per token. CFG (cfg_scale != 1) doubles the batch of both.
    """
    cfg = model_cfg
    if use_kv_cache and not cfg.pattern.causal:
        raise ValueError("use_kv_cache=True needs attn='causal'; full attention generates all "
                         "frames jointly: use generate_video_flops(..., mode='joint')")
    per_frame = _check_generation(cfg, grid, num_iter, batch)
    if frame_index < 1:
        raise ValueError(f"frame_index={frame_index} must be >= 1 (frame 0 is the condition)")
    rows = batch * (2 if cfg_scale != 1.0 else 1)
    lt = _text_len(cfg, text_len)
    steps = cfg.num_sampling_steps if num_sampling_steps is None else num_sampling_steps
    ledger = _Ledger()
    seen = (frame_index + 1) * per_frame
    queries = per_frame if use_kv_cache else seen
    if use_kv_cache:  # keys: what the (possibly windowed) cache holds + the frame itself
        seen = attended_frames(cfg, frame_index) * per_frame
    passes = num_iter + (1 if use_kv_cache and commit else 0)
    for _ in range(passes):  # with the cache, the text K/V were computed by the prefill
        _backbone_pass(ledger["backbone"], cfg, rows, queries, seen, lt, text_kv=not use_kv_cache)
    _head_chain(ledger["head"], cfg, rows * per_frame, steps)
    return ledger.summary(train=False)


def generate_frame_flops(model_cfg: ModelConfig, frame_index: int, grid: tuple[int, int],
                         **options: Any) -> float:
    """Total inference FLOPs of one generated frame; options as `generate_frame_breakdown`."""
    return generate_frame_breakdown(model_cfg, frame_index, grid, **options)["total"]


def generate_video_flops(model_cfg: ModelConfig, num_frames: int, grid: tuple[int, int], *,
                         mode: str = "cached", num_iter: int = 8, batch: int = 1,
                         num_cond_frames: int | None = None, cfg_scale: float = 1.0,
                         num_sampling_steps: int | None = None,
                         text_len: int | None = None) -> dict:
    """Inference FLOPs of `core.sampler.sample_latents` for a whole clip of `num_frames` frames.

    mode: "cached" (KV cache: prefill + per-frame passes; the last frame is not committed),
    "recompute" (causal, every pass over all frames so far), "joint" (full attention: K x G
    passes over the whole clip). Returns {backbone, head, text, total, per_frame} where
    per_frame lists {backbone, head} of each generated frame (not for "joint").
    """
    if mode not in GENERATION_MODES:
        raise ValueError(f"mode={mode!r}: choose one of {GENERATION_MODES}")
    cfg = model_cfg
    if (mode == "joint") == cfg.pattern.causal:
        raise ValueError(f"mode={mode!r} does not fit attn={cfg.attn!r}: 'joint' is the "
                         "full-attention sampler, 'cached'/'recompute' the causal one")
    per_frame = _check_generation(cfg, grid, num_iter, batch)
    num_cond = cfg.num_cond_frames if num_cond_frames is None else num_cond_frames
    if not 1 <= num_cond < num_frames:
        raise ValueError(f"num_frames={num_frames} must exceed num_cond_frames={num_cond} >= 1")
    guided = cfg_scale != 1.0
    rows = batch * (2 if guided else 1)
    lt = _text_len(cfg, text_len)
    steps = cfg.num_sampling_steps if num_sampling_steps is None else num_sampling_steps
    ledger = _Ledger()
    if lt:  # encode_context once per clip (and once more for the null branch)
        ledger["text"].linear(rows * lt, cfg.text_dim, cfg.width)
    frames = []
    if mode == "joint":
        total = num_frames * per_frame
        generated = num_frames - num_cond
        for _ in range(num_iter * generated):
            _backbone_pass(ledger["backbone"], cfg, rows, total, total, lt)
        _head_chain(ledger["head"], cfg, rows * generated * per_frame, steps)
    else:
        cached = mode == "cached"
        if cached:  # prefill the conditioning frames
            tokens = num_cond * per_frame
            _backbone_pass(ledger["backbone"], cfg, rows, tokens, tokens, lt)
        for f in range(num_cond, num_frames):
            part = generate_frame_breakdown(
                cfg, f, grid, num_iter=num_iter, batch=batch, use_kv_cache=cached,
                cfg_scale=cfg_scale, num_sampling_steps=steps, text_len=text_len,
                commit=cached and f + 1 < num_frames)
            frames.append({"backbone": part["backbone"], "head": part["head"]})
            ledger["backbone"].forward += part["backbone"]
            ledger["head"].forward += part["head"]
    out = ledger.summary(train=False)
    out.setdefault("text", 0.0)
    out["per_frame"] = frames
    return out


# ----------------------------------------------------------------------------- measured


def _cpu_flash_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return _fc.sdpa_backward_flop_count(grad_out, query, key, value)


def _extra_formulas() -> dict:
    """Formulas for SDPA kernels torch's counter does not know (the CPU flash kernels)."""
    aten = torch.ops.aten
    mapping = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_flash_forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward",
                           _cpu_flash_backward)):
        op = getattr(aten, name, None)
        if op is not None and op not in _fc.flop_registry:
            mapping[op] = formula
    return mapping


def flop_counter() -> _fc.FlopCounterMode:
    """A silent FlopCounterMode that also counts the CPU flash-attention kernels (dense)."""
    return _fc.FlopCounterMode(display=False, custom_mapping=_extra_formulas())


def measured_flops_by_op(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, int]]:
    """Run fn(*args, **kwargs) under the counter -> (its result, {op name: FLOPs})."""
    counter = flop_counter()
    with counter:
        result = fn(*args, **kwargs)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return result, by_op


def measured_flops(fn: Callable, *args: Any, **kwargs: Any) -> float:
    """FLOPs torch executes while running fn(*args, **kwargs) (forward and any backward in fn)."""
    return float(sum(measured_flops_by_op(fn, *args, **kwargs)[1].values()))
