"""Distilling the SUN backbone adapter (backbone_adapter.py) end to end against the CFG teacher.

SUN's training (arXiv 2312.08887, sec. 3: CFG distillation plus the multi-step consistency loss)
moved from the head to VideoMAR's backbone (arXiv 2506.14168):

1. The teacher (the frozen model, sampler.head=ddpm at head_distill.teacher_sampling_steps with
   CFG on [cond; uncond], its own stochastic sampler) generates videos from training clips.
2. Sampling states are cut from them as the sampler meets them: frames < f clean, frame f with a
   masked set of a size on the MAR reveal schedule (random order), a guidance scale from MAR's
   linear ramp for a cfg scale drawn in [1, cfg_max]. The frozen backbone gives each masked token
   (z_cond, z_uncond); the frozen head's CFG ODE trajectory from x_T is cached for it
   (head_distill.teacher_trajectories, shared with the head adapter).
3. The student is the same backbone run once on [caption | negative] through the adapter, at the
   state's scale; its features z_s drive the frozen head with no second branch. L_cfg matches
   head(x_k, t_k, z_s) to the teacher's guided eps at the cached states; with a few-step head
   (sampler.head=dpm) L_msc matches the student's own rollout (autograd through the solver) to
   the teacher's states at the student's timesteps. Only the adapter trains.
4. The competing student (guidance distillation, Meng et al., core/sun/guided_student.py) learns
   from the same states and losses: a copy of the model with a w embedding, one pass on the
   caption, the whole copy trained. One loop (`_train`) serves both.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.config import HeadDistillConfig, SamplerConfig
from core.head_sampler import head_clip_x0, stochastic_chain
from core.masks import mask_by_order, random_orders, reveal_schedule
from core.sampler import guidance_at, sample_latents
from core.sun import guided_student
from core.sun.backbone_adapter import SUNBackboneAdapter, joint_context
from core.sun.guided_student import GuidedStudent
from core.sun.head_distill import (DISTILL_SEED_OFFSET, _tail_mean, check_grids,
                                   conditioning_clips, guidance_range, rollout_noise,
                                   teacher_sampler, teacher_trajectories)
from core.sun.optim import cosine_lr, log_progress, optimizer_step
from core.sun.solver import solve


def _negative(model, sampler: SamplerConfig, batch: int):
    prompts = [sampler.negative_prompt] * batch if sampler.negative_prompt is not None else None
    return model.encode_context(prompts, batch)


@torch.no_grad()
def teacher_states(model, clips: list, captions: list, sampler: SamplerConfig,
                   cfg: HeadDistillConfig, cfg_max: float, clip_x0: Optional[float],
                   student_steps: Optional[int], generator: torch.Generator) -> list[dict]:
    """Teacher videos -> sampling states grouped by frame, each with its tokens' trajectories
    (and MSC targets at `student_steps` few-step solver steps unless None)."""
    if student_steps is not None:
        check_grids(model.head, student_steps, cfg.teacher_steps)
    teacher = teacher_sampler(sampler, cfg)
    num_cond = model.cfg.num_cond_frames
    groups: dict[int, list] = {}
    for (cond, frames), caps in zip(clips, captions):
        video = sample_latents(model, cond, frames, teacher, generator, caps)
        for f in range(num_cond, frames):
            groups.setdefault(f, []).append((video[:, : f + 1], caps))
    device = model.mask_token.device
    pool = []
    for f, parts in sorted(groups.items()):
        tokens = torch.cat([p[0] for p in parts])
        caps = [c for p in parts for c in p[1]]
        n, _, height, width, _ = tokens.shape
        per_frame = height * width
        schedule = [per_frame, *reveal_schedule(per_frame, sampler.num_iter)[:-1]]
        pick = torch.randint(len(schedule), (n,), generator=generator)
        still = torch.tensor(schedule)[pick]  # masked tokens before the iteration (n,)
        scale = 1.0 + (cfg_max - 1.0) * torch.rand(n, generator=generator)
        w = torch.tensor([guidance_at(SamplerConfig(cfg_scale=float(s), cfg_schedule=sampler.cfg_schedule),
                                      per_frame, int(m)) for s, m in zip(scale, still)])
        orders = random_orders(n, per_frame, generator)
        masked = torch.stack([mask_by_order(orders[i:i + 1], int(still[i]))[0] for i in range(n)])
        mask = torch.zeros(n, f + 1, per_frame, dtype=torch.bool)
        mask[:, f] = masked
        tokens, mask, masked, w = tokens.to(device), mask.to(device), masked.to(device), w.to(device)
        context, context_mask = model.encode_context(caps, n)
        negative, negative_mask = _negative(model, sampler, n)
        z = model.backbone(torch.cat([tokens, tokens]), torch.cat([mask, mask]), 0,
                           torch.cat([context, negative]), torch.cat([context_mask, negative_mask]))
        z_c, z_u = z[:n, f][masked], z[n:, f][masked]
        w_tok = w[:, None].expand(n, per_frame)[masked][:, None]
        traj = teacher_trajectories(model.head, z_c, z_u, w_tok, cfg, clip_x0, student_steps,
                                    generator, stochastic_chain(sampler))
        counts = masked.sum(1)
        pool.append({"frame": f, "tokens": tokens, "mask": mask, "masked": masked,
                     "captions": caps, "guidance": w, "rows": torch.cumsum(counts, 0) - counts,
                     "counts": counts, **traj})
    return pool


def _rows(group: dict, states: Tensor) -> Tensor:
    """The pool rows (masked tokens, state-major) of the given states of a group."""
    return torch.cat([torch.arange(int(group["rows"][i]), int(group["rows"][i] + group["counts"][i]))
                      for i in states.tolist()]).to(group["states"].device)


def student_features(model, adapter: SUNBackboneAdapter, group: dict, states: Tensor,
                     negative_prompt: Optional[str]) -> Tensor:
    """z_s of the masked tokens of `states` (state-major): one backbone pass via the adapter."""
    n = states.numel()
    context, context_mask = model.encode_context([group["captions"][i] for i in states.tolist()], n)
    prompts = [negative_prompt] * n if negative_prompt is not None else None
    negative, negative_mask = model.encode_context(prompts, n)
    context, context_mask = joint_context(context, context_mask, negative, negative_mask)
    return _masked_features(model, adapter, group, states, context, context_mask)


def distilled_features(student, embedding: GuidedStudent, group: dict, states: Tensor) -> Tensor:
    """z_s of the masked tokens of `states` from a guidance-distilled student: one pass on the
    captions, the scale through its w embedding."""
    context, context_mask = student.encode_context(
        [group["captions"][i] for i in states.tolist()], states.numel())
    return _masked_features(student, embedding, group, states, context, context_mask)


def _masked_features(model, guidance_module, group: dict, states: Tensor, context: Tensor,
                     context_mask: Tensor) -> Tensor:
    idx = states.to(group["tokens"].device)
    with guidance_module.scale(model, group["guidance"][idx]):
        z = model.backbone(group["tokens"][idx], group["mask"][idx], 0, context, context_mask)
    return z[:, group["frame"]][group["masked"][idx]]


def _train(head, opt: torch.optim.Optimizer, features: Callable[[dict, Tensor], Tensor],
           pool: list[dict], cfg: HeadDistillConfig, student_steps: Optional[int],
           clip_x0: Optional[float], generator: torch.Generator, log: Callable[[str], None],
           tag: str) -> dict:
    """The one-pass student's loop: L_cfg of head(x_k, t_k, z_s) against the teacher's guided
    eps at cached states, plus MSC through `student_steps` solver steps (unless None). Trains
    whatever `opt` holds; returns the loss curves."""
    device = next(head.parameters()).device
    params = [p for group in opt.param_groups for p in group["params"]]
    base_lrs = [group["lr"] for group in opt.param_groups]
    sizes = torch.tensor([float(g["tokens"].shape[0]) for g in pool])
    curves: dict[str, list[float]] = {"cfg": [], "msc": []}
    start = time.perf_counter()
    for step in range(cfg.steps):
        for group, lr in zip(opt.param_groups, base_lrs):
            group["lr"] = cosine_lr(step, lr, 0, cfg.steps)
        group = pool[int(torch.multinomial(sizes, 1, generator=generator))]
        n = group["tokens"].shape[0]
        states = torch.randperm(n, generator=generator)[:cfg.batch_states].sort().values
        rows = _rows(group, states)
        z_s = features(group, states)
        k = torch.randint(group["states"].shape[1], (rows.numel(),), generator=generator)
        k = k.to(device)
        t_k = group["timesteps"].to(device)[k]
        eps = head.net(group["states"][rows, k], t_k, z_s)[:, :head.token_dim]
        loss_cfg = F.mse_loss(eps.float(), group["eps"][rows, k])
        loss = loss_cfg
        if cfg.lambda_msc > 0 and student_steps is not None:
            cond = head.net.cond_embed(z_s)

            def eps_fn(x: Tensor, t: Tensor) -> Tensor:
                return head.net(x, t, None, cond)[:, :head.token_dim].float()
            _, rollout = solve(eps_fn, head, group["noise"][rows], student_steps, clip_x0,
                               noise=rollout_noise(group, rows))
            loss_msc = F.mse_loss(rollout["after"], group["targets"][rows])
            loss = loss + cfg.lambda_msc * loss_msc
            curves["msc"].append(loss_msc.item())
        optimizer_step(opt, loss, params)
        curves["cfg"].append(loss_cfg.item())
        log_progress(curves, step, cfg.steps, log, tag)
    curves["seconds"] = time.perf_counter() - start
    return curves


def distill(model, pool: list[dict], cfg: HeadDistillConfig, cfg_max: float,
            student_steps: Optional[int],
            clip_x0: Optional[float], generator: torch.Generator, negative_prompt: Optional[str],
            log: Callable[[str], None] = print) -> tuple[SUNBackboneAdapter, dict]:
    """Train a SUNBackboneAdapter on the teacher states; returns it and the loss curves.
    student_steps=None: L_cfg only (a head without a few-step solver has no MSC rollout)."""
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    adapter = SUNBackboneAdapter(model, cfg_max).to(model.mask_token.device)
    opt = torch.optim.Adam([p for p in adapter.parameters() if p.requires_grad], lr=cfg.lr)
    try:
        curves = _train(model.head, opt,
                        lambda g, s: student_features(model, adapter, g, s, negative_prompt),
                        pool, cfg, student_steps, clip_x0, generator, log, "sun backbone")
    finally:
        for p, g in zip(model.parameters(), frozen):
            p.requires_grad_(g)
    adapter.eval()
    return adapter, curves


def distill_student(model, pool: list[dict], cfg: HeadDistillConfig, cfg_max: float,
                    student_steps: Optional[int], clip_x0: Optional[float],
                    generator: torch.Generator, negative_prompt: Optional[str],
                    log: Callable[[str], None] = print) -> tuple[nn.Module, dict]:
    """Guidance distillation (Meng et al.) on the same states and losses: a copy of `model`
    with a w embedding, all of it trained (model weights at finetune_lr, the embedding at lr).
    Returns the student model (its embedding installed) and the loss curves; `model` is
    untouched."""
    student, embedding = guided_student.new_student(model, cfg_max, negative_prompt)
    weights = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam([{"params": weights, "lr": cfg.finetune_lr},
                            {"params": list(embedding.parameters()), "lr": cfg.lr}])
    curves = _train(student.head, opt,
                    lambda g, s: distilled_features(student, embedding, g, s),
                    pool, cfg, student_steps, clip_x0, generator, log, "guidance distillation")
    student.requires_grad_(False)
    return student.eval(), curves


def distill_for_model(model, dataset, sampler: SamplerConfig, cfg: HeadDistillConfig, *,
                      seed: int, batch_size: int = 8,
                      log: Callable[[str], None] = print) -> tuple[nn.Module, dict]:
    """Teacher videos from the first cfg.num_clips clips of `dataset`, then distil the one-pass
    student `sampler` asks for (its cfg_scale, head steps, negative prompt and x0 clipping):
    guidance=sun -> a SUNBackboneAdapter; guidance=distilled -> a guidance-distilled copy of the
    model (its GuidedStudent installed). Returns it and its info."""
    generator = torch.Generator().manual_seed(DISTILL_SEED_OFFSET + seed)
    cfg_max = guidance_range(cfg, sampler)
    # MSC needs the student's few-step solver (head=dpm); the DDPM chain learns from L_cfg only.
    student_steps = (sampler.num_sampling_steps or model.head.num_sampling_steps
                     if sampler.head == "dpm" else None)
    if student_steps is not None:
        check_grids(model.head, student_steps, cfg.teacher_steps)
    clip_x0 = head_clip_x0(model, sampler)
    clips, captions = conditioning_clips(model, dataset, cfg.num_clips, batch_size)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        pool = teacher_states(model, clips, captions, sampler, cfg, cfg_max, clip_x0,
                              student_steps, generator)
        pool_s = time.perf_counter() - start
        tokens = sum(int(g["counts"].sum()) for g in pool)
        log(f"  [sun backbone] teacher pool: {sum(g['tokens'].shape[0] for g in pool)} states, "
            f"{tokens} tokens in {pool_s:.1f} s")
        learn = distill_student if sampler.guidance == "distilled" else distill
        adapter, curves = learn(model, pool, cfg, cfg_max, student_steps, clip_x0, generator,
                                sampler.negative_prompt, log)
    finally:
        model.train(was_training)
    info = {"pool_s": pool_s, "distill_s": curves["seconds"], "pool_tokens": tokens,
            "final_cfg_loss": _tail_mean(curves["cfg"]),
            "final_msc_loss": _tail_mean(curves["msc"]),
            "cfg_max": cfg_max, "student_steps": student_steps}
    (guided_student.installed(adapter) if sampler.guidance == "distilled" else adapter).info = info
    return adapter, info
