"""Which text encoder a model uses, and the frozen `transformers` T5 encoder (text_encoder.kind=t5).

VideoMAR conditions on a frozen language model's features. `model.text_encoder.kind="t5"` loads a
T5 / UMT5 / MT5 encoder (`T5EncoderModel`, ...) and its tokenizer from local directories written
by `save_pretrained`; captions are padded or cut to exactly `model.text_len` tokens, features of
padding positions are zeroed and marked invalid (position 0 always valid, so no row is empty).
The encoder is frozen and kept out of the module tree like the VAE (never in state_dict,
parameters or checkpoints; shared by EMA copies); it follows the model's device. Its d_model
must equal `model.text_dim`; `text_proj` maps it to the backbone width as for the hashed encoder.

A caption may arrive pre-encoded as an `EncodedCaption` (a str carrying its features, from the
latent cache, core/latent_cache.py): a batch of those skips the encoder, so training from the
cache never loads it. `transformers` is imported lazily (the `encoders` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import torch
from torch import nn

from core.config import ModelConfig, TextEncoderConfig
from core.tokenizers import _Unregistered

ENCODER_CLASSES = {"t5": "T5EncoderModel", "umt5": "UMT5EncoderModel", "mt5": "MT5EncoderModel"}
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
STAGE_HINT = ("stage the encoder as <dir>/config.json + <dir>/model.safetensors and its tokenizer "
              "as <dir>/tokenizer.json (or spiece.model) + tokenizer_config.json, e.g. on a machine "
              "with internet T5EncoderModel.from_pretrained('google/t5-v1_1-xxl').save_pretrained("
              "'<dir>') and AutoTokenizer.from_pretrained('google/t5-v1_1-xxl').save_pretrained("
              "'<dir>'), then set model.text_encoder.kind=t5 model.text_encoder.path=<dir> "
              "(model.text_encoder.tokenizer_path=<tokdir> if the tokenizer lives elsewhere)")


def build_text_encoder(cfg: ModelConfig) -> nn.Module:
    """The text encoder of cfg.text_encoder.kind: captions -> (features (B, Lt, text_dim), valid)."""
    if cfg.text_encoder.kind == "hashed":
        from core.text import TextEncoder

        return TextEncoder(cfg.text_vocab, cfg.text_dim, cfg.text_len)
    return FrozenT5TextEncoder(cfg.text_encoder, cfg.text_dim, cfg.text_len)


def missing_text_encoder_files(cfg: TextEncoderConfig) -> List[str]:
    """Paths the kind=t5 encoder needs that are absent ([] for kind=hashed or when all are there)."""
    if cfg.kind == "hashed":
        return []
    if not cfg.path:
        return ["model.text_encoder.path (not set)"]
    model_dir = Path(cfg.path).expanduser()
    tok_dir = Path(cfg.tokenizer_path or cfg.path).expanduser()
    needs = [(model_dir, (CONFIG_FILE,)), (model_dir, WEIGHT_FILES), (tok_dir, TOKENIZER_FILES)]
    return [" or ".join(str(root / n) for n in names) for root, names in needs
            if not any((root / n).is_file() for n in names)]


def check_text_encoder(cfg: TextEncoderConfig) -> None:
    """Raise FileNotFoundError naming the missing encoder files, where they go and how to stage."""
    missing = missing_text_encoder_files(cfg)
    if missing:
        where = "" if not cfg.path or Path(cfg.path).expanduser().is_dir() else (
            f"directory {cfg.path!r} does not exist; ")
        raise FileNotFoundError(f"text encoder kind={cfg.kind}: {where}missing "
                                f"{'; '.join(missing)}. To fix: {STAGE_HINT}")


class EncodedCaption(str):
    """A caption with its pre-encoded features (Lt, dim) and valid mask (Lt,); always truthy."""

    def __new__(cls, text: str, features: torch.Tensor, valid: torch.Tensor) -> "EncodedCaption":
        caption = super().__new__(cls, text)
        caption.features, caption.valid = features, valid
        return caption

    def __bool__(self) -> bool:  # an empty caption stays encoded through `c or ""`
        return True

    def __reduce__(self):
        return EncodedCaption, (str(self), self.features, self.valid)


class FrozenT5TextEncoder(nn.Module):
    """Captions -> frozen T5 features (B, length, dim) and valid mask (B, length), True = valid."""

    def __init__(self, cfg: TextEncoderConfig, dim: int, length: int) -> None:
        super().__init__()
        self.cfg, self.dim, self.length = cfg, dim, length
        self._encoder = _Unregistered()  # (model, tokenizer) once loaded
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # follows .to(device)

    def load(self):
        """Load (once), check and freeze the encoder and tokenizer -> (model, tokenizer)."""
        if self._encoder.module is not None:
            return self._encoder.module
        check_text_encoder(self.cfg)
        try:
            import transformers
        except ImportError as err:
            raise ImportError("model.text_encoder.kind=t5 needs transformers: pip install -e "
                              "'.[encoders]'") from err
        path, tok_path = self.cfg.path, self.cfg.tokenizer_path or self.cfg.path
        conf = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        if conf.model_type not in ENCODER_CLASSES:
            raise ValueError(f"{path}/{CONFIG_FILE} is a {conf.model_type!r} model, not one of "
                             f"{sorted(ENCODER_CLASSES)}: {STAGE_HINT}")
        if conf.d_model != self.dim:
            raise ValueError(f"the text encoder in {path} has d_model={conf.d_model} but "
                             f"model.text_dim={self.dim}: set model.text_dim={conf.d_model}")
        cls = getattr(transformers, ENCODER_CLASSES[conf.model_type])
        model = cls.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(tok_path, local_files_only=True)
        self._encoder.module = (model, tokenizer)
        return self._encoder.module

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self._anchor.device
        if captions and all(isinstance(c, EncodedCaption) for c in captions):
            features = torch.stack([c.features for c in captions]).to(device, torch.float32)
            valid = torch.stack([c.valid for c in captions]).to(device)
            if features.shape[1:] != (self.length, self.dim):
                raise ValueError(f"pre-encoded captions have features {tuple(features.shape[1:])}"
                                 f", the model needs ({self.length}, {self.dim}): rebuild the "
                                 f"cache with this model.text_len / text encoder")
            return features, valid
        model, tokenizer = self.load()
        if next(model.parameters()).device != device:
            model.to(device)
        batch = tokenizer([str(c) for c in captions], padding="max_length", truncation=True,
                          max_length=self.length, return_tensors="pt")
        ids, valid = batch["input_ids"].to(device), batch["attention_mask"].to(device).bool()
        valid[:, 0] = True  # never an all-padding row (cross-attention would have no key)
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=valid.long()).last_hidden_state
        return hidden.float() * valid[..., None], valid
