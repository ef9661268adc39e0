"""Gaussian-diffusion math for the per-token diffusion head (MAR "Diffusion Loss").

Follows the DDPM setup MAR (github.com/LTH14/mar, `diffusion/`) inherits from improved DDPM
(Nichol & Dhariwal, arXiv 2102.09672), written from the equations:

* cosine schedule over T = 1000 steps (betas from `diffusers.DDPMScheduler`, "squaredcos_cap_v2"),
* epsilon prediction with a learned-range variance: the network emits 2*D channels (eps, v) and
  log sigma^2 = frac * log beta_t + (1 - frac) * log beta~_t with frac = (v + 1) / 2,
* the "hybrid" loss MSE(eps_hat, eps) + L_vlb, where L_vlb only trains the variance (the mean
  prediction is detached),
* respacing to fewer evenly spaced steps for sampling, and no clipping of the predicted x0.

Choice for the t = 0 VLB term: instead of improved DDPM's discretised-Gaussian decoder NLL (which
assumes 8-bit pixels in [-1, 1] and does not fit continuous latent tokens) we use the KL form
KL(N(x0, beta~_1) || N(mu_theta, sigma_theta^2)), i.e. the t > 0 formula with the clipped posterior
variance. It is non-negative, needs no bin width, and is minimised by mu_theta = x0 with sigma at
the low end of its range. All VLB terms are in bits per dimension (mean over channels / ln 2).

Schedule quantities are derived in float64 and stored as float32; the arithmetic runs in the input
dtype promoted to at least float32.
"""

from __future__ import annotations

import copy
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

COSINE_SCHEDULE = "squaredcos_cap_v2"  # diffusers name of the improved-DDPM cosine schedule
MAX_BETA = 0.999  # the cosine schedule's cap on beta_t
LOG2 = math.log(2.0)
_TENSORS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1",
    "posterior_mean_coef2", "log_betas", "timestep_map",
)


def cosine_betas(num_timesteps: int = 1000) -> Tensor:
    """Cosine-schedule betas (T,) float64, taken from diffusers' DDPMScheduler (stored float32)."""
    from diffusers import DDPMScheduler  # lazy: importing diffusers costs seconds per process
    with torch.device("cpu"):  # constant data: ignore any default-device context (e.g. meta)
        scheduler = DDPMScheduler(num_train_timesteps=num_timesteps, beta_schedule=COSINE_SCHEDULE)
    return scheduler.betas.to(torch.float64)


def spaced_timesteps(num_timesteps: int, num_steps: int) -> Tensor:
    """Indices (n,) long of `num_steps` evenly spaced steps in [0, T), first 0 and last T - 1.

    Improved DDPM's single-section rule: stride (T - 1) / (n - 1), each index rounded to nearest.
    For n = 1 we keep only T - 1 (one denoising jump from pure noise), not improved DDPM's 0.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps={num_steps} must be in [1, {num_timesteps}]")
    if num_steps == 1:
        return torch.tensor([num_timesteps - 1], dtype=torch.long)
    stride = (num_timesteps - 1) / (num_steps - 1)
    return torch.tensor([round(i * stride) for i in range(num_steps)], dtype=torch.long)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats, broadcast shapes."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _gather(arr: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """arr[t] (N,) reshaped to (N, 1, ...) to broadcast against `like` (N, ...), in like's dtype."""
    out = arr.to(t.device)[t].to(like.dtype)
    return out.view(-1, *([1] * (like.dim() - 1)))


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the diffusion arithmetic runs in: x's dtype promoted to at least float32."""
    return torch.promote_types(x.dtype, torch.float32)


class GaussianDiffusion:
    """A discrete Gaussian diffusion from betas (T,), optionally a respacing of another one."""

    def __init__(self, betas: Tensor, timestep_map: Optional[Tensor] = None):
        with torch.device("cpu"):  # the schedule is real CPU data even under a meta-device context
            self._build(torch.as_tensor(betas, dtype=torch.float64, device="cpu").flatten(),
                        timestep_map)

    def _build(self, b: Tensor, timestep_map: Optional[Tensor]) -> None:
        """Derive every schedule tensor from betas b (T,) float64 on the CPU."""
        if not bool(((b > 0) & (b <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.num_timesteps = int(b.numel())
        ac = torch.cumprod(1.0 - b, dim=0)
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        # beta~_0 = 0: clip the log at beta~_1 (or beta_0 for a one-step chain).
        first = post_var[1:2] if self.num_timesteps > 1 else b[:1]
        self._alphas_cumprod64 = ac  # kept exact for respacing
        f64 = {
            "betas": b,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1.0).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": torch.log(torch.cat([first, post_var[1:]])),
            "posterior_mean_coef1": b * ac_prev.sqrt() / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * (1.0 - b).sqrt() / (1.0 - ac),
            "log_betas": b.log(),
        }
        for name, value in f64.items():
            setattr(self, name, value.to(torch.float32))
        if timestep_map is None:
            timestep_map = torch.arange(self.num_timesteps)
        self.timestep_map = torch.as_tensor(timestep_map, dtype=torch.long, device="cpu").clone()
        if self.timestep_map.shape != (self.num_timesteps,):
            raise ValueError("timestep_map must hold one original index per step")

    @classmethod
    def cosine(cls, num_timesteps: int = 1000) -> "GaussianDiffusion":
        """The improved-DDPM cosine-schedule diffusion over `num_timesteps` steps."""
        return cls(cosine_betas(num_timesteps))

    def respaced(self, num_steps: int) -> "GaussianDiffusion":
        """A chain over `num_steps` evenly spaced steps; betas recomputed from alpha-bar there."""
        kept = spaced_timesteps(self.num_timesteps, num_steps)
        ac = self._alphas_cumprod64[kept]
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        out = GaussianDiffusion(1.0 - ac / ac_prev, timestep_map=self.timestep_map[kept])
        out._alphas_cumprod64 = ac  # exact original alpha-bar at the kept steps
        return out

    def to(self, device: torch.device | str) -> "GaussianDiffusion":
        """A shallow copy whose schedule tensors live on `device`."""
        out = copy.copy(self)
        for name in _TENSORS:
            setattr(out, name, getattr(self, name).to(device))
        return out

    # ----------------------------------------------------------------- forward process
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise for x0, noise (N, ...) and t (N,) long."""
        x0 = x0.to(_compute_dtype(x0))
        return (_gather(self.sqrt_alphas_cumprod, t, x0) * x0
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise.to(x0.dtype))

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log variance (each (N, ...)) of q(x_{t-1} | x_t, x0)."""
        mean = (_gather(self.posterior_mean_coef1, t, x_t) * x0
                + _gather(self.posterior_mean_coef2, t, x_t) * x_t)
        var = _gather(self.posterior_variance, t, x_t).expand_as(x_t)
        log_var = _gather(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        return mean, var, log_var

    # ----------------------------------------------------------------- model parameterisation
    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), unclipped (MAR: no clipping)."""
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def learned_log_variance(self, v: Tensor, t: Tensor) -> Tensor:
        """log sigma^2 (N, D) interpolating log beta~_t (v = -1) and log beta_t (v = 1)."""
        frac = (v + 1.0) / 2.0
        return (frac * _gather(self.log_betas, t, v)
                + (1.0 - frac) * _gather(self.posterior_log_variance_clipped, t, v))

    def p_mean_variance(self, model_output: Tensor, x_t: Tensor, t: Tensor,
                        clip_x0: Optional[float] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Mean, log variance and predicted x0 (each (N, D)) of p(x_{t-1} | x_t) from (N, 2D).

        clip_x0=None (MAR) leaves x0_hat unclipped; a float c clamps it to [-c, c] first.
        """
        dtype = _compute_dtype(x_t)
        x_t = x_t.to(dtype)
        eps, v = model_output.to(dtype).chunk(2, dim=-1)
        pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
        if clip_x0 is not None:
            pred_x0 = pred_x0.clamp(-clip_x0, clip_x0)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t)
        return mean, self.learned_log_variance(v, t), pred_x0

    # ----------------------------------------------------------------- training loss
    def hybrid_loss(self, model_output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor,
                    noise: Tensor) -> Tensor:
        """MSE(eps_hat, eps) + L_vlb (bits/dim, mean detached) (N,) from output (N, 2D)."""
        dtype = _compute_dtype(model_output)
        model_output, x0, noise = model_output.to(dtype), x0.to(dtype), noise.to(dtype)
        x_t = x_t.to(dtype)
        eps, v = model_output.chunk(2, dim=-1)
        mse = ((noise - eps) ** 2).mean(dim=-1)
        # The VLB trains only the variance: the mean comes from the detached eps prediction.
        frozen = torch.cat([eps.detach(), v], dim=-1)
        model_mean, model_log_var, _ = self.p_mean_variance(frozen, x_t, t)
        true_mean, _, true_log_var = self.q_posterior(x0, x_t, t)
        # At t = 0 this is the KL form of the decoder term (see the module docstring).
        vlb = normal_kl(true_mean, true_log_var, model_mean, model_log_var).mean(dim=-1) / LOG2
        return mse + vlb

    # ----------------------------------------------------------------- reverse process
    def p_sample_step(self, mean: Tensor, log_var: Tensor, step: int, noise: Optional[Tensor],
                      temperature: float = 1.0) -> Tensor:
        """x_{t-1} = mean + temperature * sigma * noise (N, D); just the mean at step 0."""
        if step == 0 or noise is None:
            return mean
        return mean + temperature * torch.exp(0.5 * log_var) * noise.to(mean.dtype)
