"""Synthetic attribute-captioned images and the small text encoder for the SUN CPU testbed.

Every image shows one shape (4) in one colour (5) at one quadrant (4) on one background (3); a
caption is the 4 attribute values, any of which may be absent. Captions are label tensors
(B, 4) of value indices with `ABSENT` (-1) for a missing attribute; a negative prompt is a
caption too (all absent = the empty negative). The text encoder turns captions into a
(B, 5, dim) context ([BOS] + one token per slot), the stand-in for CLIP's 77 x 768 tokens.
Our design, a CPU-sized stand-in for SUN's SD 1.5 setting (arXiv 2312.08887); the "stripes" style
stands in for the community fine-tunes SUN plugs into (same vocabulary, shifted look).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "magenta")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
BACKGROUNDS = ("dark", "light", "teal")
ATTRIBUTES = (("shape", SHAPES), ("colour", COLOURS), ("position", POSITIONS),
              ("background", BACKGROUNDS))
NUM_VALUES = tuple(len(values) for _, values in ATTRIBUTES)  # (4, 5, 4, 3)
ABSENT = -1
STYLES = ("base", "stripes")
IMAGE_SIZE = 16
COLOUR_RGB = torch.tensor([[0.9, 0.15, 0.1], [0.15, 0.8, 0.2], [0.2, 0.3, 0.95],
                           [0.95, 0.9, 0.15], [0.85, 0.2, 0.85]])
BACKGROUND_RGB = torch.tensor([[0.08, 0.08, 0.1], [0.75, 0.75, 0.72], [0.1, 0.4, 0.42]])
COLOUR_JITTER = 0.06
PIXEL_NOISE = 0.03
NUM_HELD_OUT = 48  # of the 240 full combinations, never seen by the adapter
SPLIT_SEED = 1234
# Token ids: 0 = BOS, 1 + offset[slot] + value; ABSENT maps to the slot's own null token.
_OFFSETS = tuple(itertools.accumulate((0,) + tuple(n + 1 for n in NUM_VALUES[:-1])))
NUM_TOKENS = 1 + sum(n + 1 for n in NUM_VALUES)
CONTEXT_LEN = 1 + len(ATTRIBUTES)


# ----------------------------------------------------------------------------- captions


def all_combinations() -> torch.Tensor:
    """Every full caption, (240, 4) long, in lexicographic order."""
    return torch.tensor(list(itertools.product(*(range(n) for n in NUM_VALUES))))


def split_combinations() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held_out) full captions; fixed split so every run holds out the same 48."""
    combos = all_combinations()
    order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return combos[order[NUM_HELD_OUT:]], combos[order[:NUM_HELD_OUT]]


def sample_captions(combos: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n full captions drawn uniformly from `combos` (C, 4) -> (n, 4)."""
    return combos[torch.randint(len(combos), (n,), generator=generator)]


def drop_attributes(labels: torch.Tensor, p_attr: float, p_all: float,
                    generator: torch.Generator) -> torch.Tensor:
    """Attribute dropout: each value -> ABSENT with p_attr, the whole caption with p_all."""
    drop = torch.rand(labels.shape, generator=generator) < p_attr
    drop |= (torch.rand(labels.shape[0], 1, generator=generator) < p_all)
    return labels.masked_fill(drop, ABSENT)


def empty_captions(n: int) -> torch.Tensor:
    """n empty captions (the empty negative prompt), (n, 4)."""
    return torch.full((n, len(ATTRIBUTES)), ABSENT, dtype=torch.long)


def caption_text(labels: torch.Tensor) -> str:
    """Readable caption of one (4,) label row, e.g. 'red circle, top-left, on dark'."""
    words = [values[int(v)] for (_, values), v in zip(ATTRIBUTES, labels) if int(v) != ABSENT]
    return ", ".join(words) if words else "<empty>"


def tokens(labels: torch.Tensor) -> torch.Tensor:
    """Captions (B, 4) -> token ids (B, 5): [BOS, shape, colour, position, background]."""
    if labels.ndim != 2 or labels.shape[1] != len(ATTRIBUTES):
        raise ValueError(f"captions must be (B, {len(ATTRIBUTES)}) label tensors, got "
                         f"{tuple(labels.shape)}")
    offsets = torch.tensor(_OFFSETS, device=labels.device)
    ids = 1 + offsets + (labels + 1)  # ABSENT (-1) -> the slot's null token
    bos = torch.zeros(labels.shape[0], 1, dtype=torch.long, device=labels.device)
    return torch.cat([bos, ids], dim=1)


# ----------------------------------------------------------------------------- images


def _shape_masks(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """(B, 4) full captions -> (B, size, size) float masks of the jittered shapes."""
    b = labels.shape[0]
    quadrant = size / 4
    cx = quadrant * (1 + 2 * (labels[:, 2] % 2)).float()  # right quadrants: %2 == 1
    cy = quadrant * (1 + 2 * (labels[:, 2] // 2)).float()  # bottom quadrants: //2 == 1
    cx = cx - 0.5 + torch.empty(b).uniform_(-1, 1, generator=generator)
    cy = cy - 0.5 + torch.empty(b).uniform_(-1, 1, generator=generator)
    r = torch.empty(b).uniform_(0.7, 0.95, generator=generator) * quadrant
    grid = torch.arange(size, dtype=torch.float32)
    dx = grid[None, None, :] - cx[:, None, None]  # (B, 1, W)
    dy = grid[None, :, None] - cy[:, None, None]  # (B, H, 1)
    r = r[:, None, None]
    adx, ady = dx.abs().expand(b, size, size), dy.abs().expand(b, size, size)
    circle = dx ** 2 + dy ** 2 <= r ** 2
    square = torch.maximum(adx, ady) <= 0.8 * r
    triangle = (dy <= 0.8 * r) & (adx <= (dy + r) * 0.55)
    arm = 0.3 * r
    cross = ((adx <= arm) | (ady <= arm)) & (torch.maximum(adx, ady) <= r)
    masks = torch.stack([circle, square, triangle, cross], dim=1)  # (B, 4, H, W)
    return masks[torch.arange(b), labels[:, 0]].float()


def render(labels: torch.Tensor, generator: torch.Generator, style: str = "base",
           size: int = IMAGE_SIZE) -> torch.Tensor:
    """Full captions (B, 4) -> images (B, 3, size, size) in [-1, 1].

    style "stripes" is the fine-tuned-model stand-in: diagonal stripes on the background and a
    brighter, desaturated shape; shape, hue, position and background identity are unchanged.
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r}: choose one of {STYLES}")
    if (labels < 0).any():
        raise ValueError("render needs full captions (no ABSENT values); sample them from "
                         "all_combinations()/split_combinations()")
    b = labels.shape[0]
    mask = _shape_masks(labels, generator, size)[:, None]  # (B, 1, H, W)
    jitter = lambda n: torch.empty(n, 3).uniform_(-COLOUR_JITTER, COLOUR_JITTER,  # noqa: E731
                                                  generator=generator)
    fg = (COLOUR_RGB[labels[:, 1]] + jitter(b))[:, :, None, None]
    bg = (BACKGROUND_RGB[labels[:, 3]] + jitter(b))[:, :, None, None].expand(b, 3, size, size)
    if style == "stripes":
        grid = torch.arange(size)
        stripes = ((grid[:, None] + grid[None, :]) // 2 % 2).float()  # (H, W) diagonal bands
        bg = bg * (0.55 + 0.45 * stripes) + 0.12 * (1 - stripes)
        fg = 0.65 * fg + 0.35 * fg.mean(dim=1, keepdim=True) + 0.12
    image = mask * fg + (1 - mask) * bg
    image = image + PIXEL_NOISE * torch.randn(image.shape, generator=generator)
    return (image.clamp(0, 1) * 2 - 1).contiguous()


# ----------------------------------------------------------------------------- text encoder


class TextEncoder(nn.Module):
    """Token embeddings + learned positions + one pre-LN transformer layer -> (B, 5, dim).

    Trained together with the teacher, then frozen (the CLIP stand-in).
    """

    def __init__(self, dim: int = 64, num_heads: int = 4):
        super().__init__()
        self.dim = dim
        self.token_embedding = nn.Embedding(NUM_TOKENS, dim)
        self.position_embedding = nn.Parameter(torch.zeros(CONTEXT_LEN, dim))
        self.layer = nn.TransformerEncoderLayer(dim, num_heads, 2 * dim, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_embedding.weight, std=0.5)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Captions (B, 4) -> context (B, 5, dim)."""
        ids = tokens(labels.to(self.token_embedding.weight.device))
        h = self.token_embedding(ids) + self.position_embedding
        return self.norm(self.layer(h))
