"""DPM-Solver++ for VideoMAR's per-token diffusion head (SpeedUpNet, arXiv 2312.08887, on the
head of VideoMAR, arXiv 2506.14168).

diffusers' DPMSolverMultistepScheduler (2M, trailing spacing, the head's cosine schedule), fed
the predicted x0, clamped like the DDPM head's `clip_x0`. sampler.head_solver picks
SDE-DPM-Solver++ (default: fresh noise every step, scaled by the temperature, as in MAR's DDPM
chain) or the ODE DPM-Solver++ (deterministic: the temperature scales x_T). On the tiny preset
the 4-step ODE scored well below the 100-step DDPM head (so did the 40-step ODE teacher itself);
the 4-step SDE did not (README). `sample_dpm` runs the frozen head (sampler.head=dpm); the SUN
adapter (head_adapter.py) and its distillation (head_distill.py) share `solve` and `start`.
"""

from __future__ import annotations

import copy
import functools
from typing import Callable, Optional

import torch
from diffusers import DPMSolverMultistepScheduler
from torch import Tensor

from core.diffusion_head import DiffusionHead


@functools.lru_cache(maxsize=None)
def _scheduler_template(num_train_timesteps: int, num_steps: int,
                        stochastic: bool) -> DPMSolverMultistepScheduler:
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
        algorithm_type="sde-dpmsolver++" if stochastic else "dpmsolver++", solver_order=2,
        timestep_spacing="trailing",
        prediction_type="sample", thresholding=False)
    scheduler.set_timesteps(num_steps)
    return scheduler


def make_scheduler(head: DiffusionHead, num_steps: int,
                   stochastic: bool = False) -> DPMSolverMultistepScheduler:
    """A fresh DPM-Solver++ (2M, trailing) over the head's training schedule, at `num_steps`.

    The solver is stateful (its history of x0 predictions), so every chain gets its own copy of
    a cached template (building one from scratch costs ~6x more, once per head call).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}: need at least 1 solver step")
    return copy.deepcopy(_scheduler_template(head.num_train_timesteps, num_steps, stochastic))


def solve(eps_fn: Callable[[Tensor, Tensor], Tensor], head: DiffusionHead, x_T: Tensor,
          num_steps: int, clip_x0: Optional[float] = None, record: bool = False,
          noise: Optional[Callable[[], Tensor]] = None) -> tuple[Tensor, dict]:
    """DPM-Solver++ from x_T (N, D) with eps_fn(x, t (1,)) -> eps (N, D); returns (x_0, traj).

    traj["after"]: (N, S, D) the state after each step (the last is x_0), with autograd (the
    MSC rollout). record=True adds "timesteps" (S,), "states" (N, S, D) before each step and
    "eps" (N, S, D) used there, detached (the teacher's cache). With `noise` (a function
    returning (N, D) standard normals, already scaled by any temperature) the solver is
    SDE-DPM-Solver++, which injects that noise at every step; without it, the ODE solver.
    """
    scheduler = make_scheduler(head, num_steps, stochastic=noise is not None)
    abar = scheduler.alphas_cumprod.to(x_T.device, torch.float32)
    x, states, epss, after = x_T, [], [], []
    for t in scheduler.timesteps:
        eps = eps_fn(x, t.view(1).to(x.device))
        x0 = (x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        if record:
            states.append(x.detach())
            epss.append(eps.detach())
        extra = {} if noise is None else {"variance_noise": noise()}
        x = scheduler.step(x0, t, x, **extra).prev_sample
        after.append(x)
    traj = {"after": torch.stack(after, 1)}
    if record:
        traj.update(timesteps=scheduler.timesteps.clone(), states=torch.stack(states, 1),
                    eps=torch.stack(epss, 1))
    return x, traj


def _noise_gains(head: DiffusionHead, num_steps: int) -> tuple[Tensor, Tensor]:
    """Per step i of the SDE solver at `num_steps`: (carry_i, gain_i), the factors of
    x_{i+1} = carry_i x_i + (x0 terms) + gain_i xi_i in diffusers' sde-dpmsolver++ update."""
    scheduler = make_scheduler(head, num_steps, stochastic=True)
    alpha, sigma = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas.double())
    ratio = scheduler.sigmas[1:].double() / scheduler.sigmas[:-1].double()  # exp(-h)
    carry = sigma[1:] / sigma[:-1] * ratio
    gain = sigma[1:] * (1 - ratio.square()).sqrt()
    return carry, gain


def coupled_noise(head: DiffusionHead, fine_steps: int, coarse_steps: int, coarse: Tensor,
                  generator: torch.Generator) -> Tensor:
    """The fine solver's per-step noise (N, fine_steps, D) on the Brownian path of the coarse
    solver's noise `coarse` (N, coarse_steps, D): SDE-DPM-Solver++'s noise enters linearly, so
    over each coarse step the fine steps' noise, carried to the step's end, adds up to
    sum_i a_i xi_i with sum_i a_i^2 = the coarse gain^2 (the carries telescope). The fine noises
    are drawn i.i.d. N(0, 1) conditioned on sum_i a_i xi_i = gain_coarse * xi_coarse, so the
    teacher at `fine_steps` and a student at `coarse_steps` see the same path, and a student
    matching the teacher's states there is consistent on the stochastic solver it samples with.
    The coarse grid must lie on the fine one (head_distill.check_grids)."""
    fine_t = make_scheduler(head, fine_steps).timesteps.tolist()
    bounds = [fine_t.index(int(t)) for t in make_scheduler(head, coarse_steps).timesteps]
    bounds.append(fine_steps)
    carry, gain = _noise_gains(head, fine_steps)
    _, coarse_gain = _noise_gains(head, coarse_steps)
    n, _, dim = coarse.shape
    free = torch.randn(n, fine_steps, dim, generator=generator, dtype=torch.float64)
    out = free.clone()
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        a = torch.stack([gain[i] * carry[i + 1:hi].prod() for i in range(lo, hi)])  # (m,)
        norm = a.square().sum()
        if float(coarse_gain[k]) == 0.0 or float(norm) == 0.0:
            continue  # no noise reaches the step's end (the last step, to sigma 0): i.i.d.
        part = free[:, lo:hi]  # xi = (a/|a|) xi_c + (I - a a^T/|a|^2) eta
        along = (part * a[:, None]).sum(1, keepdim=True) / norm  # (N, 1, D)
        out[:, lo:hi] = (a[:, None] / norm.sqrt()) * coarse[:, k:k + 1].double() + part \
            - a[:, None] * along
    return out.to(coarse.dtype)


def replay(noises: Tensor) -> Callable[[], Tensor]:
    """A `noise` function for `solve` that returns noises[:, 0], noises[:, 1], ... in turn."""
    steps = iter(noises.unbind(1))
    return lambda: next(steps)


def guided_eps_fn(head: DiffusionHead, z: Tensor, z_uncond: Tensor, guidance: Tensor):
    """The frozen head's guided eps: eps_u + w (eps_c - eps_u), one batched pass on 2N rows.

    guidance: a scalar tensor, or per-token scales (N,) or (N, 1).
    """
    net = head.net
    cond = net.cond_embed(torch.cat([z, z_uncond]))
    if guidance.numel() > 1:
        guidance = guidance.reshape(-1, 1)  # (N,) would broadcast over the token channels

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        out = net(torch.cat([x, x]).to(z.dtype), t, None, cond)[:, :head.token_dim]
        eps_c, eps_u = out.float().chunk(2)
        return eps_u + guidance * (eps_c - eps_u)
    return eps_fn


def start(head: DiffusionHead, z: Tensor, generator: Optional[torch.Generator], temperature,
          stochastic: bool) -> tuple[Tensor, Optional[Callable[[], Tensor]]]:
    """x_T (N, D) from `generator` and, for the SDE solver, the per-step noise function.

    ODE: the only randomness is x_T, so the temperature (a float or (N, 1)) scales x_T. SDE: as
    in MAR's DDPM chain, x_T is unscaled and each step's fresh noise is scaled by it.
    """
    x_T = head._randn(z.shape[0], z, generator)
    scaled = not (isinstance(temperature, (int, float)) and temperature == 1.0)
    if not stochastic:
        return (x_T * temperature if scaled else x_T), None

    def noise() -> Tensor:
        eps = head._randn(z.shape[0], z, generator)
        return eps * temperature if scaled else eps
    return x_T, noise


@torch.no_grad()
def sample_dpm(head: DiffusionHead, z: Tensor, z_uncond: Optional[Tensor], *, cfg_scale: float,
               temperature=1.0, num_steps: int, generator: Optional[torch.Generator],
               clip_x0: Optional[float] = None, stochastic: bool = False) -> Tensor:
    """The frozen head under DPM-Solver++ (no adapter): CFG on 2N rows when z_uncond is given.

    The baseline that separates the solver's speedup from the adapter's (SUN's "teacher at 4
    steps"). Randomness and temperature as in `start`.
    """
    x_T, noise = start(head, z, generator, temperature, stochastic)
    if z_uncond is not None and cfg_scale != 1.0:
        eps_fn = guided_eps_fn(head, z, z_uncond.to(z), torch.tensor(float(cfg_scale)))
    else:
        cond = head.net.cond_embed(z)

        def eps_fn(x: Tensor, t: Tensor) -> Tensor:
            return head.net(x.to(z.dtype), t, None, cond)[:, :head.token_dim].float()
    x0, _ = solve(eps_fn, head, x_T, num_steps, clip_x0, noise=noise)
    return x0.to(z.dtype)
