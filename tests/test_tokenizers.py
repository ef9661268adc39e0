"""Tokenizers: the exact pixel-patch round trip, the token layout and the frozen local VAE."""

import copy
import json
import pickle

import pytest
import torch
from torch import nn

from core.config import TokenizerConfig
from core.tokenizer_factory import build_tokenizer
from core.tokenizers import PatchTokenizer, Tokenizer, VAETokenizer

VAE_CHANNELS = 4
VAE_DOWNSAMPLE = 2
VAE_INIT_SEED = 0


def _video(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("vae")
    with torch.random.fork_rng(devices=[]):  # diffusers' init draws from the global RNG ...
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=VAE_CHANNELS,
                            block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
                            down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
                            scaling_factor=0.5)
    g = torch.Generator().manual_seed(VAE_INIT_SEED)  # ... so re-draw it from an explicit one
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if p.ndim > 1:  # conv/linear weights: N(0, 1/fan_in)
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.zero_()  # norm weights stay ones
    vae.save_pretrained(root)
    return root


def _vae_cfg(path, **kw):
    base = dict(kind="vae", vae_path=str(path), vae_latent_channels=VAE_CHANNELS,
                vae_downsample=VAE_DOWNSAMPLE, patch_size=1)
    return TokenizerConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- patch tokenizer


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_patch_round_trip_is_exact_and_shapes_match_config(patch):
    cfg = TokenizerConfig(kind="patch", patch_size=patch)
    tok = build_tokenizer(cfg)
    assert isinstance(tok, PatchTokenizer) and isinstance(tok, Tokenizer)
    video = _video((2, 3, 3, 8, 12))
    tokens = tok.encode(video)
    assert tokens.shape == (2, 3, 8 // patch, 12 // patch, cfg.token_dim)
    assert tok.token_dim == cfg.token_dim == 3 * patch * patch
    assert tok.spatial_stride == patch and tok.temporal_stride == 1
    assert torch.allclose(tok.decode(tokens), video, atol=1e-6, rtol=0)
    lo, hi = tok.clip_range
    assert tokens.min() >= lo and tokens.max() <= hi and tok.LATENT_SCALE == 1.0


def test_patch_token_layout_is_row_col_channel():
    p, c = 2, 3
    tok = PatchTokenizer(TokenizerConfig(kind="patch", patch_size=p))
    video = _video((1, 1, c, 4, 6), seed=1)
    tokens = tok.encode(video)
    for row in range(p):
        for col in range(p):
            for ch in range(c):
                pixel = video[0, 0, ch, 2 + row, 4 + col] * 2 - 1  # token (1, 2)
                expected = (pixel - tok.shift) * tok.scale
                assert torch.isclose(tokens[0, 0, 1, 2, (row * p + col) * c + ch], expected)


def test_patch_normalisation_fits_the_built_in_data():
    """The default patch_shift/patch_scale give the sprites data zero-mean, unit-variance tokens."""
    from core.config import DataConfig
    from core.data import build_dataset

    clips = build_dataset(DataConfig(), "train")
    video = torch.stack([clips[i]["video"] for i in range(32)])
    tokens = PatchTokenizer(TokenizerConfig(kind="patch")).encode(video)
    assert abs(float(tokens.mean())) < 0.1 and abs(float(tokens.std()) - 1.0) < 0.1
    plain = PatchTokenizer(TokenizerConfig(kind="patch", patch_shift=0.0, patch_scale=1.0))
    assert plain.clip_range == (-1.0, 1.0)
    assert torch.equal(plain.encode(video), video.mul(2).sub(1).unflatten(-1, (8, 4))
                       .unflatten(-3, (8, 4)).permute(0, 1, 3, 5, 4, 6, 2).flatten(-3))


def test_patch_decode_clamps_and_bad_shapes_raise():
    tok = PatchTokenizer(TokenizerConfig(kind="patch", patch_size=4))
    out = tok.decode(torch.full((1, 2, 2, 2, 48), tok.clip_range[1] + 1.0))
    assert out.shape == (1, 2, 3, 8, 8) and out.max() == 1.0
    with pytest.raises(ValueError, match="not divisible"):
        tok.encode(_video((1, 2, 3, 10, 8)))
    with pytest.raises(ValueError, match="expects video"):
        tok.encode(_video((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="expects tokens"):
        tok.decode(torch.zeros(1, 2, 2, 2, 47))
    assert tok.token_grid(32, 16) == (8, 4)
    assert len(tok.state_dict()) == 0


# ----------------------------------------------------------------------------- VAE tokenizer


def test_vae_construction_touches_no_disk():
    cfg = _vae_cfg("/definitely/not/here")
    tok = build_tokenizer(cfg)
    assert isinstance(tok, VAETokenizer)
    with torch.device("meta"):
        VAETokenizer(cfg)
    assert tok.token_dim == cfg.token_dim == VAE_CHANNELS and tok.spatial_stride == VAE_DOWNSAMPLE


def test_vae_encode_decode_shapes_range_and_determinism(vae_dir):
    cfg = _vae_cfg(vae_dir)
    tok = VAETokenizer(cfg)
    video = _video((2, 3, 3, 16, 24))
    tokens = tok.encode(video)
    assert tokens.shape == (2, 3, 8, 12, cfg.token_dim)
    assert tok.latent_scale == 0.5  # read from the VAE's config.json on load
    assert torch.equal(tokens, tok.encode(video))
    out = tok.decode(tokens)
    assert out.shape == video.shape and 0.0 <= out.min() and out.max() <= 1.0
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1, s2 = tok.encode(video, generator=g1), tok.encode(video, generator=g2)
    assert torch.equal(s1, s2) and not torch.equal(s1, tokens)
    assert tok.clip_range[0] < 0 < tok.clip_range[1]


def test_vae_patch_size_two_packs_latent_patches(vae_dir):
    cfg = _vae_cfg(vae_dir, patch_size=2)
    tok = VAETokenizer(cfg)
    video = _video((1, 2, 3, 16, 16), seed=2)
    tokens = tok.encode(video)
    assert tokens.shape == (1, 2, 4, 4, 4 * VAE_CHANNELS) == (1, 2, 4, 4, cfg.token_dim)
    assert tok.spatial_stride == 4 and tok.decode(tokens).shape == video.shape


def test_vae_stays_out_of_state_dict_parameters_and_copies(vae_dir):
    class Holder(nn.Module):
        def __init__(self, tok):
            super().__init__()
            self.tokenizer = tok
            self.proj = nn.Linear(4, 4)

    tok = VAETokenizer(_vae_cfg(vae_dir))
    tok.encode(_video((1, 1, 3, 8, 8)))
    model = Holder(tok)
    assert set(model.state_dict()) == {"proj.weight", "proj.bias"}
    assert len(list(tok.parameters())) == 0
    assert all(not p.requires_grad for p in tok.load().parameters())
    assert copy.deepcopy(model).tokenizer.load() is tok.load()  # shared, not duplicated
    restored = pickle.loads(pickle.dumps(tok))
    assert restored._vae.module is None  # dropped; reloaded lazily from vae_path
    frame = _video((1, 1, 3, 8, 8))
    assert torch.equal(restored.encode(frame), tok.encode(frame))


def test_vae_missing_directory_and_files_list_what_to_stage(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        VAETokenizer(_vae_cfg(tmp_path / "absent")).load()
    message = str(err.value)
    assert "config.json" in message and "diffusion_pytorch_model.safetensors" in message
    assert "does not exist" in message and "save_pretrained" in message
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks diffusion_pytorch_model.safetensors"):
        VAETokenizer(_vae_cfg(tmp_path)).encode(_video((1, 1, 3, 8, 8)))
    with pytest.raises(FileNotFoundError, match="vae_path"):
        VAETokenizer(TokenizerConfig(kind="vae")).load()


def test_vae_config_mismatch_is_a_clear_error(vae_dir, tmp_path):
    with pytest.raises(ValueError, match="latent_channels=4.*vae_latent_channels=16"):
        VAETokenizer(_vae_cfg(vae_dir, vae_latent_channels=16)).load()
    with pytest.raises(ValueError, match="downsample factor 2.*vae_downsample=8"):
        VAETokenizer(_vae_cfg(vae_dir, vae_downsample=8)).load()
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not an AutoencoderKL"):
        VAETokenizer(_vae_cfg(tmp_path)).load()
