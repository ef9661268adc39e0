"""A small trainable text encoder for captions (stand-in for VideoMAR's frozen LLM features).

VideoMAR encodes prompts with a frozen 1536-d LLM into 300 tokens. The harness has no model hub,
so captions are split into lowercase words, each word hashed (CRC32, stable across processes and
machines) into a fixed vocabulary, embedded with learned token and position embeddings, and
normalised. Position 0 always holds a BOS token so that no caption yields an all-padding context.
The model projects these features to its width and supplies a learned null embedding for CFG.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import torch
from torch import nn

PAD_ID = 0
BOS_ID = 1
NUM_SPECIAL = 2
_WORD = re.compile(r"[a-z0-9]+")


def tokenize(captions: Sequence[str], length: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hash words of each caption -> ids (B, length) long and valid mask (B, length) bool."""
    ids = torch.full((len(captions), length), PAD_ID, dtype=torch.long)
    for row, caption in enumerate(captions):
        words = _WORD.findall(caption.lower())[: length - 1]
        hashed = [NUM_SPECIAL + zlib.crc32(w.encode()) % (vocab_size - NUM_SPECIAL) for w in words]
        ids[row, : len(hashed) + 1] = torch.tensor([BOS_ID] + hashed)
    return ids, ids != PAD_ID


class TextEncoder(nn.Module):
    """Captions -> features (B, length, dim) and a padding mask (B, length), True = valid."""

    def __init__(self, vocab_size: int, dim: int, length: int):
        super().__init__()
        self.vocab_size, self.length = vocab_size, length
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, length, dim))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, valid = tokenize(captions, self.length, self.vocab_size)
        ids, valid = ids.to(self.pos_embed.device), valid.to(self.pos_embed.device)
        return self.norm(self.token_embed(ids) + self.pos_embed), valid
