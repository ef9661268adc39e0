"""Which tokenizer a TokenizerConfig names: the one place that maps tokenizer.kind to a class.

Kept apart from core/tokenizers.py (the patch and image-VAE tokenizers) because the video VAE
tokenizer (core/video_tokenizer.py) builds on that module.
"""

from __future__ import annotations

from core.config import TokenizerConfig
from core.tokenizers import PatchTokenizer, Tokenizer, VAETokenizer
from core.video_tokenizer import VideoVAETokenizer


def build_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    """The tokenizer of cfg.kind ("patch", "vae" or "video_vae"); a VAE is only read from disk on
    first use."""
    if cfg.kind == "patch":
        return PatchTokenizer(cfg)
    if cfg.kind == "vae":
        return VAETokenizer(cfg)
    if cfg.kind == "video_vae":
        return VideoVAETokenizer(cfg)
    raise ValueError(f"tokenizer.kind={cfg.kind!r}: choose 'patch', 'vae' or 'video_vae'")
