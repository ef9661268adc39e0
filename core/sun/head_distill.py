"""Distilling the SUN head adapter (head_adapter.py) from VideoMAR's frozen per-token head.

SUN's training (arXiv 2312.08887, sec. 3: CFG distillation plus the multi-step consistency loss,
MSC) on the head of VideoMAR (arXiv 2506.14168), as core/sun/distill.py does for the UNet:
conditions (z_cond, z_uncond) are recorded from the teacher sampler itself on training clips
(through sample_latents' head hook); for each, a guidance scale w ~ U[1, cfg_max] and x_T; the
frozen head's CFG ODE trajectory (DPM-Solver++, 40 steps, whose grid contains the student's 4)
is cached. L_cfg matches the student's eps to the teacher's guided eps at cached states; L_msc
matches the student's own 4-step rollout (autograd through the solver) to the teacher's states
at the student's timesteps. Only the adapter trains.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from core.config import HeadDistillConfig, SamplerConfig
from core.diffusion_head import DiffusionHead
from core.head_sampler import head_clip_x0, stochastic_chain
from core.sampler import sample_latents
from core.sun.head_adapter import SUNHeadAdapter
from core.sun.optim import cosine_lr, log_progress, optimizer_step
from core.sun.solver import coupled_noise, guided_eps_fn, make_scheduler, replay, solve

DISTILL_SEED_OFFSET = 2_000_029  # keeps distillation draws apart from training/eval draws


def guidance_range(cfg: HeadDistillConfig, sampler: SamplerConfig) -> float:
    """The largest guidance scale an adapter is distilled for: head_distill.cfg_max, or the
    sampler's own scale when unset; below the sampler's scale is an error."""
    cfg_max = cfg.cfg_max if cfg.cfg_max is not None else sampler.cfg_scale
    if sampler.cfg_scale > cfg_max:
        raise ValueError(f"head_distill.cfg_max={cfg_max:g} is below sampler.cfg_scale="
                         f"{sampler.cfg_scale:g}: raise it or leave it null")
    return cfg_max


def teacher_sampler(sampler: SamplerConfig, cfg: HeadDistillConfig) -> SamplerConfig:
    """The teacher every student (head adapter, backbone adapter, guidance-distilled student) is
    distilled against: `sampler` with MAR's DDPM head at teacher_sampling_steps and plain CFG on
    [cond; uncond], no adapter or student."""
    return SamplerConfig(**{**sampler.__dict__, "head": "ddpm", "head_adapter": None,
                            "guidance": "cfg", "backbone_adapter": None, "guided_student": None,
                            "num_sampling_steps": cfg.teacher_sampling_steps})


def check_grids(head: DiffusionHead, student_steps: int, teacher_steps: int) -> None:
    """The student's timesteps must lie on the teacher's (checked before any teacher work)."""
    student = make_scheduler(head, student_steps).timesteps.tolist()
    teacher = set(make_scheduler(head, teacher_steps).timesteps.tolist())
    missing = [t for t in student if t not in teacher]
    if missing:
        raise ValueError(f"head_distill.teacher_steps={teacher_steps}: the student's "
                         f"timesteps {missing} are not on the teacher's grid; use a multiple of "
                         f"{student_steps} that divides the grid evenly (e.g. 40 for 4 steps)")


@torch.no_grad()
def teacher_pool(model, clips: list, captions: list, sampler: SamplerConfig,
                 cfg: HeadDistillConfig, cfg_max: float, clip_x0: Optional[float],
                 student_steps: int, generator: torch.Generator) -> dict:
    """Record conditions from the teacher sampler on `clips`, then cache CFG trajectories.

    clips: conditioning token tensors (B, Tc, h, w, D) with their frame counts; see `distill`.
    `generator` must be a CPU generator (pool draws are made on the CPU, then moved).
    """
    check_grids(model.head, student_steps, cfg.teacher_steps)
    teacher = teacher_sampler(sampler, cfg)
    records: list[tuple[Tensor, Tensor, float]] = []

    def record(z: Tensor, z_uncond: Tensor, cfg_scale: float) -> None:
        records.append((z.detach().cpu(), z_uncond.detach().cpu(), float(cfg_scale)))

    for (cond, frames), caps in zip(clips, captions):
        sample_latents(model, cond, frames, teacher, generator, caps, head_hook=record)
    if not records:
        raise RuntimeError("the teacher sampler never ran the head with CFG: distillation needs "
                           "sampler.cfg_scale != 1 and a text-conditioned model")
    z = torch.cat([r[0] for r in records])
    z_u = torch.cat([r[1] for r in records])
    pick = torch.randperm(z.shape[0], generator=generator)[:cfg.pool_size]
    z, z_u = z[pick].float(), z_u[pick].float()
    n = z.shape[0]
    device = next(model.head.parameters()).device
    w = 1.0 + (cfg_max - 1.0) * torch.rand(n, 1, generator=generator)
    pool = teacher_trajectories(model.head, z.to(device), z_u.to(device), w.to(device), cfg,
                                clip_x0, student_steps, generator, stochastic_chain(sampler))
    return {"z": z.to(device), "z_uncond": z_u.to(device), "guidance": w.to(device), **pool,
            "num_recorded": len(records)}


@torch.no_grad()
def teacher_trajectories(head: DiffusionHead, z: Tensor, z_u: Tensor, w: Tensor,
                         cfg: HeadDistillConfig, clip_x0: Optional[float],
                         student_steps: Optional[int], generator: torch.Generator,
                         stochastic: bool = False) -> dict:
    """The frozen head's CFG trajectories (DPM-Solver++, cfg.teacher_steps) for conditions z,
    z_u (N, C) at scales w (N, 1), from x_T drawn on the CPU `generator`: the states and eps of
    L_cfg and the states after each student step (`targets`, N x student_steps x D) of L_msc; no
    targets for student_steps=None (a student without a few-step solver).

    stochastic=True (a student that samples with a stochastic chain, head_sampler.
    stochastic_chain): the teacher runs SDE-DPM-Solver++ on the Brownian path of the student's
    per-step noise (`step_noise`, N x student_steps x D; solver.coupled_noise), which the
    student's MSC rollout replays; else both run the ODE solver from the same x_T."""
    x_T = torch.randn(z.shape[0], head.token_dim, generator=generator).to(z.device)
    noise, extra = None, {}
    if stochastic:
        steps = student_steps or cfg.teacher_steps  # no student grid: i.i.d. teacher noise
        coarse = torch.randn(z.shape[0], steps, head.token_dim, generator=generator)
        fine = (coupled_noise(head, cfg.teacher_steps, steps, coarse, generator)
                if student_steps else coarse)
        noise = replay(fine.to(z.device))
        if student_steps:
            extra["step_noise"] = coarse.to(z.device)
    final, traj = solve(guided_eps_fn(head, z, z_u, w), head, x_T, cfg.teacher_steps, clip_x0,
                        record=True, noise=noise)
    pool = {"noise": x_T, "final": final, "timesteps": traj["timesteps"],
            "states": traj["states"], "eps": traj["eps"], **extra}
    if student_steps is None:
        return pool
    student_t = make_scheduler(head, student_steps).timesteps
    teacher_t = traj["timesteps"]
    # The teacher's state after each student step: at the student's next timestep, then x_0.
    index = [teacher_t.tolist().index(int(t)) for t in student_t[1:]]
    return {**pool, "targets": torch.cat([traj["states"][:, index], final[:, None]], dim=1)}


def rollout_noise(pool: dict, rows: Tensor):
    """The `noise` of a student's MSC rollout for pool rows `rows`: the per-step noise the
    stochastic teacher's path was coupled to, or None (ODE)."""
    return replay(pool["step_noise"][rows]) if "step_noise" in pool else None


def conditioning_clips(model, dataset, num_clips: int, batch_size: int = 8):
    """The first `num_clips` clips of `dataset` as (conditioning tokens, frame count) pairs in
    batches, with their captions: what a teacher sampler is run on."""
    from torch.utils.data import DataLoader

    num_cond = model.cfg.num_cond_frames
    clips, captions, seen = [], [], 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        if seen >= num_clips:
            break
        video = batch["video"][: num_clips - seen].to(model.mask_token.device)
        clips.append((model.tokenizer.encode(video[:, :num_cond]), video.shape[1]))
        captions.append(list(batch["caption"][: video.shape[0]]))
        seen += video.shape[0]
    if not clips:
        raise ValueError("SUN distillation got an empty dataset: it needs training clips")
    return clips, captions


def distill(model, pool: dict, cfg: HeadDistillConfig, cfg_max: float, student_steps: int,
            clip_x0: Optional[float], generator: torch.Generator,
            log: Callable[[str], None] = print) -> tuple[SUNHeadAdapter, dict]:
    """Train a SUNHeadAdapter on the cached teacher pool; returns it and the loss curves."""
    head = model.head
    device = next(head.parameters()).device
    frozen = [p.requires_grad for p in head.parameters()]
    head.requires_grad_(False)
    adapter = SUNHeadAdapter(head.net, cfg_max).to(device)
    params = [p for p in adapter.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n, num_states = pool["z"].shape[0], pool["states"].shape[1]
    curves: dict[str, list[float]] = {"cfg": [], "msc": []}
    start = time.perf_counter()
    try:
        for step in range(cfg.steps):
            for group in opt.param_groups:  # cosine decay to 10%, no warmup
                group["lr"] = cosine_lr(step, cfg.lr, 0, cfg.steps)
            i = torch.randint(n, (cfg.batch_cfg,), generator=generator).to(device)
            k = torch.randint(num_states, (cfg.batch_cfg,), generator=generator).to(device)
            x_k, t_k = pool["states"][i, k], pool["timesteps"].to(device)[k]
            cond = adapter.condition(head.net, pool["z"][i], pool["z_uncond"][i], t_k,
                                     pool["guidance"][i])
            eps = head.net(x_k, t_k, None, cond)[:, :head.token_dim]
            loss_cfg = F.mse_loss(eps, pool["eps"][i, k])
            loss = loss_cfg
            if cfg.lambda_msc > 0:
                j = torch.randint(n, (cfg.batch_msc,), generator=generator).to(device)
                eps_fn = adapter.eps_fn(head, pool["z"][j], pool["z_uncond"][j],
                                        pool["guidance"][j])
                _, rollout = solve(eps_fn, head, pool["noise"][j], student_steps, clip_x0,
                                   noise=rollout_noise(pool, j))
                loss_msc = F.mse_loss(rollout["after"], pool["targets"][j])
                loss = loss + cfg.lambda_msc * loss_msc
                curves["msc"].append(loss_msc.item())
            optimizer_step(opt, loss, params)
            curves["cfg"].append(loss_cfg.item())
            log_progress(curves, step, cfg.steps, log, "sun head")
    finally:
        for p, g in zip(head.parameters(), frozen):
            p.requires_grad_(g)
    adapter.eval()
    curves["seconds"] = time.perf_counter() - start
    return adapter, curves


def distill_for_model(model, dataset, sampler: SamplerConfig, cfg: HeadDistillConfig, *,
                      seed: int, batch_size: int = 8,
                      log: Callable[[str], None] = print) -> tuple[SUNHeadAdapter, dict]:
    """Record conditions on the first cfg.num_clips clips of `dataset`, cache the teacher's
    trajectories and distil an adapter for `sampler` (its cfg_scale, steps and x0 clipping)."""
    generator = torch.Generator().manual_seed(DISTILL_SEED_OFFSET + seed)
    cfg_max = guidance_range(cfg, sampler)
    check_grids(model.head, sampler.num_sampling_steps, cfg.teacher_steps)
    clip_x0 = head_clip_x0(model, sampler)
    clips, captions = conditioning_clips(model, dataset, cfg.num_clips, batch_size)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        pool = teacher_pool(model, clips, captions, sampler, cfg, cfg_max, clip_x0,
                            sampler.num_sampling_steps, generator)
        pool_s = time.perf_counter() - start
        log(f"  [sun head] teacher pool: {pool['z'].shape[0]} tokens from "
            f"{pool['num_recorded']} head calls in {pool_s:.1f} s")
        adapter, curves = distill(model, pool, cfg, cfg_max, sampler.num_sampling_steps,
                                  clip_x0, generator, log)
    finally:
        model.train(was_training)
    info = {"pool_s": pool_s, "distill_s": curves["seconds"], "pool_tokens": pool["z"].shape[0],
            "final_cfg_loss": _tail_mean(curves["cfg"]),
            "final_msc_loss": _tail_mean(curves["msc"]),
            "cfg_max": cfg_max, "student_steps": sampler.num_sampling_steps}
    adapter.info = info
    return adapter, info


def _tail_mean(values: list[float], frac: float = 0.1) -> Optional[float]:
    if not values:
        return None
    tail = values[-max(1, int(len(values) * frac)):]
    return sum(tail) / len(tail)
