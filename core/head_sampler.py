"""How the sampler draws the revealed tokens from the per-token head: one protocol, three heads.

sampler.head picks the implementation, built once per `sample_latents` call:
    ddpm  MAR's respaced DDPM chain, model.head.sample (CFG runs the head on [cond; uncond])
    dpm   the same frozen head under DPM-Solver++ (core/sun/solver.py), CFG on 2n rows
    sun   the SpeedUpNet head adapter (core/sun/head_adapter.py): one pass on (z, z_uncond)
          per solver step gives the guided eps
An optional hook sees every guided head call (the SUN teacher pool records its conditions with
it, core/sun/head_distill.py). diffusers is imported only for dpm and sun.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Protocol

import torch
from torch import Tensor

from core.config import HEAD_SAMPLERS, SamplerConfig
from core.diffusion_head import DiffusionHead

HeadHook = Callable[[Tensor, Tensor, float], None]  # hook(z, z_uncond, cfg_scale)


class HeadSampler(Protocol):
    def __call__(self, z: Tensor, z_uncond: Optional[Tensor], *, cfg_scale: float,
                 temperature, generator: Optional[torch.Generator]) -> Tensor:
        """Tokens (n, D) for conditions z (n, C) and, under CFG, z_uncond (n, C).

        temperature: a float or per-token (n, 1); the head's output dtype is z's.
        """
        ...


def head_clip_x0(model, cfg: SamplerConfig) -> Optional[float]:
    """The bound the head clamps its predicted x0 to (sampler.clip_denoised), or None."""
    clip_range = model.tokenizer.clip_range
    return max(abs(v) for v in clip_range) if cfg.clip_denoised and clip_range else None


class DDPMHeadSampler:
    """sampler.head=ddpm: MAR's respaced DDPM chain, `head.sample` (looked up at every call)."""

    def __init__(self, head: DiffusionHead, num_steps: Optional[int],
                 clip_x0: Optional[float]):
        self.head, self.num_steps, self.clip_x0 = head, num_steps, clip_x0

    def __call__(self, z, z_uncond, *, cfg_scale, temperature, generator):
        return self.head.sample(z, z_uncond=z_uncond, cfg_scale=cfg_scale,
                                temperature=temperature, num_steps=self.num_steps,
                                generator=generator, clip_x0=self.clip_x0)


class DPMHeadSampler:
    """sampler.head=dpm: the frozen head under DPM-Solver++ (no adapter), CFG on 2n rows."""

    def __init__(self, head: DiffusionHead, num_steps: int, clip_x0: Optional[float],
                 stochastic: bool):
        from core.sun.solver import sample_dpm  # lazy: diffusers, only for this head

        self._sample_dpm = sample_dpm
        self.head, self.num_steps, self.clip_x0 = head, num_steps, clip_x0
        self.stochastic = stochastic

    def __call__(self, z, z_uncond, *, cfg_scale, temperature, generator):
        return self._sample_dpm(self.head, z, z_uncond, cfg_scale=cfg_scale,
                                temperature=temperature, num_steps=self.num_steps,
                                generator=generator, clip_x0=self.clip_x0,
                                stochastic=self.stochastic)


class SUNHeadSampler:
    """sampler.head=sun: one adapter pass per solver step gives the guided eps."""

    def __init__(self, head: DiffusionHead, adapter, num_steps: int, clip_x0: Optional[float],
                 stochastic: bool):
        self.head, self.adapter, self.num_steps = head, adapter, num_steps
        self.clip_x0, self.stochastic = clip_x0, stochastic

    def __call__(self, z, z_uncond, *, cfg_scale, temperature, generator):
        return self.adapter.sample(self.head, z, z_uncond, cfg_scale=cfg_scale,
                                   temperature=temperature, num_steps=self.num_steps,
                                   generator=generator, clip_x0=self.clip_x0,
                                   stochastic=self.stochastic)


class HookedHeadSampler:
    """Calls hook(z, z_uncond, cfg_scale) before every head call that has a z_uncond."""

    def __init__(self, inner: HeadSampler, hook: HeadHook):
        self.inner, self.hook = inner, hook

    def __call__(self, z, z_uncond, *, cfg_scale, temperature, generator):
        if z_uncond is not None:
            self.hook(z, z_uncond, cfg_scale)
        return self.inner(z, z_uncond, cfg_scale=cfg_scale, temperature=temperature,
                          generator=generator)


def stochastic_chain(cfg: SamplerConfig) -> bool:
    """Whether the head's chain injects fresh noise at every step: MAR's DDPM chain always, the
    DPM-Solver++ heads (dpm, sun) with sampler.head_solver=sde. Students are distilled on the
    chain they sample with (core/sun/solver.py: coupled_noise)."""
    return cfg.head == "ddpm" or cfg.head_solver == "sde"


def build_head_sampler(model, cfg: SamplerConfig,
                       hook: Optional[HeadHook] = None) -> HeadSampler:
    """The head sampler sampler.head names, for `model` (once per sample_latents call).

    head=sun loads sampler.head_adapter (or uses the installed adapter) and checks it against
    cfg first. `hook` (optional) sees every guided head call, see HookedHeadSampler.
    """
    clip_x0 = head_clip_x0(model, cfg)
    stochastic = stochastic_chain(cfg)
    if cfg.head == "sun":
        sampler = SUNHeadSampler(model.head, _sun_adapter(model, cfg), cfg.num_sampling_steps,
                                 clip_x0, stochastic)
    elif cfg.head == "dpm":
        sampler = DPMHeadSampler(model.head,
                                 cfg.num_sampling_steps or model.head.num_sampling_steps,
                                 clip_x0, stochastic)
    elif cfg.head == "ddpm":
        sampler = DDPMHeadSampler(model.head, cfg.num_sampling_steps, clip_x0)
    else:
        raise ValueError(f"sampler.head={cfg.head!r}: choose one of {HEAD_SAMPLERS}")
    return sampler if hook is None else HookedHeadSampler(sampler, hook)


def _sun_adapter(model, cfg: SamplerConfig):
    """sampler.head=sun: the installed adapter, else the one loaded from sampler.head_adapter."""
    from core.sun import head_adapter  # lazy: diffusers' solver, only for this head

    if cfg.head_adapter:
        adapter = head_adapter.installed(model)
        if adapter is None or getattr(adapter, "source", None) != cfg.head_adapter:
            adapter = head_adapter.load_adapter(model.head, cfg.head_adapter)
            adapter.source = cfg.head_adapter
            head_adapter.install(model, adapter)
    elif head_adapter.installed(model) is None:
        raise ValueError("sampler.head=sun but no SUN head adapter: set sampler.head_adapter to "
                         "a file from core.sun.head_adapter (ablations/run.py distils one), or "
                         "call core.sun.head_adapter.install(model, adapter)")
    adapter = head_adapter.installed(model)
    if next(adapter.parameters()).device != model.mask_token.device:  # model moved after install
        head_adapter.install(model, adapter)
        adapter = head_adapter.installed(model)
    adapter.check_guidance(cfg.cfg_scale)
    trained = (getattr(adapter, "info", None) or {}).get("student_steps")
    if trained is not None and trained != cfg.num_sampling_steps:
        warnings.warn(f"the SUN head adapter was distilled for {trained} steps but samples with "
                      f"sampler.num_sampling_steps={cfg.num_sampling_steps}; distil one for "
                      "these steps", stacklevel=4)
    return adapter
