"""The tiny text-to-image teacher: a diffusers UNet2DConditionModel trained from scratch on the
synthetic testbed, its DPM-Solver++ sampler (with and without CFG), and the style fine-tune.

A small stand-in for SD 1.5 as SUN uses it (arXiv 2312.08887, sec. 4). Deliberate deviations from SD1.5,
because this model works in pixel space at 16x16: a *linear* beta schedule (1e-4 -> 0.02, DDPM's
pixel-space default) instead of SD's scaled-linear latent schedule, whose terminal SNR leaves
visible signal at t = 999 in pixel space; DPM-Solver++'s dynamic thresholding of x0 predictions
(Imagen's, right for pixel space, wrong for latents) so that guided pixel-space predictions at
t = 999, where x0 = (x - s eps) / a amplifies eps errors ~150x, stay in [-1, 1];
cross-attention only at 8x8 and 4x4 (SD1.5 likewise has none at its coarsest level).
Samplers: diffusers' DPMSolverMultistepScheduler (DPM-Solver++ 2M, trailing spacing) for every
method, so the 4- and 25-step runs share spacing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel

from core.sun import testbed
from core.sun.optim import cosine_lr

NUM_TRAIN_TIMESTEPS = 1000
BETA_SCHEDULE = "linear"
PIXEL_RANGE = 1.0  # images live in [-1, 1]: dynamic thresholding clips x0 predictions to it
EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> eps


@dataclass(kw_only=True)
class TeacherConfig:
    """Tiny UNet + text encoder + their training; defaults are the full `make sun` sizes."""
    block_out_channels: tuple[int, ...] = (32, 48, 64)
    text_dim: int = 64
    attention_head_dim: int = 8  # channels per head
    num_steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    p_attr_drop: float = 0.3  # attribute dropout: negatives and partial prompts need marginals
    p_null: float = 0.1  # whole caption dropped: the unconditional model for CFG
    style_steps: int = 300  # fine-tune on the "stripes" style (the community-model stand-in)
    style_lr: float = 5e-4

    def __post_init__(self):
        if any(c % self.attention_head_dim for c in self.block_out_channels[1:]):
            raise ValueError(f"block_out_channels {self.block_out_channels} must be multiples of "
                             f"attention_head_dim={self.attention_head_dim}")
        if not 0 <= self.p_attr_drop < 1 or not 0 <= self.p_null < 1:
            raise ValueError("p_attr_drop and p_null are probabilities in [0, 1)")


# ----------------------------------------------------------------------------- building


def build_unet(cfg: TeacherConfig, generator: torch.Generator) -> UNet2DConditionModel:
    """A UNet2DConditionModel from config: ResNet-only at full size, cross-attention below."""
    n = len(cfg.block_out_channels)
    heads = tuple(max(1, c // cfg.attention_head_dim) for c in cfg.block_out_channels)
    fork = torch.random.fork_rng()  # diffusers initialises from the global RNG: seed it locally
    with fork:
        torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=generator)))
        return UNet2DConditionModel(
            sample_size=testbed.IMAGE_SIZE, in_channels=3, out_channels=3,
            block_out_channels=cfg.block_out_channels, layers_per_block=1,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
            cross_attention_dim=cfg.text_dim, attention_head_dim=heads, norm_num_groups=8)


def build_text_encoder(cfg: TeacherConfig, generator: torch.Generator) -> testbed.TextEncoder:
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=generator)))
        return testbed.TextEncoder(cfg.text_dim)


def make_scheduler(num_steps: int) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2M) with trailing spacing, set to `num_steps`; the one sampler for all."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}: need at least 1 sampling step")
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
        algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
        prediction_type="epsilon", thresholding=True, sample_max_value=PIXEL_RANGE)
    scheduler.set_timesteps(num_steps)
    return scheduler


def alpha_sigma(t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """VP coefficients (sqrt(abar_t), sqrt(1 - abar_t)) of the training schedule at integer t."""
    abar = make_scheduler(1).alphas_cumprod[torch.as_tensor(t).long()]
    return abar.sqrt(), (1 - abar).sqrt()


# ----------------------------------------------------------------------------- sampling


def dpm_sample(eps_fn: EpsFn, noise: torch.Tensor, num_steps: int,
               record: bool = False) -> tuple[torch.Tensor, dict | None]:
    """Run DPM-Solver++ from x_T = `noise` (B, 3, H, W); returns (x_0, trajectory or None).

    The trajectory holds the state before each step and the eps used there:
    {"timesteps": (S,), "states": (B, S, 3, H, W), "eps": (B, S, 3, H, W)}. Autograd flows
    through the steps, so the same function unrolls the student for the MSC loss.
    """
    scheduler = make_scheduler(num_steps)
    x, states, epss = noise, [], []
    for t in scheduler.timesteps:
        eps = eps_fn(x, t.expand(x.shape[0]))
        if record:
            states.append(x.detach())
            epss.append(eps.detach())
        x = scheduler.step(eps, t, x).prev_sample
    traj = None
    if record:
        traj = {"timesteps": scheduler.timesteps.clone(), "states": torch.stack(states, 1),
                "eps": torch.stack(epss, 1)}
    return x, traj


def guided_eps_fn(unet: UNet2DConditionModel, pos: torch.Tensor, neg: torch.Tensor,
               guidance: float) -> EpsFn:
    """Classifier-free guidance with the negative as the unconditional branch (2 NFE/step)."""
    context = torch.cat([neg, pos])  # (2B, L, D), one batched UNet call

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_neg, eps_pos = unet(torch.cat([x, x]), torch.cat([t, t]), context).sample.chunk(2)
        return eps_neg + guidance * (eps_pos - eps_neg)
    return eps_fn


def plain_eps_fn(unet: UNet2DConditionModel, context: torch.Tensor) -> EpsFn:
    """One UNet call per step on `context` (no CFG; also the SUN student's single pass)."""
    return lambda x, t: unet(x, t, context).sample


# ----------------------------------------------------------------------------- training


def train_denoiser(unet: UNet2DConditionModel, encoder: testbed.TextEncoder, cfg: TeacherConfig,
                   *, style: str, num_steps: int, lr: float, generator: torch.Generator,
                   train_encoder: bool = True, log: Callable[[str], None] = print) -> list[float]:
    """Epsilon-prediction training on freshly rendered images with attribute dropout.

    Every full caption (all 240 combinations) is used: the teacher is the "pretrained base
    model"; the held-out combinations are held out from the *adapter* only.
    """
    noise_scheduler = DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS,
                                    beta_schedule=BETA_SCHEDULE)
    params = list(unet.parameters()) + (list(encoder.parameters()) if train_encoder else [])
    encoder.requires_grad_(train_encoder)
    unet.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    combos, losses = testbed.all_combinations(), []
    unet.train()
    for step in range(num_steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, lr, min(cfg.warmup, num_steps // 5 + 1), num_steps)
        labels = testbed.sample_captions(combos, cfg.batch_size, generator)
        x0 = testbed.render(labels, generator, style)
        captions = testbed.drop_attributes(labels, cfg.p_attr_drop, cfg.p_null, generator)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(NUM_TRAIN_TIMESTEPS, (x0.shape[0],), generator=generator)
        pred = unet(noise_scheduler.add_noise(x0, noise, t), t, encoder(captions)).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, num_steps // 5) == 0:
            recent = losses[-max(1, num_steps // 5):]
            log(f"  [{style}] step {step + 1}/{num_steps} loss {sum(recent) / len(recent):.4f}")
    unet.eval().requires_grad_(False)
    encoder.eval().requires_grad_(False)
    return losses


def finetune_style(base: UNet2DConditionModel, encoder: testbed.TextEncoder, cfg: TeacherConfig,
                   generator: torch.Generator, style: str = "stripes",
                   log: Callable[[str], None] = print) -> UNet2DConditionModel:
    """A full fine-tune of a copy of `base` on a shifted style, text encoder frozen (as community
    SD1.5 fine-tunes keep CLIP): the model the base-trained adapter is plugged into."""
    tuned = copy.deepcopy(base)
    train_denoiser(tuned, encoder, cfg, style=style, num_steps=cfg.style_steps, lr=cfg.style_lr,
                   generator=generator, train_encoder=False, log=log)
    return tuned
