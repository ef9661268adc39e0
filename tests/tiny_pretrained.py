"""Tiny randomly initialised pretrained-model directories (save_pretrained; no downloads).

`save_tiny_wan_vae`: an AutoencoderKLWan with 4x spatial and 4x temporal compression and 4 latent
channels (frame 0 alone, then groups of 4). `save_tiny_t5`: a 1-layer T5EncoderModel (d_model 16)
plus a word-level tokenizer built with the `tokenizers` library, wrapped in
PreTrainedTokenizerFast, appending </s> like T5's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.config import ModelConfig, TextEncoderConfig, TokenizerConfig

WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "green", "ball", "square", "bounces",
         "moves", "left", "right", "up", "down", "and"]
T5_DIM = 16


def save_tiny_wan_vae(path: Path, seed: int = 0, **overrides) -> Path:
    from diffusers import AutoencoderKLWan

    conf = dict(base_dim=8, z_dim=4, dim_mult=[1, 1, 1], num_res_blocks=1,
                temperal_downsample=[True, True], latents_mean=[0.1, -0.2, 0.3, 0.0],
                latents_std=[0.5, 2.0, 1.0, 1.5], scale_factor_spatial=4, scale_factor_temporal=4)
    conf.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        AutoencoderKLWan(**conf).save_pretrained(str(path))
    return path


def save_tiny_t5(path: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(path))
    conf = T5Config(vocab_size=len(WORDS), d_model=T5_DIM, d_ff=32, d_kv=8, num_layers=1,
                    num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        T5EncoderModel(conf).save_pretrained(str(path))
    return path


def video_vae_cfg(path, **kw) -> TokenizerConfig:
    return TokenizerConfig(kind="video_vae", vae_path=str(path), patch_size=1,
                           vae_latent_channels=4, vae_downsample=4, vae_temporal=4, **kw)


def encoder_model_cfg(vae_path=None, t5_path=None, **kw) -> ModelConfig:
    """A tiny ModelConfig on the tiny video VAE and/or T5 (None: patch tokens / hashed text)."""
    tok = video_vae_cfg(vae_path) if vae_path else TokenizerConfig()
    text = TextEncoderConfig(kind="t5", path=str(t5_path)) if t5_path else TextEncoderConfig()
    return ModelConfig(tokenizer=tok, text_encoder=text, text_dim=T5_DIM if t5_path else 64,
                       text_len=8, width=32, depth=1, num_heads=2, head_width=32, head_depth=1,
                       num_sampling_steps=5, **kw)
