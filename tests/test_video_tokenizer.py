"""tokenizer.kind=video_vae: a diffusers video VAE with temporal compression (core/video_tokenizer.py).

Runs on a tiny randomly initialised AutoencoderKLWan saved with save_pretrained (4x in space and
time): clip-level round trip shapes, latent frames following pixel frames (frame 0 alone, then
groups of 4), the latent normalisation, clear errors for bad clip lengths, missing files and
mismatched configs, and sampling that returns pixel frames.
"""

from __future__ import annotations

import json

import pytest
import torch

from core.config import ConfigError, DataConfig, RunConfig, TokenizerConfig
from core.model import VideoMAR
from core.sampler import sample_video
from core.tokenizer_factory import build_tokenizer
from core.tokenizers import check_pretrained
from core.video_tokenizer import VideoVAETokenizer
from tests.tiny_pretrained import encoder_model_cfg, save_tiny_wan_vae, video_vae_cfg


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return save_tiny_wan_vae(tmp_path_factory.mktemp("wan_vae"))


def _clip(frames, batch=2, seed=0):
    return torch.rand(batch, frames, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_round_trip_shapes_range_and_determinism(wan_dir):
    tok = build_tokenizer(video_vae_cfg(wan_dir))
    assert isinstance(tok, VideoVAETokenizer) and tok.temporal_stride == 4
    clip = _clip(9)
    tokens = tok.encode(clip)
    assert tokens.shape == (2, 3, 4, 4, 4)  # 1 + 8/4 latent frames, 16/4 tokens per side
    assert torch.equal(tokens, tok.encode(clip))
    video = tok.decode(tokens)
    assert video.shape == clip.shape and video.min() >= 0 and video.max() <= 1
    assert tok.latent_frames(9) == 3 and tok.pixel_frames(3) == 9


def test_latent_frames_follow_the_first_frame_then_groups(wan_dir):
    tok = build_tokenizer(video_vae_cfg(wan_dir))
    clip = _clip(9)
    full = tok.encode(clip)
    # The conditioning latent frame is pixel frame 0 alone; latent 1 is frames 1..4.
    torch.testing.assert_close(tok.encode(clip[:, :1]), full[:, :1], rtol=0, atol=1e-6)
    torch.testing.assert_close(tok.encode(clip[:, :5]), full[:, :2], rtol=0, atol=1e-6)
    changed = clip.clone()
    changed[:, 5:] = torch.rand_like(changed[:, 5:])  # the last group only
    moved = tok.encode(changed)
    torch.testing.assert_close(moved[:, :2], full[:, :2], rtol=0, atol=1e-6)
    assert not torch.allclose(moved[:, 2], full[:, 2])


def test_latents_are_normalised_by_the_configs_mean_and_std(wan_dir):
    tok = build_tokenizer(video_vae_cfg(wan_dir))
    clip = _clip(5, batch=1)
    vae = tok.load()
    raw = vae.encode(clip.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mean  # (1, C, 2, 4, 4)
    conf = json.loads((wan_dir / "config.json").read_text())
    mean = torch.tensor(conf["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(conf["latents_std"]).view(1, -1, 1, 1, 1)
    want = ((raw - mean) / std).permute(0, 2, 3, 4, 1)  # patch_size 1: token = latent channels
    torch.testing.assert_close(tok.encode(clip), want, rtol=1e-5, atol=1e-6)


def test_clip_lengths_that_do_not_fit_name_the_valid_ones(wan_dir):
    tok = build_tokenizer(video_vae_cfg(wan_dir))
    with pytest.raises(ConfigError, match=r"8 frames.*1 \+ 4\*n.*5, 9, 13"):
        tok.encode(_clip(8))
    model = encoder_model_cfg(vae_path=wan_dir)
    with pytest.raises(ConfigError, match=r"data.num_frames has 8 frames.*5, 9, 13"):
        RunConfig(model=model, data=DataConfig(height=16, width=16, num_frames=8))
    RunConfig(model=model, data=DataConfig(height=16, width=16, num_frames=9))


def test_missing_directory_and_files_name_what_to_stage(tmp_path, wan_dir):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*config\.json.*"
                       r"diffusion_pytorch_model\.safetensors.*AutoencoderKLWan"):
        build_tokenizer(video_vae_cfg(tmp_path / "nowhere")).encode(_clip(5))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((wan_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="lacks diffusion_pytorch_model.safetensors"):
        check_pretrained(video_vae_cfg(partial))
    with pytest.raises(FileNotFoundError, match="tokenizer.kind=video_vae needs tokenizer.vae_path"):
        check_pretrained(TokenizerConfig(kind="video_vae"))


def test_config_mismatch_and_wrong_class_are_clear_errors(wan_dir, tmp_path):
    with pytest.raises(ValueError, match=r"tokenizer.vae_temporal=8\): set tokenizer.vae_temporal=4"):
        build_tokenizer(TokenizerConfig(
            kind="video_vae", vae_path=str(wan_dir), patch_size=1, vae_latent_channels=4,
            vae_downsample=4, vae_temporal=8)).load()
    other = tmp_path / "image_vae"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (other / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not one of.*AutoencoderKLWan"):
        build_tokenizer(video_vae_cfg(other)).load()


def test_model_samples_pixel_frames_and_keeps_the_vae_out_of_its_state(wan_dir):
    model = VideoMAR(encoder_model_cfg(vae_path=wan_dir)).eval()
    first = _clip(1, batch=1)[:, 0]
    video = sample_video(model, first, 5, num_iter=2, generator=torch.Generator().manual_seed(0))
    assert video.shape == (1, 5, 3, 16, 16)
    assert not any("vae" in k or k.startswith("tokenizer") for k in model.state_dict())
    assert all(not n.startswith("tokenizer") for n, _ in model.named_parameters())
    with pytest.raises(ConfigError, match="needs 1 \\+ 4\\*n frames"):
        sample_video(model, first, 6, num_iter=2)
