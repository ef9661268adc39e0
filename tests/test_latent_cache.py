"""Pre-encoded latent cache (core/latent_cache.py): build once, train from disk.

The tiny video VAE and T5 encoder (tests/tiny_pretrained.py) encode a few synthetic clips into a
sharded cache through the command line; training a few steps from the cache gives the same
losses as training from the raw clips, and the cache refuses a model it was not built for.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.config import DataConfig, TrainConfig
from core.data import build_dataset
from core.latent_cache import LatentCacheDataset, PreEncoded, cached_tokenizer, main
from core.model import VideoMAR
from core.text_encoder import EncodedCaption
from core.train import train
from tests.tiny_pretrained import encoder_model_cfg, save_tiny_t5, save_tiny_wan_vae

DATA = DataConfig(height=16, width=16, num_frames=9, num_train=6, num_val=2, num_test=2)
STEPS = TrainConfig(steps=3, batch_size=2, warmup_steps=1, ckpt_every=0, log_every=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    vae, t5 = save_tiny_wan_vae(root / "vae"), save_tiny_t5(root / "t5")
    cfg = encoder_model_cfg(vae_path=vae, t5_path=t5)
    main(["build", "--out", str(root / "latents"), "--batch-size", "4", "--shard-size", "4",
          "--device", "cpu", "data.height=16", "data.width=16", "data.num_frames=9",
          "data.num_train=6", f"model.tokenizer.vae_path={vae}", "model.tokenizer.kind=video_vae",
          "model.tokenizer.patch_size=1", "model.tokenizer.vae_latent_channels=4",
          "model.tokenizer.vae_downsample=4", "model.text_encoder.kind=t5",
          f"model.text_encoder.path={t5}", "model.text_dim=16", "model.text_len=8"])
    return cfg, root / "latents"


def test_cache_holds_tokens_and_text_features_in_shards(built):
    cfg, root = built
    data = LatentCacheDataset(root, cfg)
    assert len(data) == 6 and [s["count"] for s in data.manifest["shards"]] == [4, 2]
    raw = build_dataset(DATA, "train")
    item = data[5]
    assert item["video"].shape == (3, 4, 4, 4)
    assert isinstance(item["caption"], EncodedCaption) and item["caption"] == raw[5]["caption"]
    assert item["caption"].features.shape == (8, 16)
    tokens = VideoMAR(cfg).tokenizer.encode(raw[5]["video"][None])[0]
    torch.testing.assert_close(item["video"], tokens, rtol=1e-5, atol=1e-5)


def test_training_from_the_cache_matches_training_from_clips(built):
    cfg, root = built
    torch.set_num_threads(1)
    raw = train(VideoMAR(cfg, seed=0), build_dataset(DATA, "train"), STEPS, seed=0,
                out_dir=None, progress=False)
    tok = cached_tokenizer(root, cfg)
    model = VideoMAR(cfg, tokenizer=tok, seed=0)
    cached = train(model, LatentCacheDataset(root, cfg), STEPS, seed=0, out_dir=None,
                   progress=False)
    assert len(cached["losses"]) == 3
    torch.testing.assert_close(torch.tensor(cached["losses"]), torch.tensor(raw["losses"]),
                               rtol=1e-4, atol=1e-6)
    # The same model still encodes pixel clips (held-out loss, sampling) and decodes.
    assert isinstance(model.tokenizer, PreEncoded)
    clip = build_dataset(DATA, "val")[0]["video"][None]
    assert model.tokenizer.encode(clip).shape == (1, 3, 4, 4, 4)
    assert model.tokenizer.decode(model.tokenizer.encode(clip)).shape == clip.shape


def test_missing_or_mismatched_cache_is_a_clear_error(built, tmp_path):
    cfg, root = built
    with pytest.raises(FileNotFoundError, match="manifest.json missing.*core.latent_cache build"):
        LatentCacheDataset(tmp_path)
    other = dataclasses.replace(cfg, text_len=4)
    with pytest.raises(ValueError, match="was built with.*rebuild it"):
        LatentCacheDataset(root, other)
