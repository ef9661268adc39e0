"""Image-to-video sampling: frames autoregressive in time, MAR-style masked iterations inside a frame.

Follows VideoMAR's inference (reference section 2.8): prefill the clean conditioning frame(s)
into the temporal KV cache; for each new frame run K masked iterations on MAR's cosine schedule
with a fresh random order, sampling the revealed tokens with the per-token diffusion head under a
linear CFG schedule and the frame's temperature; from the second generated frame on clip the
latents to the tokenizer's range; then append the finished frame to the cache. With the cache off
every iteration recomputes all earlier frames; both paths consume the generator identically, so
they give the same video. The `attn="full"` model ("total mask" baseline) generates all frames
jointly: one random order over every generated token, K x (number of generated frames)
iterations so each iteration reveals as many tokens as a causal one, no cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional, Sequence

import torch

from core.config import SamplerConfig
from core.head_sampler import HeadHook, HeadSampler, build_head_sampler
from core.masks import mask_by_order, random_orders, reveal_schedule


def frame_temperatures(cfg: SamplerConfig, num_generated: int) -> list[float]:
    """Temperature of each generated frame: constant, progressive (linear start -> end), or a list.

    "progressive" interpolates linearly from `temperature` at the first generated frame to
    `temperature_end` at the last: tau_i = tau_0 + (tau_end - tau_0) * i / (G - 1) for the i-th
    (0-based) of G generated frames, so both endpoints are reached exactly and the mean is
    (tau_0 + tau_end) / 2 (G = 1: just tau_0). The released code hints 0.95 -> 0.90 with i / G,
    which never reaches tau_end (1.0 -> 0.8 over 15 frames would end at 0.813).
    """
    if cfg.temperature_schedule == "constant":
        return [cfg.temperature] * num_generated
    if cfg.temperature_schedule == "progressive":
        if num_generated == 1:
            return [cfg.temperature]
        step = (cfg.temperature_end - cfg.temperature) / (num_generated - 1)
        return [cfg.temperature_end if i == num_generated - 1 else cfg.temperature + step * i
                for i in range(num_generated)]
    if len(cfg.temperatures) < num_generated:
        raise ValueError(f"sampler.temperatures has {len(cfg.temperatures)} values but "
                         f"{num_generated} frames are generated: give one per generated frame")
    return list(cfg.temperatures[:num_generated])


def guidance_at(cfg: SamplerConfig, num_tokens: int, still_masked: int) -> float:
    """Guidance scale for an iteration: MAR's linear schedule 1 + (s-1)(N - m_k)/N, or constant."""
    if cfg.cfg_schedule == "constant":
        return cfg.cfg_scale
    return 1.0 + (cfg.cfg_scale - 1.0) * (num_tokens - still_masked) / num_tokens


def _reveal(head_sampler: HeadSampler, features, reveal, tokens, guidance, temperature,
            generator, batch):
    """Sample the revealed tokens (as one batch through the head) and write them into `tokens`."""
    z = features[:batch][reveal]  # (n, W), position-major within each sample
    z_uncond = features[batch:][reveal] if features.shape[0] > batch else None
    values = head_sampler(z, z_uncond, cfg_scale=guidance, temperature=temperature,
                          generator=generator)
    tokens[reveal] = values.to(tokens.dtype)


def _double(x: torch.Tensor, guided: bool) -> torch.Tensor:
    return torch.cat([x, x]) if guided else x


def _at_scale(model, adapter, guidance: float):
    """Backbone passes at guidance scale `guidance` under a one-pass guidance module (the SUN
    backbone adapter or a guidance-distilled student's w embedding), else a no-op."""
    return adapter.scale(model, guidance) if adapter is not None else contextlib.nullcontext()


def _generate_causal(model, cond, num_frames, cfg, generator, context, context_mask, guided,
                     head_sampler, adapter=None):
    batch, num_cond, height, width, dim = cond.shape
    per_frame = height * width
    temperatures = frame_temperatures(cfg, num_frames - num_cond)
    schedule = reveal_schedule(per_frame, cfg.num_iter)
    frames = [cond[:, i] for i in range(num_cond)]
    cache = None
    if cfg.use_kv_cache:  # 1. prefill the conditioning frames
        cache = model.new_cache(batch * (2 if guided else 1), num_frames, per_frame)
        with _at_scale(model, adapter, cfg.cfg_scale):
            model.backbone(_double(cond, guided), None, 0, context, context_mask, cache,
                           commit=True)
    for f in range(num_cond, num_frames):  # 2. one frame at a time
        orders = random_orders(batch, per_frame, generator).to(cond.device)
        current = torch.zeros(batch, per_frame, dim, device=cond.device, dtype=cond.dtype)
        masked = torch.ones(batch, per_frame, dtype=torch.bool, device=cond.device)
        for still_masked in schedule:  # 3. K masked iterations
            x = current.view(batch, 1, height, width, dim)
            m = masked.view(batch, 1, per_frame)
            guidance = guidance_at(cfg, per_frame, still_masked)
            scaled = _at_scale(model, adapter, guidance)
            if cache is None:  # recompute every earlier frame
                past = torch.stack(frames, dim=1)
                x = torch.cat([past, x], dim=1)
                m = torch.cat([torch.zeros(batch, f, per_frame, dtype=torch.bool,
                                           device=m.device), m], dim=1)
                with scaled:
                    features = model.backbone(_double(x, guided), _double(m, guided), 0, context,
                                              context_mask)[:, -1]
            else:  # read-only pass against the cached frames
                with scaled:
                    features = model.backbone(_double(x, guided), _double(m, guided), f, context,
                                              context_mask, cache)[:, 0]
            next_masked = mask_by_order(orders, still_masked)
            _reveal(head_sampler, features, masked & ~next_masked, current,
                    1.0 if adapter is not None else guidance, temperatures[f - num_cond],
                    generator, batch)
            masked = next_masked
        if cfg.clip_latents and f > num_cond and model.tokenizer.clip_range is not None:
            current = current.clamp(*model.tokenizer.clip_range)  # 4. from the 2nd generated frame
        frame = current.view(batch, height, width, dim)
        frames.append(frame)
        if cache is not None and f + 1 < num_frames:  # 5. append the finished frame
            with _at_scale(model, adapter, cfg.cfg_scale):
                model.backbone(_double(frame[:, None], guided), None, f, context, context_mask,
                               cache, commit=True)
    return torch.stack(frames, dim=1)


def _generate_joint(model, cond, num_frames, cfg, generator, context, context_mask, guided,
                    head_sampler, adapter=None):
    batch, num_cond, height, width, dim = cond.shape
    per_frame = height * width
    num_generated = num_frames - num_cond
    total = num_generated * per_frame
    temperature = torch.tensor(frame_temperatures(cfg, num_generated), device=cond.device)
    token_temperature = temperature.repeat_interleave(per_frame).expand(batch, total)
    orders = random_orders(batch, total, generator).to(cond.device)
    current = torch.zeros(batch, total, dim, device=cond.device, dtype=cond.dtype)
    masked = torch.ones(batch, total, dtype=torch.bool, device=cond.device)
    cond_mask = torch.zeros(batch, num_cond, per_frame, dtype=torch.bool, device=cond.device)
    # Latent clipping applies from the 2nd generated frame on, token by token as they are revealed.
    clip_range = model.tokenizer.clip_range if cfg.clip_latents else None
    after_first = (torch.arange(total, device=cond.device) >= per_frame)[None]  # (1, N)
    for still_masked in reveal_schedule(total, cfg.num_iter * num_generated):
        x = torch.cat([cond, current.view(batch, num_generated, height, width, dim)], dim=1)
        m = torch.cat([cond_mask, masked.view(batch, num_generated, per_frame)], dim=1)
        guidance = guidance_at(cfg, total, still_masked)
        with _at_scale(model, adapter, guidance):
            features = model.backbone(_double(x, guided), _double(m, guided), 0, context,
                                      context_mask)[:, num_cond:].flatten(1, 2)
        next_masked = mask_by_order(orders, still_masked)
        reveal = masked & ~next_masked
        _reveal(head_sampler, features, reveal, current, 1.0 if adapter is not None else guidance,
                token_temperature[reveal][:, None], generator, batch)  # (n, 1) per-token
        if clip_range is not None:  # as in the causal path: clipped before later steps see them
            clip = reveal & after_first
            current[clip] = current[clip].clamp(*clip_range)
        masked = next_masked
    video = current.view(batch, num_generated, height, width, dim)
    return torch.cat([cond, video], dim=1)


@torch.no_grad()
def sample_latents(model, cond_tokens: torch.Tensor, num_frames: int, cfg: SamplerConfig,
                   generator: torch.Generator, captions: Optional[Sequence[str]] = None, *,
                   head_hook: Optional[HeadHook] = None) -> torch.Tensor:
    """Continue conditioning tokens (B, Tc, h, w, D) to (B, num_frames, h, w, D).

    head_hook(z, z_uncond, cfg_scale), if given, sees every guided head call (core/head_sampler.py).
    """
    num_cond = cond_tokens.shape[1]
    if not num_cond < num_frames:
        raise ValueError(f"num_frames={num_frames} must exceed the {num_cond} conditioning frames")
    causal = model.pattern.causal
    use_cache = cfg.use_kv_cache if cfg.use_kv_cache is not None else causal
    if use_cache and not causal:
        raise ValueError("use_kv_cache=True cannot work with attn='full': every frame attends to "
                         "later frames; sample with use_kv_cache=False")
    per_frame = cond_tokens.shape[2] * cond_tokens.shape[3]
    reveal_schedule(per_frame, cfg.num_iter)  # validates num_iter against the frame size
    guided = cfg.cfg_scale != 1.0
    if guided and model.text_encoder is None:
        raise ValueError("cfg_scale != 1 needs a text-conditioned model (model.text_dim > 0)")
    head_sampler = build_head_sampler(model, cfg, head_hook)
    batch = cond_tokens.shape[0]
    context, context_mask = model.encode_context(captions, batch)
    adapter = None  # a one-pass guidance module: its scale(model, w) wraps every backbone pass
    if guided and cfg.guidance == "distilled":  # one pass on the caption: the student knows w
        from core.sun.guided_student import resolve

        adapter = resolve(model, cfg)
        guided = False
    elif guided:
        negative = [cfg.negative_prompt] * batch if cfg.negative_prompt is not None else None
        null, null_mask = model.encode_context(negative, batch)
        if cfg.guidance == "sun":  # one pass on the joint context [caption | negative]
            from core.sun.backbone_adapter import joint_context, resolve

            adapter = resolve(model, cfg)
            context, context_mask = joint_context(context, context_mask, null, null_mask)
            guided = False  # no doubled batch: the adapter folds guidance into the features
        else:  # [conditional; unconditional] halves
            context = torch.cat([context, null])
            context_mask = torch.cat([context_mask, null_mask])
    cfg = dataclasses.replace(cfg, use_kv_cache=use_cache)
    generate = _generate_causal if causal else _generate_joint
    return generate(model, cond_tokens, num_frames, cfg, generator, context, context_mask, guided,
                    head_sampler, adapter)


def device_generator(model, seed: int) -> torch.Generator:
    """A generator on the model's device: the orders and the head's noise of a sampling call are
    drawn where they are used, so a GPU run copies no noise from the host per diffusion step. On
    the CPU it is the same stream as torch.Generator().manual_seed(seed)."""
    return torch.Generator(device=model.mask_token.device).manual_seed(seed)


def sample_video(model, first_frame: torch.Tensor, num_frames: int, *, use_kv_cache: bool = True,
                 generator: Optional[torch.Generator] = None,
                 captions: Optional[Sequence[str]] = None, **sampler_options) -> torch.Tensor:
    """Generate (B, num_frames, C, H, W) in [0, 1] from a first frame (B, C, H, W) in [0, 1].

    `first_frame` may also be a clip (B, Tc, C, H, W) of conditioning frames. `sampler_options`
    are `SamplerConfig` fields (num_iter, cfg_scale, temperature, temperature_schedule, ...).
    `generator=None` uses `device_generator(model, 0)`. Full-attention models ignore
    `use_kv_cache` (they have nothing to cache).
    """
    if not model.pattern.causal:
        use_kv_cache = False
    cfg = SamplerConfig(**{**sampler_options, "use_kv_cache": use_kv_cache})
    generator = generator if generator is not None else device_generator(model, 0)
    clip = first_frame[:, None] if first_frame.dim() == 4 else first_frame
    if clip.dim() != 5:
        raise ValueError(f"first_frame must be (B, C, H, W) or (B, Tc, C, H, W), got {tuple(first_frame.shape)}")
    device = model.mask_token.device
    cond = model.tokenizer.encode(clip.to(device))  # num_frames: pixel frames, like the output
    latents = sample_latents(model, cond, model.tokenizer.latent_frames(num_frames), cfg,
                             generator, captions)
    return model.tokenizer.decode(latents)
