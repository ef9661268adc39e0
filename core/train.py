"""Training loop: AdamW, linear warmup then constant lr, EMA, grad clipping, atomic checkpoints, DDP.

Follows the MAR / VideoMAR engine (github.com/LTH14/mar `engine_mar.py`, `util/lr_sched.py`,
`util/misc.py:add_weight_decay`; VideoMAR's released engine follows it) with one
change of substance: nothing reads the global RNG. Every random choice of a step (which clips, and
the model's draws: target frame, mask ratio, orders, condition dropout, diffusion t and noise) is a
pure function of (seed, step), so a resumed run continues bit-exactly and a W-process DDP step
takes its slice of the same global batch and draws as the 1-process step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from core import preemption
from core.checkpoint import (CHECKPOINT_NAME, CheckpointError, load_checkpoint,  # noqa: F401
                             read_checkpoint, read_latest_checkpoint, restore, save_checkpoint)
from core.config import TrainConfig
from core.curriculum import Curriculum, Stage

CHECKPOINT_VERSION = 1
HEAD_PREFIX = "head."  # the per-token diffusion head: no weight decay (MAR: 'diffloss' in name)
NO_DECAY_KEYS = ("mask_token", "null", "embed", "pos_")  # learned embeddings, matched on the own name
LOSS_TAIL_FRACTION = 0.1  # summary train_loss = mean loss of this last fraction of the steps


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN/inf; the message names the step."""


def derive_seed(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed for item `index` (epoch, step) of the named random stream of a run."""
    digest = hashlib.blake2b(f"{stream}:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialized process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_device(device=None) -> torch.device:
    """This process's device, chosen before anything is built on it.

    None: the GPU of LOCAL_RANK (torchrun, submitit) when CUDA is available, else the CPU. A bare
    "cuda" also means LOCAL_RANK's GPU: building every rank's model on GPU 0 first would leave
    each rank's copy in GPU 0's memory. The CUDA device is made current (NCCL uses it).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def lr_at(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Learning rate of 0-based `step`: linear warmup to cfg.lr over warmup_steps, then constant
    (MAR) or, with cfg.lr_schedule="cosine", a half cosine from cfg.lr down to cfg.lr * min_lr_ratio
    at the end of training.

    `progress` in [0, 1] is how far training is (steps / steps, or FLOPs / budget under a FLOP
    budget); None means step / cfg.steps. Warmup step s uses lr * (s + 1) / warmup_steps: MAR
    ramps from 0 over fractional epochs; starting at lr / warmup_steps avoids a wasted zero-lr step.
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    p = step / cfg.steps if progress is None else progress
    low = cfg.lr * cfg.min_lr_ratio
    return low + (cfg.lr - low) * 0.5 * (1.0 + math.cos(math.pi * min(max(p, 0.0), 1.0)))


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Trainable parameters AdamW must not decay (MAR's add_weight_decay, extended).

    1-D tensors (biases, norm gains), the diffusion head (`head.`), nn.Embedding tables, parameters
    whose own name contains mask_token / null / embed (pos_embed, null_text) and what
    `model.no_weight_decay()` lists. A Linear weight in a module named `*embed*` is a projection
    (MAR's z_proj), not an embedding table, and keeps its decay.
    """
    model = unwrap(model)
    extra = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    names = set()
    for mod_name, module in model.named_modules():
        for own_name, p in module.named_parameters(recurse=False):
            name = f"{mod_name}.{own_name}" if mod_name else own_name
            if p.requires_grad and (
                    p.ndim <= 1 or name.startswith(HEAD_PREFIX) or isinstance(module, nn.Embedding)
                    or any(k in own_name for k in NO_DECAY_KEYS) or name in extra):
                names.add(name)
    return names


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW(lr, betas=(beta1, beta2)) with a decayed group and a weight_decay=0 group."""
    skip = no_weight_decay_names(model)
    groups = [{"params": [], "weight_decay": cfg.weight_decay}, {"params": [], "weight_decay": 0.0}]
    for name, p in unwrap(model).named_parameters():
        if p.requires_grad:
            groups[name in skip]["params"].append(p)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr_at(0, cfg),
                             betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


class EMA:
    """ema = d * ema + (1 - d) * param over trainable parameters; starts from the current ones and
    has no bias correction (MAR)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.num_updates = float(decay), 0
        self.shadow = {n: p.detach().clone() for n, p in self._params(model)}

    @staticmethod
    def _params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]

    def to(self, device) -> "EMA":
        self.shadow = {n: t.to(device) for n, t in self.shadow.items()}
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = self._params(model)  # one fused op per step over all tensors, not a loop
        shadows = [self.shadow[name] for name, _ in params]
        torch._foreach_mul_(shadows, self.decay)
        torch._foreach_add_(shadows, [p.detach() for _, p in params], alpha=1.0 - self.decay)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {n: t.clone() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if diff := sorted(set(state["shadow"]) ^ set(self.shadow)):
            raise KeyError(f"EMA state and model parameters differ: {diff[:5]}")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        for name, t in state["shadow"].items():
            self.shadow[name].copy_(t)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's trainable parameters with the EMA weights."""
        for name, p in self._params(model):
            p.copy_(self.shadow[name])

    @contextlib.contextmanager
    def swapped(self, model: nn.Module):
        """`with ema.swapped(model):` runs with the EMA weights, then restores the live ones."""
        live = {n: p.detach().clone() for n, p in self._params(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(live[name])


class StepBatchSampler(Sampler):
    """This rank's dataset indices for global steps start..stop-1, one list per step.

    The index stream concatenates per-epoch permutations (epoch e: randperm with a generator seeded
    by derive_seed(seed, "data", e)); global step s takes stream positions [s*B, (s+1)*B), and rank
    r of W the contiguous slice [r*B/W, (r+1)*B/W) of those.
    """

    def __init__(self, num_items: int, seed: int, global_batch: int, start: int, stop: int,
                 rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"train.batch_size={global_batch} (the global batch) is not divisible "
                             f"by the DDP world size {world}")
        if num_items < 1:
            raise ValueError("the training dataset is empty")
        self.n, self.seed, self.B, self.start, self.stop = num_items, seed, global_batch, start, stop
        self.b, self.rank = global_batch // world, rank
        self._perms: dict[int, list[int]] = {}

    def _epoch(self, e: int) -> list[int]:
        if e not in self._perms:
            if len(self._perms) > 2:  # steps move forward: drop the oldest epoch
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(derive_seed(self.seed, "data", e))
            self._perms[e] = torch.randperm(self.n, generator=g).tolist()
        return self._perms[e]

    def indices(self, step: int) -> list[int]:
        first = step * self.B + self.rank * self.b
        return [self._epoch(p // self.n)[p % self.n] for p in range(first, first + self.b)]

    def __iter__(self):
        return (self.indices(step) for step in range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def collate(items: list[dict]) -> dict:
    """What a step needs: video (B,T,3,H,W) and captions list[str] (None if items have none)."""
    captions = [it.get("caption") for it in items]
    return {"video": torch.stack([it["video"] for it in items]),
            "caption": None if all(c is None for c in captions) else [c or "" for c in captions]}


def _resume(path: Path, model, ema, optimizer, cfg: TrainConfig, seed: int, device) -> dict | None:
    """Load the newest good checkpoint of `path` (or its previous one) if it continues this run.

    None when there is none. Falls back to checkpoint.prev.pt with a CheckpointWarning when
    checkpoint.pt is missing or damaged; a different seed or global batch is a CheckpointError.
    """
    found = read_latest_checkpoint(path, map_location=device)
    if found is None:
        return None
    path, ckpt = found
    saved = (ckpt.get("seed"), ckpt.get("config", {}).get("batch_size"))
    if saved != (seed, cfg.batch_size):
        raise CheckpointError(f"checkpoint {path} has (seed, batch_size)={saved}, this run "
                              f"{(seed, cfg.batch_size)}: resuming would not continue the same run")
    return restore(ckpt, path, model, ema, optimizer)


def _skip_nonfinite(err: "NonFiniteLossError", skipped: list, cfg: TrainConfig, step: int,
                    optimizer, ckpt_path: Path | None) -> None:
    """train.nonfinite: "stop" re-raises with the fix; "skip" counts the step, up to the limit."""
    kept = (f"the last good checkpoint is kept in {ckpt_path.parent}" if ckpt_path is not None
            else "no checkpoint is written (out_dir=None)")
    if cfg.nonfinite != "skip":
        raise NonFiniteLossError(f"{err}; training stopped ({kept}). Lower train.lr or "
                                 "train.grad_clip, or set train.nonfinite=skip to skip up to "
                                 "train.max_nonfinite such steps") from err
    skipped.append(step)
    if len(skipped) > cfg.max_nonfinite:
        raise NonFiniteLossError(f"{err}: {len(skipped)} non-finite steps {skipped[-5:]} exceed "
                                 f"train.max_nonfinite={cfg.max_nonfinite}; training stopped "
                                 f"({kept})") from err
    optimizer.zero_grad(set_to_none=True)  # drop the step: no update, no EMA update
    warnings.warn(f"{err}: step skipped ({len(skipped)} of at most {cfg.max_nonfinite})",
                  RuntimeWarning, stacklevel=3)


def _step(net, raw, optimizer, batch, cfg: TrainConfig, seed: int, step: int, device,
          rank: int, world: int, stage: Stage, progress: float) -> tuple[float, float, float]:
    """One optimisation step on this rank's slice -> (global mean loss, grad norm, global FLOPs)."""
    from core.flops import train_step_flops

    video = Curriculum.apply(batch["video"], stage)  # (b, T, 3, H, W) in [0, 1], cut to the stage
    video = video.to(device, non_blocking=True)
    b, accum = video.shape[0], cfg.grad_accum
    if b % accum:
        raise ValueError(f"this rank's batch of {b} clips does not split into train.grad_accum="
                         f"{accum} equal micro-batches: make train.batch_size a multiple of "
                         f"grad_accum x the number of ranks")
    with torch.no_grad():  # fp32 encode, exactly as evaluation and sampling encode
        tokens = raw.tokenizer.encode(video).float()  # (b, T, h, w, D)
    # All randomness of the step: the shared draws from the step's generator, this rank's slice
    # of the per-sample draws from generators of the samples' global indices, on the device.
    g = torch.Generator().manual_seed(derive_seed(seed, "draws", step))

    def sample_generator(i: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(derive_seed(seed, f"draws.{step}", i))

    draws = raw.sample_train_draws(b * world, tokens.shape[1], tuple(tokens.shape[2:4]), g,
                                   rows=range(rank * b, (rank + 1) * b),
                                   sample_generator=sample_generator)
    # Micro-batches share the step's target frame and mask count, so each one's loss is a mean over
    # equal token counts and the mean of their gradients is the whole slice's gradient.
    micro, losses = b // accum, []
    optimizer.zero_grad(set_to_none=True)
    for i in range(accum):
        lo, hi = i * micro, (i + 1) * micro
        last = i == accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
        with sync:  # DDP all-reduces the gradients once, with the last micro-batch
            with torch.autocast("cuda", torch.bfloat16,
                                enabled=device.type == "cuda" and cfg.bf16):
                captions = batch["caption"][lo:hi] if batch["caption"] is not None else None
                loss = net(tokens[lo:hi], captions, draws.slice(lo, hi))
            (loss / accum).backward()  # DDP averages over ranks: the global batch's gradient
        losses.append(loss.detach().float())
    # Analytic FLOPs of the global batch for the frames the model actually ran (causal training
    # truncates the clip after the target frame).
    flops = train_step_flops(raw.cfg, b * world, tokens.shape[1], tuple(tokens.shape[2:4]),
                             target_frame=draws.target_frame if draws.target_frame >= 0 else None,
                             num_masked=draws.num_masked)
    # Per-rank losses are means over equal token counts, so their mean is the global loss. One
    # all-reduce gives the logged value and makes every rank stop together on NaN/inf. It is read
    # on the host (.item(), a device sync) only after the backward passes have been queued.
    global_loss = losses[0].clone() if accum == 1 else torch.stack(losses).mean()
    if world > 1:
        dist.all_reduce(global_loss)
        global_loss /= world
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg, progress)
    global_loss = global_loss.item()
    if not math.isfinite(global_loss):  # before any update: the step leaves no trace
        raise NonFiniteLossError(f"non-finite training loss {global_loss} at step {step} "
                                 f"(the last checkpoint, if any, is kept)")
    params = [p for p in raw.parameters() if p.requires_grad]
    grad_norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    grad_norm = grad_norm.item()
    if not math.isfinite(grad_norm):  # identical on all ranks (gradients already averaged)
        raise NonFiniteLossError(f"non-finite gradient norm {grad_norm} at step {step} "
                                 f"(the last checkpoint, if any, is kept)")
    optimizer.step()
    return global_loss, grad_norm, flops


@dataclass
class TrainRecord:
    """What a training run has recorded so far, step by step (checkpointed, then summarised)."""

    losses: list = field(default_factory=list)  # per step; NaN for a skipped non-finite step
    grad_norms: list = field(default_factory=list)
    flops: list = field(default_factory=list)  # cumulative analytic FLOPs after each step
    stages: list = field(default_factory=list)  # [step, frames, height, width] per stage start
    val_curve: list = field(default_factory=list)  # {"step", "flops", "val_loss"}
    nonfinite_steps: list = field(default_factory=list)  # steps skipped under nonfinite=skip

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TrainRecord":
        return cls(**{f.name: list(ckpt.get(f.name, [])) for f in dataclasses.fields(cls)})

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def total_flops(self) -> float:
        return self.flops[-1] if self.flops else 0.0

    def add_step(self, loss: float, grad_norm: float, step_flops: float) -> None:
        self.losses.append(loss)
        self.grad_norms.append(grad_norm)
        self.flops.append(self.total_flops + step_flops)

    def enter_stage(self, step: int, stage) -> None:
        """Note where a curriculum stage begins (once per change of clip shape)."""
        shape = [stage.frames, stage.height, stage.width]
        if not self.stages or self.stages[-1][1:] != shape:
            self.stages.append([step, *shape])


def reference_budget(raw, cfg: TrainConfig, num_frames: int, height: int, width: int) -> float:
    """cfg.budget_steps x the expected FLOPs of one reference step.

    The reference step is VideoMAR's (block-causal attention, no temporal window, one target
    frame) on full-size clips without a curriculum, whatever the run's own attention pattern: arms
    that differ in it (attn=full, a window, every frame per step) then get the same compute.
    """
    from core.flops import train_step_flops

    grid = raw.tokenizer.token_grid(height, width)
    ref = dataclasses.replace(raw.cfg, attn="causal", temporal_window=0, target_frames="one")
    return cfg.budget_steps * train_step_flops(ref, cfg.batch_size, num_frames, tuple(grid))


@preemption.defers_preemption
def train(model: nn.Module, dataset, cfg: TrainConfig, *, seed: int, out_dir: str | Path | None,
          device=None, resume: bool = True, progress: bool = True, ema: EMA | None = None,
          val_fn=None) -> dict:
    """Train `model` (a VideoMAR) on `dataset` up to global step cfg.steps; returns a summary.

    Rank 0 writes out_dir/checkpoint.pt every cfg.ckpt_every steps and at the end; with `resume`
    an existing checkpoint is continued. Under an initialized torch.distributed group the model is
    wrapped in DDP and each rank trains on its batch_size / world slice of the global batch. Pass
    `ema=EMA(model, cfg.ema_decay)` to keep the EMA weights. The summary is plain data: train_loss,
    losses, grad_norms, steps, wall_time_s, steps_per_s (this call), resumed_from, world_size,
    train_flops (cumulative analytic FLOPs), flops (cumulative per step), stages (where each
    curriculum stage began) and val_curve.

    Curriculum (cfg.frame_stages / res_stages) and FLOP budget (cfg.flop_budget): see
    core/curriculum.py; with a budget, training stops after the step that reaches it. `val_fn()`
    (rank 0 only, e.g. a held-out loss on the EMA weights) is called every cfg.val_every steps and
    at the end; its values form val_curve = [{"step", "flops", "val_loss"}, ...].
    """
    t0 = time.perf_counter()
    rank, world = dist_info()
    device = rank_device(device)
    raw = unwrap(model).to(device).train()
    if isinstance(getattr(raw, "tokenizer", None), nn.Module):  # only used under no_grad
        raw.tokenizer.requires_grad_(False)
    optimizer = build_optimizer(raw, cfg)
    ema = ema.to(device) if ema is not None else EMA(raw, cfg.ema_decay)
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    start, resumed_from, record = 0, None, TrainRecord()
    ckpt = _resume(ckpt_path, raw, ema, optimizer, cfg, seed, device) if (
        resume and ckpt_path is not None) else None
    if ckpt is not None:
        start = resumed_from = int(ckpt["step"])
        record = TrainRecord.from_checkpoint(ckpt)
    sampler = StepBatchSampler(len(dataset), seed, cfg.batch_size, start, cfg.steps, rank, world)
    # The generator only seeds worker processes; batches come from the sampler alone.
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(derive_seed(seed, "loader", start)))
    ddp = dist.is_available() and dist.is_initialized()
    # Every trainable parameter enters each loss (the model selects the null text embedding with
    # torch.where), so DDP needs no unused-parameter search.
    net = nn.parallel.DistributedDataParallel(
        raw, device_ids=[device.index] if device.type == "cuda" else None) if ddp else raw

    saved_at = [resumed_from]  # the step of the newest checkpoint on disk

    def checkpoint(step: int) -> None:
        if step == saved_at[0]:  # e.g. a preemption right after a periodic checkpoint
            return
        saved_at[0] = step
        if ckpt_path is not None and rank == 0:
            save_checkpoint(ckpt_path, {
                "version": CHECKPOINT_VERSION, "step": step, "seed": seed, "world_size": world,
                "model": raw.state_dict(), "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(), **record.as_dict(),
                "config": dataclasses.asdict(cfg)})
        if ckpt_path is not None and ddp:
            dist.barrier()  # nobody runs ahead of (or exits before) a complete checkpoint

    def validate(step: int) -> None:
        if val_fn is not None and rank == 0 and not any(v["step"] == step
                                                        for v in record.val_curve):
            record.val_curve.append({"step": step, "flops": record.total_flops,
                                     "val_loss": float(val_fn())})

    budget = cfg.flop_budget  # budget_steps is turned into FLOPs once the clip shape is known

    def progress_at(step: int) -> float:
        if budget > 0:
            return record.total_flops / budget
        return step / cfg.steps

    def budget_spent() -> bool:
        return budget > 0 and bool(record.flops) and record.total_flops >= budget

    curriculum = None
    t_loop = time.perf_counter()
    with tqdm(total=cfg.steps, initial=start, desc="train", dynamic_ncols=True,
              disable=not progress or rank != 0) as bar:
        for step, batch in enumerate(loader, start=start):
            if curriculum is None:  # stages are relative to the data's clip shape
                _, t, _, h, w = batch["video"].shape
                curriculum = Curriculum(cfg, t, h, w)
                if cfg.budget_steps > 0:
                    budget = reference_budget(raw, cfg, t, h, w)
            if budget_spent():
                break
            progress = progress_at(step)
            stage = curriculum.stage_at(progress)
            record.enter_stage(step, stage)
            try:
                loss, grad_norm, step_flops = _step(net, raw, optimizer, batch, cfg, seed, step,
                                                    device, rank, world, stage, progress)
            except NonFiniteLossError as err:  # raises unless train.nonfinite=skip allows it
                _skip_nonfinite(err, record.nonfinite_steps, cfg, step, optimizer, ckpt_path)
                loss = grad_norm = math.nan  # the step is kept in the record, as NaN
                step_flops = 0.0
            else:
                ema.update(raw)
            record.add_step(loss, grad_norm, step_flops)
            bar.update(1)
            if (step + 1) % max(1, cfg.log_every) == 0:
                bar.set_postfix(loss=f"{loss:.4f}", gnorm=f"{grad_norm:.2f}")
            if cfg.val_every > 0 and (step + 1) % cfg.val_every == 0:
                validate(step + 1)
            if cfg.ckpt_every > 0 and (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
                checkpoint(step + 1)
            if preemption.stop_requested(device):  # SIGTERM/SIGUSR1 under a PreemptionGuard
                checkpoint(step + 1)
                preemption.hand_back()  # the previous handler (e.g. submitit's) or Preempted
    loop_s, done = time.perf_counter() - t_loop, record.steps - start
    if cfg.val_every > 0:
        validate(record.steps)
    if done > 0 or resumed_from is None:
        checkpoint(record.steps)
    finite = [x for x in record.losses if math.isfinite(x)]  # skipped non-finite steps are NaN
    tail = finite[-max(1, math.ceil(LOSS_TAIL_FRACTION * len(finite))):]
    return {"train_loss": sum(tail) / len(tail) if tail else math.nan, **record.as_dict(),
            "steps": record.steps, "wall_time_s": time.perf_counter() - t0,
            "steps_per_s": done / loop_s if done > 0 else 0.0, "resumed_from": resumed_from,
            "world_size": world, "train_flops": record.total_flops}
