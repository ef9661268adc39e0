"""Tokenizers: videos (B,T,C,H,W) in [0,1] <-> continuous tokens (B,T,h,w,D) behind one interface.

`PatchTokenizer` uses raw pixel patches; `VAETokenizer` a frozen diffusers AutoencoderKL applied
frame by frame (temporal stride 1 for both, unlike VideoMAR's causal Cosmos tokenizer with 8x
temporal compression). Both patchify the same way: a p x p patch of a C-channel map becomes one
token of size p*p*C in einops order "(p1 p2 c)", i.e. token[(row * p + col) * C + channel], rows and
columns within the patch in raster order and the channel fastest.

The VAE is frozen, is not a registered submodule (it never appears in state_dict, parameters() or
checkpoints: it is reloaded from `vae_path`), is shared rather than copied by deepcopy (EMA copies)
and dropped by pickling; it follows the input's device and dtype on use. Building a VAETokenizer
reads nothing from disk; `load()` does, and encode/decode call it lazily.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from einops import rearrange
from torch import nn

from core.config import TokenizerConfig

VAE_CONFIG_FILE = "config.json"
VAE_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                    "diffusion_pytorch_model.safetensors.index.json")
VAE_ENCODE_CHUNK = 16  # frames per AutoencoderKL call (bounds activation memory)
STAGE_HINT = ("stage an AutoencoderKL as <dir>/config.json + "
              "<dir>/diffusion_pytorch_model.safetensors, e.g. AutoencoderKL.from_pretrained("
              "'stabilityai/sd-vae-ft-ema').save_pretrained('<dir>') on a machine with internet, "
              "then set tokenizer.vae_path=<dir>")
VIDEO_STAGE_HINT = ("stage a diffusers video VAE (AutoencoderKLWan, AutoencoderKLCosmos, "
                    "AutoencoderKLCogVideoX or AutoencoderKLHunyuanVideo) as <dir>/config.json + "
                    "<dir>/diffusion_pytorch_model.safetensors, e.g. AutoencoderKLWan."
                    "from_pretrained('Wan-AI/Wan2.1-I2V-14B-480P-Diffusers', subfolder='vae')."
                    "save_pretrained('<dir>') on a machine with internet, then set "
                    "tokenizer.kind=video_vae tokenizer.vae_path=<dir>")


def missing_vae_files(cfg: TokenizerConfig) -> List[str]:
    """Names of the diffusers VAE files absent from cfg.vae_path (any VAE kind; [] when staged)."""
    root = Path(cfg.vae_path or "").expanduser()
    missing = [] if (root / VAE_CONFIG_FILE).is_file() else [VAE_CONFIG_FILE]
    if not any((root / name).is_file() for name in VAE_WEIGHT_FILES):
        missing.append(" or ".join(VAE_WEIGHT_FILES))
    return missing


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Maps (B,T,C,H,W) -> tokens (B,T,H/p,W/p,p*p*C) in "(p1 p2 c)" order."""
    return rearrange(x, "b t c (h p1) (w p2) -> b t h w (p1 p2 c)", p1=p, p2=p)


def _unpatchify(tokens: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """Maps tokens (B,T,h,w,p*p*C) -> (B,T,C,h*p,w*p); the exact inverse of _patchify."""
    return rearrange(tokens, "b t h w (p1 p2 c) -> b t c (h p1) (w p2)", p1=p, p2=p, c=channels)


class _Unregistered:
    """A frozen module kept out of nn.Module registration; deepcopy shares it, pickle drops it."""

    def __init__(self) -> None:
        self.module: Optional[nn.Module] = None

    def __deepcopy__(self, memo: dict) -> "_Unregistered":
        return self

    def __getstate__(self) -> dict:
        return {"module": None}


class Tokenizer(nn.Module):
    """Base class: video (B,T,C,H,W) in [0,1] <-> tokens (B,T,H/s,W/s,D), s = spatial_stride."""

    LATENT_SCALE: float = 1.0

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_size = cfg.patch_size
        self.image_channels = cfg.image_channels
        self.token_dim = cfg.token_dim
        self.spatial_stride = cfg.spatial_stride
        self.temporal_stride = cfg.temporal_stride
        self.clip_range: Optional[Tuple[float, float]] = None

    def token_grid(self, height: int, width: int) -> Tuple[int, int]:
        """Tokens per frame (h, w) for a height x width video."""
        s = self.spatial_stride
        if height % s or width % s:
            raise ValueError(f"video size {height}x{width} is not divisible by the tokenizer's "
                             f"spatial stride {s}: change data.height/width or "
                             "tokenizer.patch_size")
        return height // s, width // s

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a `frames`-frame clip (the same number without temporal compression)."""
        return self.cfg.latent_frames(frames)

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames that encode to `latent_frames` latent frames."""
        return self.cfg.pixel_frames(latent_frames)

    def _check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[2] != self.image_channels:
            raise ValueError(f"encode expects video (B,T,{self.image_channels},H,W), got shape "
                             f"{tuple(video.shape)}")
        self.token_grid(video.shape[-2], video.shape[-1])

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.ndim != 5 or tokens.shape[-1] != self.token_dim:
            raise ValueError(f"decode expects tokens (B,T,h,w,{self.token_dim}), got shape "
                             f"{tuple(tokens.shape)}")

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Maps video (B,T,C,H,W) in [0,1] -> tokens (B,T,h,w,D)."""
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Maps tokens (B,T,h,w,D) -> video (B,T,C,H,W) clamped to [0,1]."""
        raise NotImplementedError

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Same as encode: (B,T,C,H,W) -> (B,T,h,w,D)."""
        return self.encode(video)


class PatchTokenizer(Tokenizer):
    """Pixel patches as tokens: x' = ((2x - 1) - shift) * scale, exactly invertible.

    shift/scale are `tokenizer.patch_shift` / `patch_scale`; (0, 1) keeps pixels in [-1, 1].
    """

    LATENT_SCALE = 1.0

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__(cfg)
        self.shift, self.scale = float(cfg.patch_shift), float(cfg.patch_scale) * self.LATENT_SCALE
        self.clip_range = ((-1.0 - self.shift) * self.scale, (1.0 - self.shift) * self.scale)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Maps video (B,T,C,H,W) in [0,1] -> tokens (B,T,H/p,W/p,p*p*C) in `clip_range`."""
        self._check_video(video)
        return _patchify((2.0 * video - 1.0 - self.shift) * self.scale, self.patch_size)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Maps tokens (B,T,h,w,p*p*C) -> video (B,T,C,h*p,w*p) clamped to [0,1]."""
        self._check_tokens(tokens)
        video = _unpatchify(tokens, self.patch_size, self.image_channels)
        return ((video / self.scale + self.shift + 1.0) * 0.5).clamp(0.0, 1.0)


class VAETokenizer(Tokenizer):
    """A frozen AutoencoderKL from cfg.vae_path, frame by frame, latents scaled then patchified."""

    # Default scale when the VAE's config.json has no scaling_factor: Stable Diffusion 1.x/2.x's
    # 0.18215, which brings their latents to roughly unit variance. Loading replaces
    # `latent_scale` (and `latent_shift`, for VAEs with a shift_factor) by the config's values.
    LATENT_SCALE = 0.18215
    # Sampled latents are clipped to +-CLIP_SIGMAS of unit-variance scaled latents. Real encoded
    # frames rarely exceed it; VideoMAR clips its 0.5-scaled Cosmos latents at +-2 (raw +-4).
    CLIP_SIGMAS = 4.0
    KIND = "vae"  # the tokenizer.kind this class serves
    HINT = STAGE_HINT  # how to stage its files, quoted by every loading error

    def __init__(self, cfg: TokenizerConfig, sample_posterior: bool = False) -> None:
        super().__init__(cfg)
        if cfg.kind != self.KIND:
            raise ValueError(f"{type(self).__name__} needs tokenizer.kind={self.KIND!r}, got "
                             f"{cfg.kind!r}")
        self.sample_posterior = sample_posterior
        self.latent_scale = self.LATENT_SCALE
        self.latent_shift = 0.0
        self.clip_range = (-self.CLIP_SIGMAS, self.CLIP_SIGMAS)
        self._vae = _Unregistered()

    def missing_files(self) -> List[str]:
        """The files `load()` needs that are absent from cfg.vae_path (empty when all are there)."""
        return missing_vae_files(self.cfg)

    def _check_config(self, root: Path) -> str:
        """Check config.json against the tokenizer config; returns the diffusers class name."""
        conf = json.loads((root / VAE_CONFIG_FILE).read_text())
        name = conf.get("_class_name", "AutoencoderKL")
        if name != "AutoencoderKL":
            raise ValueError(f"{root / VAE_CONFIG_FILE} describes a {name}, not an AutoencoderKL: "
                             f"point tokenizer.vae_path at a VAE directory ({STAGE_HINT})")
        if conf.get("in_channels", 3) != self.image_channels:
            raise ValueError(f"the VAE in {root} takes in_channels={conf.get('in_channels')} but "
                             f"tokenizer.image_channels={self.image_channels}: make them equal")
        channels = conf.get("latent_channels", 4)
        downsample = 2 ** (len(conf.get("block_out_channels", [64])) - 1)
        if channels != self.cfg.vae_latent_channels or downsample != self.cfg.vae_downsample:
            raise ValueError(f"the VAE in {root} has latent_channels={channels} and downsample "
                             f"factor {downsample}, but the config says tokenizer."
                             f"vae_latent_channels={self.cfg.vae_latent_channels} and tokenizer."
                             f"vae_downsample={self.cfg.vae_downsample}: set tokenizer."
                             f"vae_latent_channels={channels} "
                             f"tokenizer.vae_downsample={downsample}")
        return name

    def load(self) -> nn.Module:
        """Load (once), check and freeze the VAE; errors name missing files and fixes."""
        if self._vae.module is not None:
            return self._vae.module
        check_pretrained(self.cfg)
        root = Path(self.cfg.vae_path).expanduser()
        name = self._check_config(root)
        import diffusers  # imported lazily: diffusers takes seconds to import

        try:
            vae = getattr(diffusers, name).from_pretrained(str(root), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise RuntimeError(f"could not load an {name} from {str(root)!r} ({err}); "
                               f"re-stage it: {self.HINT}") from err
        vae.eval().requires_grad_(False)
        self._set_normalisation(vae)
        self._vae.module = vae
        return vae

    def _set_normalisation(self, vae: nn.Module) -> None:
        """latent_scale / latent_shift from the VAE's config (defaults when it has none)."""
        scale = getattr(vae.config, "scaling_factor", None)
        shift = getattr(vae.config, "shift_factor", None)
        self.latent_scale = float(scale) if scale else self.LATENT_SCALE
        self.latent_shift = float(shift) if shift else 0.0

    def _vae_like(self, ref: torch.Tensor) -> nn.Module:
        vae = self.load()
        param = next(vae.parameters())
        if param.device != ref.device or param.dtype != ref.dtype:
            vae.to(device=ref.device, dtype=ref.dtype)
        return vae

    def _latents(self, vae: nn.Module, x: torch.Tensor, chunk: int,
                 generator: Optional[torch.Generator]) -> torch.Tensor:
        """vae.encode over `chunk`-sized slices of x: posterior means, or samples (with a
        generator or sample_posterior), concatenated."""
        latents = []
        for part in x.split(chunk):
            dist = vae.encode(part).latent_dist
            sample = self.sample_posterior or generator is not None
            latents.append(dist.sample(generator=generator) if sample else dist.mean)
        return torch.cat(latents)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, generator: Optional[torch.Generator] = None
               ) -> torch.Tensor:
        """Maps video (B,T,C,H,W) in [0,1] -> tokens (B,T,H/s,W/s,D); posterior mean or sample."""
        self._check_video(video)
        vae = self._vae_like(video)
        b = video.shape[0]
        frames = rearrange(video, "b t c h w -> (b t) c h w") * 2.0 - 1.0
        z = (self._latents(vae, frames, VAE_ENCODE_CHUNK, generator) - self.latent_shift
             ) * self.latent_scale
        return _patchify(rearrange(z, "(b t) c h w -> b t c h w", b=b), self.patch_size)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Maps tokens (B,T,h,w,D) -> video (B,T,C,h*s,w*s) clamped to [0,1]."""
        self._check_tokens(tokens)
        vae = self._vae_like(tokens)
        b = tokens.shape[0]
        z = _unpatchify(tokens, self.patch_size, self.cfg.vae_latent_channels)
        z = rearrange(z, "b t c h w -> (b t) c h w") / self.latent_scale + self.latent_shift
        frames = torch.cat([vae.decode(chunk).sample for chunk in z.split(VAE_ENCODE_CHUNK)])
        video = rearrange(frames, "(b t) c h w -> b t c h w", b=b)
        return ((video + 1.0) * 0.5).clamp(0.0, 1.0)


def missing_pretrained_files(cfg: TokenizerConfig) -> List[str]:
    """Files the tokenizer of `cfg` needs from disk that are not there ([] for kind=patch).

    Cheap (a few stat calls) and loads nothing: call it before any work. For kind=vae or video_vae
    without tokenizer.vae_path the entry is "tokenizer.vae_path (not set)".
    """
    if cfg.kind not in ("vae", "video_vae"):
        return []
    if not cfg.vae_path:
        return ["tokenizer.vae_path (not set)"]
    root = Path(cfg.vae_path).expanduser()
    return [str(root / name) for name in missing_vae_files(cfg)]


def check_pretrained(cfg: TokenizerConfig) -> None:
    """Raise FileNotFoundError listing the missing pretrained files and how to stage them."""
    missing = missing_pretrained_files(cfg)
    if not missing:
        return
    hint = VIDEO_STAGE_HINT if cfg.kind == "video_vae" else STAGE_HINT
    if not cfg.vae_path:
        raise FileNotFoundError(f"tokenizer.kind={cfg.kind} needs tokenizer.vae_path: {hint}")
    root = Path(cfg.vae_path).expanduser()
    where = ("does not exist" if not root.is_dir()
             else "lacks " + ", ".join(Path(m).name for m in missing))
    raise FileNotFoundError(f"VAE directory {str(root)!r} {where} (needs {VAE_CONFIG_FILE} and "
                            f"one of {', '.join(VAE_WEIGHT_FILES)}); missing: "
                            f"{', '.join(missing)}. To fix: {hint}")
