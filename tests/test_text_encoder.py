"""model.text_encoder.kind=t5: a frozen transformers T5 encoder from a local directory.

Runs on a 1-layer T5EncoderModel (d_model 16) and a word-level tokenizer saved with
save_pretrained: a fixed token length (padding and truncation to model.text_len), frozen weights
kept out of the model's parameters and state, pre-encoded captions, and clear errors for missing
files and a d_model that does not match model.text_dim.
"""

from __future__ import annotations

import pickle

import pytest
import torch

from core.config import TextEncoderConfig
from core.model import VideoMAR
from core.text import TextEncoder
from core.text_encoder import (EncodedCaption, FrozenT5TextEncoder, build_text_encoder,
                               check_text_encoder)
from tests.tiny_pretrained import T5_DIM, encoder_model_cfg, save_tiny_t5

CAPTIONS = ["a red ball bounces left", "a blue square and a green ball moves up and down right"]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("t5"))


def test_fixed_token_length_padding_and_truncation(t5_dir):
    enc = FrozenT5TextEncoder(TextEncoderConfig(kind="t5", path=str(t5_dir)), T5_DIM, 8)
    features, valid = enc(CAPTIONS + [""])
    assert features.shape == (3, 8, T5_DIM) and valid.shape == (3, 8)
    assert valid.sum(1).tolist() == [6, 8, 1]  # 5 words + </s>; cut to 8; "" -> </s>
    assert torch.all(features[~valid] == 0) and features[valid].abs().sum() > 0
    # Padding to a fixed length does not change the valid positions' features.
    longer = FrozenT5TextEncoder(TextEncoderConfig(kind="t5", path=str(t5_dir)), T5_DIM, 12)
    wide, _ = longer(CAPTIONS[:1])
    torch.testing.assert_close(wide[0, :6], features[0, :6], rtol=1e-5, atol=1e-6)


def test_frozen_and_out_of_the_models_parameters_and_state(t5_dir):
    model = VideoMAR(encoder_model_cfg(t5_path=t5_dir))
    assert isinstance(model.text_encoder, FrozenT5TextEncoder)
    assert not any(n.startswith("text_encoder") for n, _ in model.named_parameters())
    assert not any(k.startswith("text_encoder") for k in model.state_dict())
    context, _ = model.encode_context(CAPTIONS, 2)
    assert context.shape == (2, 8, model.cfg.width)
    t5, _ = model.text_encoder.load()
    assert not any(p.requires_grad for p in t5.parameters())
    context.sum().backward()
    assert all(p.grad is None for p in t5.parameters()) and model.text_proj.weight.grad is not None
    copy = pickle.loads(pickle.dumps(model.text_encoder))  # the encoder is dropped, reloaded later
    torch.testing.assert_close(copy(CAPTIONS)[0], model.text_encoder(CAPTIONS)[0])


def test_pre_encoded_captions_skip_the_encoder(t5_dir, tmp_path):
    enc = FrozenT5TextEncoder(TextEncoderConfig(kind="t5", path=str(t5_dir)), T5_DIM, 8)
    features, valid = enc(CAPTIONS)
    encoded = [EncodedCaption(c, f, v) for c, f, v in zip(CAPTIONS, features, valid)]
    encoded = pickle.loads(pickle.dumps(encoded))  # DataLoader workers pickle items
    assert encoded[0] == CAPTIONS[0] and bool(EncodedCaption("", features[0], valid[0]))
    unloaded = FrozenT5TextEncoder(TextEncoderConfig(kind="t5", path=str(tmp_path / "gone")),
                                   T5_DIM, 8)  # never loads: nothing staged there
    got, got_valid = unloaded(encoded)
    assert torch.equal(got, features) and torch.equal(got_valid, valid)


def test_hashed_stays_the_default():
    assert isinstance(build_text_encoder(encoder_model_cfg()), TextEncoder)


def test_missing_files_and_dim_mismatch_are_clear_errors(t5_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*config\.json.*model\.safetensors"
                       r".*tokenizer\.json.*text_encoder\.path"):
        check_text_encoder(TextEncoderConfig(kind="t5", path=str(tmp_path / "nowhere")))
    half = tmp_path / "no_tokenizer"
    half.mkdir()
    for name in ("config.json", "model.safetensors"):
        (half / name).write_bytes((t5_dir / name).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"missing .*no_tokenizer/tokenizer\.json or "
                       r".*spiece\.model"):
        FrozenT5TextEncoder(TextEncoderConfig(kind="t5", path=str(half)), T5_DIM, 8)(CAPTIONS)
    with pytest.raises(FileNotFoundError, match=r"model.text_encoder.path \(not set\)"):
        check_text_encoder(TextEncoderConfig(kind="t5"))
    wrong = FrozenT5TextEncoder(TextEncoderConfig(kind="t5", path=str(t5_dir)), 32, 8)
    with pytest.raises(ValueError, match="d_model=16 but model.text_dim=32: set model.text_dim=16"):
        wrong(CAPTIONS)
