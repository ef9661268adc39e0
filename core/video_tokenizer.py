"""A frozen diffusers video VAE with temporal compression as a tokenizer (tokenizer.kind=video_vae).

VideoMAR tokenizes with Cosmos' causal video tokenizer (8x in time). Here any of diffusers'
causal video VAEs loads from a local directory (`tokenizer.vae_path`, written by
`save_pretrained`): AutoencoderKLWan (tested), AutoencoderKLCosmos, AutoencoderKLCogVideoX,
AutoencoderKLHunyuanVideo. A clip of T = 1 + k*n frames (k = tokenizer.vae_temporal) encodes in
one call to 1 + n latent frames: frame 0 alone, then each group of k frames; the model's frames
are these latent frames, so the conditioning frame is latent frame 0 and only depends on pixel
frame 0 (the encoders are causal). Other clip lengths are a ConfigError naming valid ones.

Latents are normalised as the diffusers pipelines do: (z - latents_mean) / latents_std per
channel (Wan; Cosmos keeps one pair per channel and latent frame) when the config has them, else
(z - shift_factor) * scaling_factor; then patchified like the image VAE's. Loading, freezing and
the missing-file errors are VAETokenizer's (core/tokenizers.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from einops import rearrange
from torch import nn

from core.tokenizers import (VAE_CONFIG_FILE, VIDEO_STAGE_HINT, VAETokenizer, _patchify,
                             _unpatchify)

CLIPS_PER_CALL = 4  # clips per VAE call (bounds activation memory)
# class name -> (latent channels key, spatial factor key, temporal factor key) in config.json;
# CogVideoX's spatial factor is 2**(len(block_out_channels) - 1).
VIDEO_VAES = {
    "AutoencoderKLWan": ("z_dim", "scale_factor_spatial", "scale_factor_temporal"),
    "AutoencoderKLCosmos": ("latent_channels", "spatial_compression_ratio",
                            "temporal_compression_ratio"),
    "AutoencoderKLHunyuanVideo": ("latent_channels", "spatial_compression_ratio",
                                  "temporal_compression_ratio"),
    "AutoencoderKLCogVideoX": ("latent_channels", None, "temporal_compression_ratio"),
}


class VideoVAETokenizer(VAETokenizer):
    """Clip (B,T,C,H,W) in [0,1] <-> tokens (B,1+(T-1)/k,H/s,W/s,D) through a frozen video VAE."""

    KIND = "video_vae"
    HINT = VIDEO_STAGE_HINT

    def __init__(self, cfg, sample_posterior: bool = False) -> None:
        super().__init__(cfg, sample_posterior)
        self._stats: Optional[tuple] = None  # (mean, std) (1, C, F, 1, 1) or None: scale/shift

    def _check_config(self, root: Path) -> str:
        conf = json.loads((root / VAE_CONFIG_FILE).read_text())
        name = conf.get("_class_name")
        if name not in VIDEO_VAES:
            raise ValueError(f"{root / VAE_CONFIG_FILE} describes a {name}, not one of "
                             f"{sorted(VIDEO_VAES)}: point tokenizer.vae_path at a video VAE "
                             f"directory ({self.HINT})")
        chan_key, spatial_key, temporal_key = VIDEO_VAES[name]
        channels = conf.get(chan_key)
        spatial = (conf.get(spatial_key) if spatial_key
                   else 2 ** (len(conf.get("block_out_channels", [0])) - 1))
        found = {"vae_latent_channels": channels, "vae_downsample": spatial,
                 "vae_temporal": conf.get(temporal_key)}
        wrong = {k: v for k, v in found.items() if v != getattr(self.cfg, k)}
        if conf.get("in_channels", 3) != self.image_channels:
            wrong["image_channels"] = conf.get("in_channels", 3)
        if wrong:
            said = " ".join(f"tokenizer.{k}={getattr(self.cfg, k)}" for k in wrong)
            fix = " ".join(f"tokenizer.{k}={v}" for k, v in wrong.items())
            raise ValueError(f"the {name} in {root} does not match the config ({said}): set {fix}")
        return name

    def _set_normalisation(self, vae: nn.Module) -> None:
        mean, std = (getattr(vae.config, key, None) for key in ("latents_mean", "latents_std"))
        if mean is None or std is None:
            self._stats = None
            super()._set_normalisation(vae)
            return
        channels = self.cfg.vae_latent_channels
        self._stats = tuple(torch.tensor(v, dtype=torch.float32).view(1, channels, -1, 1, 1)
                            for v in (mean, std))

    def _normalisers(self, frames: int, ref: torch.Tensor):
        """(shift, divisor) for latents (B, C, frames, h, w): z_norm = (z - shift) / divisor."""
        if self._stats is None:
            return self.latent_shift, 1.0 / self.latent_scale
        mean, std = self._stats
        if 1 < mean.shape[2] < frames:
            raise ValueError(f"the VAE's latents_mean/std cover {mean.shape[2]} latent frames, "
                             f"fewer than the clip's {frames}: use shorter clips")
        span = slice(None) if mean.shape[2] == 1 else slice(0, frames)
        return tuple(v[:, :, span].to(ref.device, ref.dtype) for v in (mean, std))

    @torch.no_grad()
    def encode(self, video: torch.Tensor, generator: Optional[torch.Generator] = None
               ) -> torch.Tensor:
        """Maps a clip (B,T,C,H,W) in [0,1] -> tokens (B,1+(T-1)/k,H/s,W/s,D)."""
        self._check_video(video)
        self.latent_frames(video.shape[1])  # a ConfigError naming valid lengths
        vae = self._vae_like(video)
        clips = rearrange(video, "b t c h w -> b c t h w") * 2.0 - 1.0
        z = self._latents(vae, clips, CLIPS_PER_CALL, generator)
        shift, divisor = self._normalisers(z.shape[2], z)
        z = rearrange((z - shift) / divisor, "b c t h w -> b t c h w")
        return _patchify(z, self.patch_size)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Maps tokens (B,T',h,w,D) -> a clip (B,1+k*(T'-1),C,h*s,w*s) clamped to [0,1]."""
        self._check_tokens(tokens)
        vae = self._vae_like(tokens)
        z = _unpatchify(tokens, self.patch_size, self.cfg.vae_latent_channels)
        z = rearrange(z, "b t c h w -> b c t h w")
        shift, divisor = self._normalisers(z.shape[2], z)
        z = z * divisor + shift
        clips = torch.cat([vae.decode(chunk).sample for chunk in z.split(CLIPS_PER_CALL)])
        return ((rearrange(clips, "b c t h w -> b t c h w") + 1.0) * 0.5).clamp(0.0, 1.0)
