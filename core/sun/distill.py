"""SUN training, reconstructed: CFG distillation + multi-step consistency (MSC) into the adapter.

Only SUN's inference code is public; this is our reconstruction of its training (arXiv
2312.08887, sec. 3: CFG distillation and the multi-step consistency loss), at the testbed's scale:

1. Teacher trajectories (cached once per seed). For random (positive, negative) prompt pairs
   over the *training* combinations (negatives: empty with p_empty_neg, else 1-2 attribute
   values that do not contradict the positive), the frozen teacher runs DPM-Solver++ 25 steps
   (trailing) with CFG, eT = e(x, t, cn) + w (e(x, t, cp) - e(x, t, cn)), from x_T. We store
   every state x_k, its guided eps and the final image.
2. Targets for MSC. The student's 4-step trailing grid (999, 749, 499, 249) is not a subset of
   the teacher's 25-step grid (999, 959, ..., 39), so the teacher's state at a student time tau
   is taken from the nearest earlier teacher state x_k (t_k >= tau, at most 39 steps away) with
   one exact DDIM transfer using the teacher's own guided x0 prediction there (thresholded as
   the solver does):
   x_tau = a_tau x0_k + s_tau (x_k - a_k x0_k) / s_k. The last target is the teacher's image.
3. Losses, adapter parameters only (UNet and text encoder frozen):
   L_cfg = || s(x_k, t_k, cp, cn) - eT_k ||^2 at random cached states (on the guided
           trajectory, as AGD recommends, instead of forward-process samples);
   L_msc = mean over the 4 student steps of || x^S_i - x^T_i ||^2, where x^S is the student's
           own 4-step DPM-Solver++ rollout from the same x_T, backpropagated through all 4
           steps (trajectory matching, the reference's recommended reading);
   L = L_cfg + lambda_msc * L_msc (lambda = 0 is the "without MSC" ablation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from core.sun import adapter as sun_adapter
from core.sun import teacher as sun_teacher
from core.sun import testbed
from core.sun.optim import cosine_lr, log_progress, optimizer_step


@dataclass(kw_only=True)
class DistillConfig:
    """Adapter training; defaults are the full `make sun` sizes."""
    guidance: float = 3.0  # teacher CFG scale w (SD's 7.5 over-saturates a pixel-space model)
    teacher_steps: int = 25
    student_steps: int = 4
    pool_size: int = 256  # cached teacher trajectories per seed
    num_steps: int = 250
    batch_cfg: int = 32
    batch_msc: int = 8
    lr: float = 1e-3
    lambda_msc: float = 1.0
    p_empty_neg: float = 0.4
    p_attr_drop: float = 0.25  # positive prompts: attribute dropout, as in teacher training
    add_pos: bool = True
    attn_norm: str = "sample"

    def __post_init__(self):
        if self.student_steps > self.teacher_steps:
            raise ValueError(f"student_steps={self.student_steps} > teacher_steps="
                             f"{self.teacher_steps}: the student must take fewer steps")
        if self.lambda_msc < 0:
            raise ValueError("lambda_msc must be >= 0 (0 disables the MSC loss)")


# ----------------------------------------------------------------------------- prompt pairs


def random_prompt_pairs(combos: torch.Tensor, n: int, generator: torch.Generator,
                        p_empty_neg: float,
                        p_attr_drop: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) captions, each (n, 4), from the full captions `combos`."""
    pos = testbed.sample_captions(combos, n, generator)
    pos = testbed.drop_attributes(pos, p_attr_drop, 0.0, generator)
    neg = testbed.sample_captions(testbed.all_combinations(), n, generator)
    keep = torch.zeros_like(neg, dtype=torch.bool)
    num_kept = torch.randint(1, 3, (n,), generator=generator)  # 1 or 2 negated attributes
    for i in range(n):
        slots = torch.randperm(neg.shape[1], generator=generator)[: int(num_kept[i])]
        keep[i, slots] = True
    keep &= neg != pos  # never negate what the positive asks for
    keep &= (torch.rand(n, 1, generator=generator) >= p_empty_neg)
    return pos, neg.masked_fill(~keep, testbed.ABSENT)


# ----------------------------------------------------------------------------- teacher side


def teacher_states_at(traj: dict, final: torch.Tensor, student_steps: int) -> torch.Tensor:
    """Teacher states at the student's grid after each student step: (B, K, 3, H, W).

    traj: dpm_sample(record=True) of the teacher; final: its image. See step 2 above.
    """
    scheduler = sun_teacher.make_scheduler(student_steps)
    student_t, teacher_t = scheduler.timesteps, traj["timesteps"]
    targets = []
    for tau in student_t[1:].tolist():
        k = int((teacher_t >= tau).nonzero().max())  # nearest teacher state at or before tau
        x_k, eps_k = traj["states"][:, k], traj["eps"][:, k]
        a_k, s_k = sun_teacher.alpha_sigma(int(teacher_t[k]))
        a_tau, s_tau = sun_teacher.alpha_sigma(tau)
        x0_k = (x_k - s_k * eps_k) / a_k
        if scheduler.config.thresholding:  # the x0 the teacher's solver actually used
            x0_k = scheduler._threshold_sample(x0_k)
        targets.append(a_tau * x0_k + s_tau * (x_k - a_k * x0_k) / s_k)
    targets.append(final)
    return torch.stack(targets, dim=1)


@torch.no_grad()
def build_trajectory_cache(unet, encoder, combos: torch.Tensor, cfg: DistillConfig,
                           generator: torch.Generator, chunk: int = 128) -> dict:
    """Teacher 25-step CFG trajectories for cfg.pool_size random prompt pairs (see step 1)."""
    pos, neg = random_prompt_pairs(combos, cfg.pool_size, generator, cfg.p_empty_neg,
                                   cfg.p_attr_drop)
    noise = torch.randn(cfg.pool_size, 3, testbed.IMAGE_SIZE, testbed.IMAGE_SIZE,
                        generator=generator)
    parts = []
    for i in range(0, cfg.pool_size, chunk):
        sl = slice(i, i + chunk)
        eps_fn = sun_teacher.guided_eps_fn(unet, encoder(pos[sl]), encoder(neg[sl]), cfg.guidance)
        final, traj = sun_teacher.dpm_sample(eps_fn, noise[sl], cfg.teacher_steps, record=True)
        parts.append((final, traj, teacher_states_at(traj, final, cfg.student_steps)))
    return {"pos": pos, "neg": neg, "noise": noise,
            "timesteps": parts[0][1]["timesteps"],
            "states": torch.cat([p[1]["states"] for p in parts]),
            "eps": torch.cat([p[1]["eps"] for p in parts]),
            "final": torch.cat([p[0] for p in parts]),
            "targets": torch.cat([p[2] for p in parts])}


# ----------------------------------------------------------------------------- losses


def student_rollout(unet, context: torch.Tensor, noise: torch.Tensor,
                    num_steps: int) -> torch.Tensor:
    """The student's DPM-Solver++ states after each step, (B, K, 3, H, W), with autograd."""
    scheduler = sun_teacher.make_scheduler(num_steps)
    x, states = noise, []
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t.expand(x.shape[0]), context).sample, t, x).prev_sample
        states.append(x)
    return torch.stack(states, dim=1)


def msc_loss(student_states: torch.Tensor, teacher_states: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between matched trajectory states, averaged over the K steps."""
    if student_states.shape != teacher_states.shape:
        raise ValueError(f"student trajectory {tuple(student_states.shape)} and teacher targets "
                         f"{tuple(teacher_states.shape)} differ; both must be (B, K, C, H, W) "
                         "at the student's K timesteps")
    return F.mse_loss(student_states, teacher_states)


def train_adapter(unet, adapter: sun_adapter.SUNAdapter, encoder, cache: dict,
                  cfg: DistillConfig, generator: torch.Generator,
                  log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Optimise the adapter on the cached teacher trajectories; returns the loss curves."""
    params = [p for p in adapter.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    with torch.no_grad():  # contexts of the whole pool, once (the encoder is frozen)
        context = sun_adapter.joint_context(encoder(cache["pos"]), encoder(cache["neg"]))
    n, num_states = cache["noise"].shape[0], cache["states"].shape[1]
    curves: dict[str, list[float]] = {"cfg": [], "msc": []}
    for step in range(cfg.num_steps):
        for group in opt.param_groups:  # cosine decay to 10%
            group["lr"] = cosine_lr(step, cfg.lr, cfg.num_steps // 10 + 1, cfg.num_steps)
        idx = torch.randint(n, (cfg.batch_cfg,), generator=generator)
        k = torch.randint(num_states, (cfg.batch_cfg,), generator=generator)
        x_k, t_k = cache["states"][idx, k], cache["timesteps"][k]
        loss_cfg = F.mse_loss(unet(x_k, t_k, context[idx]).sample, cache["eps"][idx, k])
        loss = loss_cfg
        if cfg.lambda_msc > 0:
            j = torch.randint(n, (cfg.batch_msc,), generator=generator)
            rollout = student_rollout(unet, context[j], cache["noise"][j], cfg.student_steps)
            loss_msc = msc_loss(rollout, cache["targets"][j])
            loss = loss + cfg.lambda_msc * loss_msc
            curves["msc"].append(loss_msc.item())
        optimizer_step(opt, loss, params)
        curves["cfg"].append(loss_cfg.item())
        log_progress(curves, step, cfg.num_steps, log, "adapter")
    return curves
