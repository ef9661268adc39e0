"""Plain dataclass configs: the single source of truth for every knob in the harness.

Hydra only appears at the edge (`ablations/run.py` registers these classes as schemas), so tests,
notebooks and other programs build the same objects with plain keyword arguments.
`ModelConfig()` with no arguments is the `tiny` preset. `PRESETS` goes up to the paper's
1536-wide, 36-deep configuration (VideoMAR arXiv 2506.14168; values from its released training
code).
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from core.pattern import AttentionPattern

ATTN_MODES = ("causal", "full")
TARGET_FRAMES = ("one", "all")
POS_EMBS = ("rope", "learned")
TOKENIZERS = ("patch", "vae", "video_vae")
TEXT_ENCODERS = ("hashed", "t5")
TEMPERATURE_SCHEDULES = ("constant", "progressive", "list")
CFG_SCHEDULES = ("linear", "constant")
HEAD_SAMPLERS = ("ddpm", "dpm", "sun")
HEAD_SOLVERS = ("ode", "sde")
GUIDANCE_PASSES = ("cfg", "sun", "distilled")
DATA_SOURCES = ("synthetic", "folder")
LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(kw_only=True)
class TokenizerConfig:
    """How pixels become continuous tokens (see core/tokenizers.py)."""

    # "patch": raw pixel patches; "vae": diffusers AutoencoderKL from vae_path, frame by frame;
    # "video_vae": a diffusers video VAE with temporal compression (AutoencoderKLWan, ...Cosmos,
    # ...CogVideoX, ...HunyuanVideo) from vae_path, clip by clip (core/video_tokenizer.py)
    kind: str = "patch"
    patch_size: int = 4  # pixels per token side (patch) or latent pixels per token side (vae)
    image_channels: int = 3
    vae_path: Optional[str] = None  # local directory holding config.json + weights
    vae_latent_channels: int = 4  # must match the VAE's config.json (checked on load)
    vae_downsample: int = 8  # spatial stride of the VAE (checked on load)
    # video_vae only: frames per latent frame after the first (checked on load). A clip of T frames
    # becomes 1 + (T-1)/vae_temporal latent frames: frame 0 alone, then groups of vae_temporal.
    vae_temporal: int = 4
    # Patch tokens: pixels in [-1, 1] are normalised as (x - patch_shift) * patch_scale, so the
    # diffusion head sees roughly zero-mean, unit-variance tokens (as MAR scales its VAE latents).
    # The defaults fit the built-in sprites data (pixels in [-1, 1]: mean -0.31, std 0.42; pinned
    # by tests/test_tokenizers.py); for other data measure them, or use 0 and 1.
    patch_shift: float = -0.313
    patch_scale: float = 2.4

    def __post_init__(self) -> None:
        _check(self.kind in TOKENIZERS, f"tokenizer.kind={self.kind!r}: choose one of {TOKENIZERS}")
        _check(self.patch_size >= 1, f"tokenizer.patch_size={self.patch_size} must be >= 1")
        _check(self.patch_scale > 0, f"tokenizer.patch_scale={self.patch_scale} must be > 0")
        _check(self.vae_temporal >= 1, f"tokenizer.vae_temporal={self.vae_temporal} must be >= 1")

    @property
    def temporal_stride(self) -> int:
        """Pixel frames per latent frame after the first (1 unless kind=video_vae)."""
        return self.vae_temporal if self.kind == "video_vae" else 1

    def latent_frames(self, frames: int, what: str = "the clip") -> int:
        """Latent frames of a `frames`-frame clip: 1 + (frames-1)/k; ConfigError if it does not fit."""
        k = self.temporal_stride
        if frames < 1 or (frames - 1) % k:
            valid = ", ".join(str(1 + k * n) for n in range(1, 6))
            raise ConfigError(f"{what} has {frames} frames, but tokenizer.kind={self.kind} with "
                              f"temporal compression {k} needs 1 + {k}*n frames (the first frame "
                              f"alone, then groups of {k}): use e.g. {valid}, ...")
        return 1 + (frames - 1) // k

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames behind `latent_frames` latent frames: 1 + k*(latent_frames-1)."""
        return 1 + self.temporal_stride * (latent_frames - 1)

    @property
    def token_dim(self) -> int:
        channels = self.image_channels if self.kind == "patch" else self.vae_latent_channels
        return channels * self.patch_size**2

    @property
    def spatial_stride(self) -> int:
        """Pixels per token side."""
        return self.patch_size * (1 if self.kind == "patch" else self.vae_downsample)


@dataclass(kw_only=True)
class TextEncoderConfig:
    """Which text encoder turns captions into features (see core/text_encoder.py).

    "hashed": the small trainable hashed-word encoder (core/text.py). "t5": a frozen transformers
    T5 / UMT5 / MT5 encoder and its tokenizer from local directories, captions padded or cut to
    model.text_len tokens; model.text_dim must equal its d_model (checked on load).
    """

    kind: str = "hashed"
    path: Optional[str] = None  # kind=t5: directory with config.json + weights (save_pretrained)
    tokenizer_path: Optional[str] = None  # kind=t5: tokenizer directory; None = path

    def __post_init__(self) -> None:
        _check(self.kind in TEXT_ENCODERS,
               f"model.text_encoder.kind={self.kind!r}: choose one of {TEXT_ENCODERS}")


@dataclass(kw_only=True)
class ModelConfig:
    """Backbone + diffusion head. Defaults are the `tiny` preset (seconds per step on CPU)."""

    width: int = 96
    depth: int = 3
    # Two 48-d heads, not four 24-d ones: with 3D RoPE a 24-d head keeps 3 rotary frequencies per
    # spatial axis, too few to tell "the same place" from "6 tokens away" on an 8x8 grid.
    num_heads: int = 2
    mlp_ratio: float = 4.0
    attn: str = "causal"  # "causal": block-causal over frames (VideoMAR); "full": joint "total mask"
    # Temporal attention window (not in the paper; attn="causal" only): W > 0 lets a frame attend
    # to the conditioning frames (the I2V anchor, always kept), its W previous frames and itself,
    # in training and sampling; the KV cache then holds num_cond_frames + W frames, so a generated
    # frame's cost stops growing with its index. 0 = unlimited (VideoMAR).
    temporal_window: int = 0
    # Which frames carry the next-frame diffusion loss in a causal training step. "one": VideoMAR's
    # single target frame f ~ U{1..T-1}, clip truncated after it. "all" (not in the paper): every
    # generated frame at once, as a second stream of masked frames each attending to the clean
    # frames before it and to itself (MAGI's complete teacher forcing, arXiv 2501.12389): the same
    # per-frame loss, T-1 frames of signal per clip instead of one (README training recipe).
    target_frames: str = "one"
    # Per-head RMSNorm on Q and K (Step-Video block). Off in the small presets: it caps attention
    # logits at sqrt(head_dim), too flat to copy one position out of hundreds (README recipe).
    qk_norm: bool = False
    # Bias on the self-attention Q/K/V projection (Step-Video: none). With RoPE a key bias lets a
    # query attend by relative position regardless of content, e.g. "the same place one frame ago".
    qkv_bias: bool = True
    # Activation checkpointing: recompute each block's activations in backward (memory for time).
    grad_checkpoint: bool = False
    # Masked self-attention of whole-frame passes: "sdpa" (a dense bool mask; every tile computed)
    # or "flex" (FlexAttention with a block mask: hidden frame tiles skipped; GPU training, as
    # FlexAttention has no backward on the CPU).
    attn_backend: str = "sdpa"
    # RoPE frequency base. 100 for the 8x8-token built-in data: with 10000 and 8 frequencies per
    # axis the lower ones barely turn across 8 tokens. The base and paper presets use 10000.
    rope_base: float = 100.0
    # (t, h, w) split of the head dimension for 3D RoPE; each even, summing to head_dim.
    # Empty = about equal thirds, each even, time taking the remainder ([16, 16, 16] for the tiny
    # preset's 48-d heads): the spatial axes need as many frequencies as time on small grids. The
    # base and paper presets use VideoMAR's proportional [head/2, head/4, head/4].
    rope_split: List[int] = field(default_factory=list)
    # "rope": 3D RoPE on Q/K (VideoMAR). "learned": the ablation baseline, factorised learned
    # absolute (t, h, w) embeddings added to the input, tables of max_frames / max_grid entries;
    # positions beyond what training visited keep their random init (no extrapolation by design).
    pos_emb: str = "rope"
    max_frames: int = 32  # learned tables only: latent frames
    max_grid: int = 32  # learned tables only: tokens per side
    # Text cross-attention. text_dim = 0 disables it (and CFG with it).
    text_dim: int = 64
    text_len: int = 16
    text_vocab: int = 4096  # hashed word vocabulary of the built-in text encoder
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    cond_drop_prob: float = 0.1  # replace the text by the learned null embedding (for CFG)
    # Masking (MAR): mask ratio r ~ TruncNormal(1.0, mask_ratio_std) on [mask_ratio_min, 1].
    mask_ratio_min: float = 0.7
    mask_ratio_std: float = 0.25
    num_cond_frames: int = 1  # clean conditioning latent frames (1 for image-to-video)
    # Per-token diffusion head (MAR SimpleMLPAdaLN).
    head_depth: int = 3
    head_width: int = 128
    num_train_timesteps: int = 1000
    num_sampling_steps: int = 50  # respaced DDPM steps at inference (MAR: 100)
    diffusion_batch_mul: int = 4
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.tokenizer, dict):
            self.tokenizer = TokenizerConfig(**self.tokenizer)
        if isinstance(self.text_encoder, dict):
            self.text_encoder = TextEncoderConfig(**self.text_encoder)
        self.rope_split = list(self.rope_split)
        _check(self.attn in ATTN_MODES, f"model.attn={self.attn!r}: choose one of {ATTN_MODES}")
        _check(self.attn_backend in ("sdpa", "flex"),
               f"model.attn_backend={self.attn_backend!r}: choose 'sdpa' or 'flex'")
        _check(self.target_frames in TARGET_FRAMES,
               f"model.target_frames={self.target_frames!r}: choose one of {TARGET_FRAMES}")
        _check(self.pos_emb in POS_EMBS, f"model.pos_emb={self.pos_emb!r}: choose one of {POS_EMBS}")
        _check(self.max_frames >= 1 and self.max_grid >= 1, "model.max_frames/max_grid must be >= 1")
        _check(self.width % self.num_heads == 0,
               f"model.width={self.width} is not divisible by model.num_heads={self.num_heads}")
        _check(self.head_dim % 2 == 0, f"head dim {self.head_dim} must be even for RoPE")
        split = self.rope_axes
        _check(len(split) == 3 and all(d % 2 == 0 and d >= 0 for d in split)
               and sum(split) == self.head_dim,
               f"model.rope_split={self.rope_split}: need three even sizes summing to the head dim "
               f"{self.head_dim} (e.g. {self._default_split()})")
        _check(0.0 < self.mask_ratio_min <= 1.0, "model.mask_ratio_min must be in (0, 1]")
        _check(self.num_cond_frames >= 1, "model.num_cond_frames must be >= 1")
        _check(self.temporal_window >= 0,
               f"model.temporal_window={self.temporal_window} must be >= 0 (0 = unlimited)")
        _check(self.temporal_window == 0 or self.attn == "causal",
               f"model.temporal_window={self.temporal_window} needs model.attn='causal' (full "
               f"attention has no frame order to window); set model.temporal_window=0")
        _check(self.target_frames == "one" or self.attn == "causal",
               f"model.target_frames={self.target_frames!r} needs model.attn='causal' (full "
               f"attention already trains every generated frame); set model.target_frames='one'")
        _check(0.0 <= self.cond_drop_prob < 1.0, "model.cond_drop_prob must be in [0, 1)")
        _check(1 <= self.num_sampling_steps <= self.num_train_timesteps,
               "model.num_sampling_steps must be in [1, num_train_timesteps]")

    @property
    def trains_all_frames(self) -> bool:
        """Does a training step carry the loss of every generated frame (full attention, or causal
        with target_frames="all") rather than of one sampled target frame?"""
        return not self.pattern.causal or self.target_frames == "all"

    @property
    def pattern(self) -> AttentionPattern:
        """Which frame attends to which (core/pattern.py): the one place `attn` is read."""
        return AttentionPattern.of(self)

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def _default_split(self) -> List[int]:
        third = (self.head_dim // 3) // 2 * 2
        return [self.head_dim - 2 * third, third, third]

    @property
    def rope_axes(self) -> List[int]:
        return list(self.rope_split) if self.rope_split else self._default_split()

    @property
    def token_dim(self) -> int:
        return self.tokenizer.token_dim


@dataclass(kw_only=True)
class SamplerConfig:
    """Inference knobs (VideoMAR section 2.8-2.9 of the reference)."""

    num_iter: int = 8  # masked iterations per latent frame (MAR cosine schedule)
    cfg_scale: float = 1.0  # 1.0 = no guidance (single branch)
    cfg_schedule: str = "linear"  # linear in revealed tokens (MAR), or constant
    # First generated frame (or every frame when constant). 0.6: the small models' per-token
    # distributions are too wide at 1.0 (README training recipe); MAR samples at about 1.
    temperature: float = 0.6
    temperature_schedule: str = "constant"
    temperature_end: float = 0.9  # last frame's temperature for "progressive"
    temperatures: List[float] = field(default_factory=list)  # explicit per generated frame ("list")
    clip_latents: bool = True  # clip to the tokenizer's range from the 2nd generated frame on
    # Clamp the head's predicted x0 to the tokenizer's range at every diffusion step (IDDPM's
    # clip_denoised). MAR/VideoMAR do not; without it a briefly trained head's samples explode
    # (the first step from t=999 amplifies eps errors ~600x), so small runs need it. See README.
    clip_denoised: bool = True
    num_sampling_steps: Optional[int] = None  # None: the model's num_sampling_steps
    use_kv_cache: Optional[bool] = None  # None: on for causal attention, off for full
    # How the per-token head samples: "ddpm" = MAR's respaced DDPM chain (CFG runs the head on
    # [cond; uncond]); "dpm" = the same frozen head (and CFG) under DPM-Solver++ (the few-step
    # baseline without an adapter); "sun" = the SpeedUpNet head adapter
    # (core/sun/head_adapter.py): one pass on (z_cond, z_uncond) gives the guided eps,
    # DPM-Solver++ over num_sampling_steps (4). core/head_sampler.py builds the chosen one.
    head: str = "ddpm"
    # head=dpm|sun: "sde" = SDE-DPM-Solver++ (fresh noise every step, scaled by the temperature
    # as in MAR's DDPM chain); "ode" = DPM-Solver++ (the temperature scales x_T). At 4 steps the
    # SDE solver scored far closer to the 100-step DDPM head (README, SUN on the head).
    head_solver: str = "sde"
    # head=sun: the adapter's safetensors file. Empty in a harness run: distilled from the trained
    # head first (RunConfig.head_distill) and cached next to the training checkpoint.
    head_adapter: Optional[str] = None
    # Where guidance happens: "cfg" = the backbone on [cond; uncond] (a doubled batch and KV
    # cache), the head mixes the two eps; "sun" = one backbone pass through the SpeedUpNet
    # backbone adapter (core/sun/backbone_adapter.py) on [caption | negative], the head runs
    # unguided on its features. guidance=sun without backbone_adapter: a harness run distils one
    # (head_distill.*) and caches it next to the training checkpoint. "distilled" = a guidance-
    # distilled student (Meng et al.; core/sun/guided_student.py): a fine-tuned copy of the model
    # told w by an embedding, one backbone pass on the caption; without guided_student a harness
    # run distils one the same way.
    guidance: str = "cfg"
    backbone_adapter: Optional[str] = None
    guided_student: Optional[str] = None
    # The unconditional branch's text: None = the learned null embedding (MAR/VideoMAR's CFG),
    # else this prompt, encoded like a caption (a controllable negative prompt, as in SUN).
    negative_prompt: Optional[str] = None

    def __post_init__(self) -> None:
        self.temperatures = list(self.temperatures)
        _check(self.num_iter >= 1, "sampler.num_iter must be >= 1")
        _check(self.cfg_scale >= 0, "sampler.cfg_scale must be >= 0")
        _check(self.cfg_schedule in CFG_SCHEDULES,
               f"sampler.cfg_schedule={self.cfg_schedule!r}: choose one of {CFG_SCHEDULES}")
        _check(self.temperature_schedule in TEMPERATURE_SCHEDULES,
               f"sampler.temperature_schedule={self.temperature_schedule!r}: choose one of "
               f"{TEMPERATURE_SCHEDULES}")
        _check(self.temperature_schedule != "list" or len(self.temperatures) > 0,
               "sampler.temperature_schedule=list needs sampler.temperatures=[t1,t2,...]")
        _check(self.head in HEAD_SAMPLERS,
               f"sampler.head={self.head!r}: choose one of {HEAD_SAMPLERS}")
        _check(self.head_solver in HEAD_SOLVERS,
               f"sampler.head_solver={self.head_solver!r}: choose one of {HEAD_SOLVERS}")
        _check(self.head != "sun" or self.num_sampling_steps is not None,
               "sampler.head=sun needs sampler.num_sampling_steps (the student's steps, e.g. 4)")
        _check(self.head != "sun" or self.cfg_scale != 1.0,
               "sampler.head=sun needs classifier-free guidance (sampler.cfg_scale != 1): the "
               "adapter reads the null condition from the backbone's unconditional branch")
        _check(self.guidance in GUIDANCE_PASSES,
               f"sampler.guidance={self.guidance!r}: choose one of {GUIDANCE_PASSES}")
        _check(self.guidance == "cfg" or (self.cfg_scale != 1.0 and self.head != "sun"),
               f"sampler.guidance={self.guidance} folds guidance into the backbone: it needs "
               "sampler.cfg_scale != 1 and an unguided head (sampler.head=ddpm or dpm, not sun)")


@dataclass(kw_only=True)
class HeadDistillConfig:
    """Distilling a SUN adapter: on the head (core/sun/head_distill.py, sampler.head=sun) or on
    the backbone's cross-attention (core/sun/backbone_distill.py, sampler.guidance=sun); or a
    guidance-distilled student (the same states and losses, sampler.guidance=distilled).

    Conditions (z_cond, z_uncond) are recorded from the teacher sampler (sampler.head=ddpm at
    teacher_sampling_steps) on training clips; targets are the frozen head's CFG ODE
    trajectories (DPM-Solver++ teacher_steps) from the same x_T, guidance drawn in [1, cfg_max].
    """

    num_clips: int = 16  # training clips whose sampling conditions are recorded
    teacher_sampling_steps: int = 100  # DDPM steps of the recording run (the ddpm100_cfg head)
    # DPM-Solver++ steps of the teacher's CFG trajectories (SUN: 25). 40 puts the student's
    # trailing 4-step grid (999, 749, 499, 249) on the teacher's (every 25th step).
    teacher_steps: int = 40
    pool_size: int = 4096  # tokens (condition pairs) with cached teacher trajectories
    steps: int = 600
    batch_cfg: int = 512  # tokens per step for the guided-eps (CFG distillation) loss
    batch_msc: int = 256  # tokens per step for the multi-step consistency loss
    batch_states: int = 8  # sampler.guidance=sun|distilled: teacher sampling states per step
    lr: float = 1e-3
    # sampler.guidance=distilled: learning rate of the student's copied model weights (its new
    # w embedding trains at lr), lower since they start from a trained model.
    finetune_lr: float = 1e-4
    lambda_msc: float = 1.0  # 0 = CFG distillation only (the "without MSC" ablation)
    cfg_max: Optional[float] = None  # None: the run's sampler.cfg_scale

    def __post_init__(self) -> None:
        _check(self.num_clips >= 1 and self.pool_size >= 1 and self.steps >= 0,
               "head_distill.num_clips/pool_size must be >= 1 and steps >= 0")
        _check(min(self.batch_cfg, self.batch_msc, self.batch_states) >= 1,
               "head_distill batches must be >= 1")
        _check(self.lambda_msc >= 0, "head_distill.lambda_msc must be >= 0 (0 disables MSC)")
        _check(self.lr > 0 and self.finetune_lr >= 0,
               "head_distill.lr must be > 0 and head_distill.finetune_lr >= 0")
        _check(self.cfg_max is None or self.cfg_max >= 1.0, "head_distill.cfg_max must be >= 1")


@dataclass(kw_only=True)
class DataConfig:
    """Where clips come from: the built-in procedural sprites or a folder of real videos."""

    source: str = "synthetic"
    height: int = 32
    width: int = 32
    num_frames: int = 8
    folder: Optional[str] = None  # for source=folder: directory of mp4/webm files
    frame_stride: int = 1  # folder: take every n-th decoded frame
    num_sprites: int = 2  # synthetic: sprites per clip
    camera_pan: bool = True  # synthetic: slow background pan
    num_train: int = 4096  # clips per split (synthetic: disjoint seed ranges)
    num_val: int = 64
    num_test: int = 64

    def __post_init__(self) -> None:
        _check(self.source in DATA_SOURCES,
               f"data.source={self.source!r}: choose one of {DATA_SOURCES}")
        _check(self.num_frames >= 2, "data.num_frames must be >= 2 (a conditioning frame + 1)")
        _check(self.height >= 1 and self.width >= 1 and self.frame_stride >= 1,
               f"data.height={self.height}, data.width={self.width} and data.frame_stride="
               f"{self.frame_stride} must all be >= 1")
        _check(self.source != "folder" or bool(self.folder),
               "data.source=folder needs data.folder=/path/to/videos")


@dataclass(kw_only=True)
class TrainConfig:
    """Optimisation (AdamW, linear warmup then constant lr as in MAR, EMA, grad clipping)."""

    steps: int = 500
    batch_size: int = 8  # the global batch (all DDP ranks together)
    # Micro-batches per optimiser step on each rank: batch_size / (ranks x grad_accum) clips per
    # forward, the gradients summed before one update (same step as the whole batch at once).
    grad_accum: int = 1
    lr: float = 1e-3
    warmup_steps: int = 20
    # After warmup: "constant" (MAR) or "cosine" decay to lr * min_lr_ratio at the end of training
    # (progress in steps, or in FLOPs under a budget).
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.02
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 3.0
    ema_decay: float = 0.99
    bf16: bool = True  # autocast on CUDA only; CPU always runs fp32
    ckpt_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    # Temporal short-to-long curriculum (VideoMAR section 2.10): clip lengths in frames per stage,
    # e.g. [2, 4, 8]; empty = off (always data.num_frames). Training clips are the first n frames.
    frame_stages: List[int] = field(default_factory=list)
    # Spatial progressive resolution: frame heights per stage, e.g. [16, 32]; width keeps the data's
    # aspect ratio; frames are area-downsampled. Empty = off (always data.height x data.width).
    res_stages: List[int] = field(default_factory=list)
    # Where stage i+1 begins, as a fraction of training progress (steps/steps, or FLOPs/flop_budget
    # when a budget is set); len = stages - 1. Empty = equal-length stages.
    frame_milestones: List[float] = field(default_factory=list)
    res_milestones: List[float] = field(default_factory=list)
    # Stop once the cumulative analytic training FLOPs reach this budget (0 = no budget; `steps`
    # stays an upper bound). Makes "same compute, which is better?" comparisons possible.
    flop_budget: float = 0.0
    # Alternatively a budget in units of reference steps: budget_steps x the expected FLOPs of one
    # VideoMAR step (block-causal, one target frame, no window) on full-size clips without a
    # curriculum, so arms with other attention patterns get equal compute. Overrides flop_budget.
    budget_steps: int = 0
    # Held-out loss every val_every steps (0 = off) -> the (step, FLOPs, val_loss) curve behind
    # "same quality, how much compute?".
    val_every: int = 0
    # A NaN/inf loss or gradient norm: "stop" raises NonFiniteLossError (the last good checkpoint
    # stays on disk); "skip" drops that step (no update, loss recorded as NaN) and stops only when
    # more than max_nonfinite steps of the run were skipped.
    nonfinite: str = "stop"
    max_nonfinite: int = 10

    def __post_init__(self) -> None:
        _check(self.steps >= 1 and self.batch_size >= 1, "train.steps and train.batch_size >= 1")
        _check(self.lr_schedule in LR_SCHEDULES,
               f"train.lr_schedule={self.lr_schedule!r}: choose one of {LR_SCHEDULES}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "train.min_lr_ratio must be in [0, 1]")
        _check(self.nonfinite in ("stop", "skip"),
               f"train.nonfinite={self.nonfinite!r}: choose 'stop' or 'skip'")
        _check(self.max_nonfinite >= 0, "train.max_nonfinite must be >= 0")
        _check(self.lr > 0 and self.warmup_steps >= 0 and self.grad_clip >= 0,
               f"train.lr={self.lr} must be > 0, train.warmup_steps={self.warmup_steps} and "
               f"train.grad_clip={self.grad_clip} >= 0 (grad_clip 0 = no clipping)")
        _check(self.ckpt_every >= 0 and self.num_workers >= 0,
               "train.ckpt_every (0 = only at the end) and train.num_workers must be >= 0")
        _check(0.0 <= self.ema_decay < 1.0, "train.ema_decay must be in [0, 1)")
        for axis in ("frame", "res"):
            stages = list(getattr(self, f"{axis}_stages"))
            milestones = list(getattr(self, f"{axis}_milestones"))
            setattr(self, f"{axis}_stages", stages)
            setattr(self, f"{axis}_milestones", milestones)
            _check(all(s >= 1 for s in stages), f"train.{axis}_stages={stages}: sizes must be >= 1")
            _check(stages == sorted(stages), f"train.{axis}_stages={stages} must grow (short to long,"
                   f" low to high resolution)")
            _check(not milestones or len(milestones) == len(stages) - 1,
                   f"train.{axis}_milestones={milestones}: need len({axis}_stages) - 1 = "
                   f"{max(len(stages) - 1, 0)} increasing fractions in (0, 1), or [] for equal stages")
            _check(milestones == sorted(milestones) and all(0 < m < 1 for m in milestones),
                   f"train.{axis}_milestones={milestones} must be increasing fractions in (0, 1)")
        _check(self.grad_accum >= 1 and self.batch_size % self.grad_accum == 0,
               f"train.grad_accum={self.grad_accum} must be >= 1 and divide train.batch_size="
               f"{self.batch_size}")
        _check(self.flop_budget >= 0 and self.budget_steps >= 0,
               "train.flop_budget and train.budget_steps must be >= 0 (0 = no budget)")
        _check(self.val_every >= 0, "train.val_every must be >= 0 (0 = off)")


@dataclass(kw_only=True)
class EvalConfig:
    num_clips: int = 32  # held-out test clips sampled and scored (8 left clip noise above arm gaps)
    num_loss_batches: int = 4  # held-out next-frame diffusion loss batches (val split)
    num_frames: Optional[int] = None  # frames to generate; None = data.num_frames
    use_ema: bool = True
    # Extrapolation test (RoPE ablation): also generate extrap_frames frames at extrap_height x
    # extrap_width (0 = the trained size) and score them per frame. extrap_frames = 0: skip.
    extrap_frames: int = 0
    extrap_height: int = 0
    extrap_width: int = 0
    # Sample spread (core.evaluate.sample_spread): spread_samples >= 2 samples per clip of the
    # first spread_clips test clips, reported as `sample_spread`; 0 = off.
    spread_samples: int = 0
    spread_clips: int = 8

    def __post_init__(self) -> None:
        _check(self.spread_samples == 0 or self.spread_samples >= 2,
               f"eval.spread_samples={self.spread_samples}: 0 (off) or >= 2 samples per clip")
        _check(self.spread_clips >= 1, "eval.spread_clips must be >= 1")


@dataclass(kw_only=True)
class RunConfig:
    """One run = train, sample, evaluate, write one row to the results table."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    head_distill: HeadDistillConfig = field(default_factory=HeadDistillConfig)
    seed: int = 0
    preset: str = "tiny"
    ablation: str = "attn"  # which ablation this run belongs to
    table: str = "attn"  # which paper_tables/ table it feeds
    # How its table reads the run: the `table_spec` block of the ablation's YAML
    # (ablations/conf/ablation/<name>.yaml; `make tables` reads the same block). Only `variant` is
    # read here: the rule giving the line label, a template for fill_template. The default run,
    # without an ablation file, is a line of the default table, labelled by its attention.
    table_spec: Dict[str, Any] = field(default_factory=lambda: {"variant": "{model.attn}"})
    variant: str = ""  # the table line this run belongs to; empty: table_spec's rule fills it in
    results: str = "paper_tables/runs.jsonl"  # the one results table (relative to the repo root)
    out_dir: str = "runs"  # checkpoints and samples go to out_dir/run_id
    force: bool = False  # rerun even when an ok row with this run id exists
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    objective: str = "val_loss"  # the metric the Hydra app returns (what an Optuna sweep optimises)

    def __post_init__(self) -> None:
        if not self.variant:
            self.variant = self.default_variant()
        m, d = self.model, self.data
        stride = m.tokenizer.spatial_stride
        _check(d.height % stride == 0 and d.width % stride == 0,
               f"data resolution {d.height}x{d.width} is not divisible by the tokenizer's spatial "
               f"stride {stride}: change data.height/data.width or tokenizer.patch_size")
        tok = m.tokenizer
        latent = tok.latent_frames(d.num_frames, "data.num_frames")
        for s in self.train.frame_stages:
            tok.latent_frames(s, f"train.frame_stages entry {s}")
        for name in ("num_frames", "extrap_frames"):
            if getattr(self.eval, name):
                tok.latent_frames(getattr(self.eval, name), f"eval.{name}")
        _check(m.num_cond_frames < latent,
               f"model.num_cond_frames={m.num_cond_frames} must be smaller than "
               f"data.num_frames={d.num_frames}" + (f" ({latent} latent frames)"
                                                     if tok.temporal_stride > 1 else ""))
        tokens = (d.height // stride) * (d.width // stride)
        _check(self.sampler.num_iter <= tokens,
               f"sampler.num_iter={self.sampler.num_iter} exceeds the {tokens} tokens per frame")
        _check(not (m.attn == "full" and self.sampler.use_kv_cache is True),
               "sampler.use_kv_cache=true cannot work with model.attn=full (every frame attends to "
               "later frames, so nothing can be cached): drop the override or use attn=causal")
        _check(self.sampler.cfg_scale == 1.0 or m.text_dim > 0,
               "sampler.cfg_scale != 1 needs text conditioning (model.text_dim > 0)")
        t, e = self.train, self.eval
        _check(e.num_frames is None or e.num_frames > m.num_cond_frames,
               f"eval.num_frames={e.num_frames} must exceed model.num_cond_frames="
               f"{m.num_cond_frames} (at least one generated frame), or be null for data.num_frames")
        _check(e.num_clips >= 1 and e.num_loss_batches >= 0,
               "eval.num_clips must be >= 1 and eval.num_loss_batches >= 0")
        off = "(or turn it off: curriculum=off, i.e. train.frame_stages=[])"
        _check(all(m.num_cond_frames < s <= d.num_frames for s in t.frame_stages),
               f"train.frame_stages={t.frame_stages}: each stage needs more than "
               f"model.num_cond_frames={m.num_cond_frames} and at most data.num_frames="
               f"{d.num_frames} frames {off}")
        _check(not t.frame_stages or t.frame_stages[-1] == d.num_frames,
               f"train.frame_stages={t.frame_stages} ends below data.num_frames={d.num_frames}: "
               f"the model would never train on the clips it generates; end the list with "
               f"{d.num_frames} {off}")
        off = "(or turn it off: resolution=fixed, i.e. train.res_stages=[])"
        for h in t.res_stages:
            w = d.width * h / d.height
            _check(h <= d.height and h % stride == 0 and w == int(w) and int(w) % stride == 0,
                   f"train.res_stages={t.res_stages}: height {h} must be <= data.height={d.height} "
                   f"and give a {h}x{w:g} frame divisible by the tokenizer stride {stride} {off}")
        _check(not t.res_stages or t.res_stages[-1] == d.height,
               f"train.res_stages={t.res_stages} ends below data.height={d.height}: the model "
               f"would never train at the resolution it generates; end the list with {d.height} "
               f"{off}")
        _check(e.extrap_frames == 0 or e.extrap_frames > m.num_cond_frames,
               f"eval.extrap_frames={e.extrap_frames} must exceed model.num_cond_frames (or be 0)")
        ext_h, ext_w = e.extrap_height or d.height, e.extrap_width or d.width
        _check(ext_h % stride == 0 and ext_w % stride == 0,
               f"eval.extrap_height x extrap_width = {ext_h}x{ext_w} is not divisible by the "
               f"tokenizer's spatial stride {stride}")
        if m.pos_emb == "learned":
            frames = max(d.num_frames, e.extrap_frames, e.num_frames or 0)
            grid = max(d.height, d.width, ext_h if e.extrap_frames else 0,
                       ext_w if e.extrap_frames else 0) // stride
            _check(m.max_frames >= frames and m.max_grid >= grid,
                   f"model.pos_emb=learned has tables for {m.max_frames} frames and {m.max_grid} "
                   f"tokens per side, but this run needs {frames} and {grid}: raise "
                   f"model.max_frames / model.max_grid")


    def default_variant(self) -> str:
        """The table-line label of this run: its table_spec's `variant` rule filled in."""
        rule = self.table_spec.get("variant")
        where = f"table_spec.variant of ablations/conf/ablation/{self.ablation}.yaml"
        _check(isinstance(rule, str) and rule != "",
               f"{where} is {rule!r}: give the table's label rule there, e.g. "
               f"table_spec: {{variant: \"w{{model.temporal_window}}\"}}, or pass variant=...")
        try:
            return fill_template(rule, self)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


# What a label rule may use inside its braces: config fields, constants, comparisons, `and`/`or`/
# `not`, `a if cond else b`, len(). No other call, no name outside the config, no _attribute.
_RULE_NODES = (ast.Expression, ast.JoinedStr, ast.FormattedValue, ast.Constant, ast.Name,
               ast.Load, ast.Attribute, ast.Compare, ast.IfExp, ast.BoolOp, ast.UnaryOp,
               ast.Call, ast.cmpop, ast.boolop, ast.unaryop)


def fill_template(rule: str, cfg) -> str:
    """An f-string template over the fields of dataclass `cfg`, filled in.

    E.g. "iter{sampler.num_iter}_cfg{sampler.cfg_scale:g}" -> "iter8_cfg1", or
    "{'on' if len(train.frame_stages) > 1 else 'off'}". Evaluated without builtins but len().
    """
    names = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    fix = (f"label rule {rule!r}: write an f-string template over the config, e.g. "
           "\"w{model.temporal_window}\" or \"{'on' if len(train.frame_stages) > 1 else 'off'}\"")
    try:
        tree = ast.parse('f"""' + rule + '"""', mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{fix} ({exc.msg})") from None
    for node in ast.walk(tree):
        allowed = isinstance(node, _RULE_NODES)
        if isinstance(node, ast.Name):
            allowed = node.id in names or node.id == "len"
        elif isinstance(node, ast.Attribute):
            allowed = not node.attr.startswith("_")
        elif isinstance(node, ast.Call):
            allowed = (isinstance(node.func, ast.Name) and node.func.id == "len"
                       and not node.keywords)
        if not allowed:
            raise ConfigError(f"{fix} ({ast.unparse(node)!r} is not allowed: config fields, "
                              "comparisons, and/or/not, if/else and len() only)")
    try:
        code = compile(tree, "<label rule>", "eval")
        return eval(code, {"__builtins__": {}, "len": len}, names)  # checked: fields and len() only
    except Exception as exc:  # an unknown field, a bad format spec, ...
        raise ConfigError(f"{fix} ({type(exc).__name__}: {exc})") from None


def _preset(**kw) -> ModelConfig:
    tok = kw.pop("tokenizer", None)
    return ModelConfig(**kw, **({"tokenizer": tok} if tok else {}))


# Size presets. "paper" follows the released VideoMAR builder: width 1536, depth 36, 24 heads,
# Cosmos CV8x16x16 latents (16 channels, patch 1), 300 x 1536 text features, diffusion head d3 w1024.
PRESETS = {
    "tiny": ModelConfig(),
    "small": _preset(width=256, depth=6, num_heads=4, text_dim=128, head_depth=3, head_width=256),
    "base": _preset(width=768, depth=12, num_heads=12, rope_split=[32, 16, 16], rope_base=10000.0,
                    qk_norm=True, qkv_bias=False, text_dim=768, text_len=77,
                    head_depth=6, head_width=1024),
    "paper": _preset(width=1536, depth=36, num_heads=24, rope_split=[32, 16, 16],
                     rope_base=10000.0, qk_norm=True, qkv_bias=False, text_dim=1536,
                     text_len=300, head_depth=3, head_width=1024, num_sampling_steps=100,
                     tokenizer=TokenizerConfig(kind="vae", patch_size=1, vae_latent_channels=16,
                                               vae_downsample=16)),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A copy of preset `name` with field overrides, e.g. preset("small", attn="full")."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
