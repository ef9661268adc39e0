"""Per-token diffusion head: an adaLN residual MLP plus DDPM loss and sampling.

Follows MAR's `SimpleMLPAdaLN` / `DiffLoss` (Li et al., arXiv 2406.11838; github.com/LTH14/mar
`models/diffloss.py`; written from the paper and a reading of the code, not copied). Each token is
independent: the head sees one noisy token x_t (D), its timestep and the backbone's output z (C)
for that token, and predicts eps plus a variance interpolation (2*D channels). The Gaussian
diffusion math lives in `core/diffusion.py`.

Randomness: `loss` takes t and noise from the caller (so a training loop can draw one global batch
up front and slice it across ranks); `sample` draws from the `torch.Generator` it is given, first
x_T (N, D) and then one (N, D) normal per step with t > 0, in chain order.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from core.diffusion import GaussianDiffusion

FREQ_DIM = 256  # sinusoidal timestep features
MAX_PERIOD = 10000.0  # longest sinusoid period of the timestep features
LN_EPS = 1e-6
TIME_INIT_STD = 0.02


def timestep_features(t: Tensor, dim: int = FREQ_DIM) -> Tensor:
    """Sinusoidal features (N, dim) float32 [cos | sin] of (possibly fractional) timesteps (N,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        feats = torch.cat([feats, torch.zeros_like(feats[:, :1])], dim=-1)
    return feats


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation x * (1 + scale) + shift, all (N, w)."""
    return x * (1.0 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Timesteps (N,) -> embeddings (N, w): sinusoid -> Linear -> SiLU -> Linear."""

    def __init__(self, width: int, freq_dim: int = FREQ_DIM):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        """Embed timesteps (N,) into (N, w) of `dtype`."""
        return self.mlp(timestep_features(t, self.freq_dim).to(dtype))


class ResBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x))) with (shift, scale, gate) from SiLU -> Linear(y), (N, w)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Residual update of x (N, w) conditioned on y (N, w)."""
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class FinalLayer(nn.Module):
    """Affine-free LN -> adaLN modulate -> Linear(w -> out), (N, w) -> (N, out)."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Project x (N, w) conditioned on y (N, w) to (N, out)."""
        shift, scale = self.ada(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """The head network: (x_t (N, D), t (N,), z (N, C)) -> (N, 2D) = [eps_hat | v]."""

    def __init__(self, token_dim: int, cond_dim: int, depth: int, width: int):
        super().__init__()
        self.input_proj = nn.Linear(token_dim, width)
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final = FinalLayer(width, 2 * token_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier/zero-bias linears, N(0, 0.02) time MLP, zero adaLN outputs and final linear."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.time_embed.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=TIME_INIT_STD)
        zeroed = [b.ada[-1] for b in self.blocks] + [self.final.ada[-1], self.final.linear]
        for m in zeroed:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, t: Tensor, z: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """Predict [eps_hat | v] (N, 2D) for noisy tokens x (N, D) at original timesteps t (N,).

        t may also be (1,) (one timestep for every row). `cond` = cond_embed(z) when the caller
        already has it (the sampler computes it once per chain, not once per step).
        """
        h = self.input_proj(x)
        y = self.time_embed(t, h.dtype) + (self.cond_embed(z) if cond is None else cond)
        for block in self.blocks:
            h = block(h, y)
        return self.final(h, y)


class DiffusionHead(nn.Module):
    """MAR's DiffLoss: per-token hybrid DDPM loss; respaced DDPM sampling with CFG/temperature."""

    def __init__(self, token_dim: int, cond_dim: int, depth: int, width: int,
                 num_train_timesteps: int = 1000, num_sampling_steps: int = 100):
        super().__init__()
        if not 1 <= num_sampling_steps <= num_train_timesteps:
            raise ValueError(f"num_sampling_steps={num_sampling_steps} must be in "
                             f"[1, num_train_timesteps={num_train_timesteps}]")
        self.token_dim = token_dim
        self.num_train_timesteps = num_train_timesteps
        self.num_sampling_steps = num_sampling_steps
        self.net = SimpleMLPAdaLN(token_dim, cond_dim, depth, width)
        self.diffusion = GaussianDiffusion.cosine(num_train_timesteps)
        # (num_steps, device) -> schedule; plain dict so module buffers/state_dict stay fixed.
        self._schedules: Dict[tuple, GaussianDiffusion] = {}

    def schedule(self, num_steps: Optional[int], device: torch.device) -> GaussianDiffusion:
        """The (cached) chain with `num_steps` steps (None: the training chain) on `device`."""
        key = (num_steps, torch.device(device))
        if key not in self._schedules:
            base = self.diffusion if num_steps is None else self.diffusion.respaced(num_steps)
            self._schedules[key] = base.to(device)
        return self._schedules[key]

    def sample_timesteps(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Training timesteps (n,) long, uniform in [0, T), on the generator's device."""
        device = generator.device if generator is not None else None
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator,
                             device=device)

    def forward(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        """Raw network output (N, 2D) for x (N, D), original timesteps t (N,), z (N, C)."""
        return self.net(x.to(z.dtype), t, z)

    def loss(self, target: Tensor, z: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Per-token hybrid loss (N,) for clean tokens (N, D), z (N, C), t (N,) and noise (N, D)."""
        diffusion = self.schedule(None, target.device)
        t = t.to(target.device)
        x_t = diffusion.q_sample(target, t, noise.to(target.device))
        out = self.net(x_t.to(z.dtype), t, z)
        return diffusion.hybrid_loss(out, target, x_t, t, noise.to(target.device))

    def _randn(self, n: int, z: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        """Standard normal (n, D) drawn on the generator's device, then moved to z's device."""
        device = generator.device if generator is not None else z.device
        noise = torch.randn((n, self.token_dim), generator=generator, device=device)
        return noise.to(z.device, torch.promote_types(z.dtype, torch.float32))

    @torch.no_grad()
    def sample(self, z: Tensor, *, z_uncond: Optional[Tensor] = None, cfg_scale: float = 1.0,
               temperature: float = 1.0, num_steps: Optional[int] = None,
               generator: Optional[torch.Generator] = None,
               clip_x0: Optional[float] = None) -> Tensor:
        """Sample tokens (N, D) in z's dtype for conditions z (N, C) by respaced DDPM.

        With z_uncond (N, C) and cfg_scale != 1 the network runs on [z; z_uncond] (2N) with the same
        x_t in both halves; eps = eps_u + s (eps_c - eps_u) and the cond half's variance drive one
        shared chain. x_T ~ N(0, I) is not scaled by the temperature; later noise is.
        generator=None falls back to torch's default generator (not reproducible across calls).
        clip_x0=None follows MAR (x0_hat unclipped); a float c clamps x0_hat to [-c, c] each step,
        an opt-in guard for under-trained heads (1/sqrt(abar_999) ~ 2e4 amplifies eps errors).
        """
        steps = self.num_sampling_steps if num_steps is None else num_steps
        diffusion = self.schedule(steps, z.device)
        guided = z_uncond is not None and cfg_scale != 1.0
        cond = torch.cat([z, z_uncond.to(z)], dim=0) if guided else z
        n = z.shape[0]
        # Work that is the same at every step is done once: the condition embedding of z. The
        # schedule is read at one timestep (1,) broadcast over the rows; the net still embeds it
        # per row (a 1-row matmul would round differently and change samples in the last bits).
        reuse = isinstance(self.net, SimpleMLPAdaLN)  # tests may swap in another network
        extra = (self.net.cond_embed(cond),) if reuse else ()
        x = self._randn(n, z, generator)
        for step in reversed(range(diffusion.num_timesteps)):
            t = torch.full((1,), step, device=z.device, dtype=torch.long)
            t_net = diffusion.timestep_map[t].expand(cond.shape[0])
            if guided:
                out = self.net(torch.cat([x, x]).to(z.dtype), t_net, cond, *extra)
                eps_c, eps_u = out[:, :self.token_dim].chunk(2, dim=0)
                eps = eps_u + cfg_scale * (eps_c - eps_u)
                out = torch.cat([eps, out[:n, self.token_dim:]], dim=-1)
            else:
                out = self.net(x.to(z.dtype), t_net, cond, *extra)
            mean, log_var, _ = diffusion.p_mean_variance(out, x, t, clip_x0)
            noise = self._randn(n, z, generator) if step > 0 else None
            x = diffusion.p_sample_step(mean, log_var, step, noise, temperature)
        return x.to(z.dtype)
