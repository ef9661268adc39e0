"""Bouncing sprites: a procedural image-to-video dataset with exact per-frame ground truth.

A clip shows `num_sprites` coloured sprites (circle, square, triangle, diamond, cross) moving at
constant velocity and bouncing off the frame edges (the velocity component normal to the wall is
reflected), painted in id order (higher ids on top) over a procedural texture (stripes, checker
or smooth value noise in two tones of one colour). With `camera_pan` the view window slides over
the texture at a slow constant velocity. A clip is a pure function of
(seed, height, width, num_frames, num_sprites, camera_pan); all geometry is drawn as fractions of
the frame size, so one seed gives the same scene at every resolution, the first frames of a long
clip equal a short clip, and toggling `camera_pan` only changes the background motion.

Coordinates: x to the right, y down, in pixels; pixel (row i, column j) covers [j, j+1) x [i, i+1),
so its centre is (j + 0.5, i + 0.5). `positions[t, n]` is the sub-pixel centre of sprite n in frame
t, `sizes[n]` its half-extent r (the sprite fits in the square of side 2r around its centre, which
stays inside the frame). `velocities[t, n]` is the velocity in effect from frame t to t + 1:
positions[t + 1] = positions[t] + velocities[t] unless a wall is hit in between, in which case
that component is reflected at the wall and flips sign in velocities[t + 1].

The background texture is defined on the whole plane (stripes and checker analytically; the noise
lattice wraps with a period of `NOISE_LATTICE` cells, at least 4 frame sizes), so it is always
larger than the frame. `bg_offset[t]` is the texture coordinate of the frame's top-left corner;
"camera panning right" means the offset's x grows, i.e. the texture moves left in the frame.

Splits use disjoint seed ranges of `SPLIT_SEED_RANGE` seeds each: train clip i has seed i,
val clip i has seed 10_000_000 + i, test clip i has seed 20_000_000 + i. The clips do not depend
on the run seed, so runs with different seeds train and evaluate on the same clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from core.config import DataConfig

SPLITS = ("train", "val", "test")
SPLIT_SEED_RANGE = 10_000_000
SPLIT_SEED_START = {"train": 0, "val": SPLIT_SEED_RANGE, "test": 2 * SPLIT_SEED_RANGE}

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS = {  # fully saturated sprite colours (RGB in [0, 1]); the caption uses these names
    "red": (0.90, 0.10, 0.10), "green": (0.10, 0.80, 0.20), "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.10), "cyan": (0.10, 0.85, 0.90), "magenta": (0.90, 0.15, 0.85),
    "orange": (1.00, 0.55, 0.05), "purple": (0.55, 0.20, 0.85), "white": (0.95, 0.95, 0.95),
}
COLOR_NAMES = tuple(COLORS)
TEXTURES = ("striped", "checkered", "cloudy")
PAN_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
PAN_NAMES = tuple(PAN_DIRECTIONS)
# Every word a caption can contain (for fixed-vocabulary text encoders).
VOCABULARY = tuple(sorted(set(
    COLOR_NAMES + SHAPES + TEXTURES + PAN_NAMES
    + ("a", "an", "and", "over", "background", "camera", "panning", "static"))))

# Geometry as fractions of min(height, width) unless noted; all per clip.
SPRITE_RADIUS_FRAC = (0.10, 0.18)
MIN_SPRITE_RADIUS = 3.0  # pixels; small enough frames cap it with MAX_SPRITE_RADIUS_FRAC
MAX_SPRITE_RADIUS_FRAC = 0.45  # keeps a free band of >= 10% of the frame to bounce in
SPRITE_SPEED_FRAC = (0.02, 0.06)  # per frame
CROSS_ARM_FRAC = 0.35  # half-thickness of the cross arms relative to the sprite radius
PAN_SPEED_FRAC = (0.01, 0.03)  # per frame: a slow pan
PAN_START_FRAC = 4.0  # the first offset is uniform in [0, 4 frame sizes) on each axis
STRIPE_PERIOD_FRAC = (0.15, 0.35)
MIN_TEXTURE_PERIOD = 3.0  # pixels
NOISE_CELL_FRAC = (0.12, 0.25)
MIN_NOISE_CELL = 2.0  # pixels
NOISE_LATTICE = 32  # noise cells per wrap-around period (>= 32 * 0.12 ~ 4 frame sizes)
NOISE_CONTRAST = 1.6
BG_TONES = (0.25, 0.55)  # the two texture tones: these fractions of the background colour ...
BG_GRAY = 0.08  # ... plus this grey, so sprites stay brighter than the background


@dataclass
class _Scene:
    """Everything drawn from a seed (resolution-independent except the noise lattice size)."""

    bg_color: int
    texture: int
    angle: float
    period_frac: float
    cell_frac: float
    pan_dir: int
    pan_speed_frac: float
    pan_start_frac: Tuple[float, float]
    shapes: List[int]
    colors: List[int]
    radius_frac: List[float]
    pos_frac: List[Tuple[float, float]]
    speed_frac: List[float]
    heading: List[float]
    lattice: np.ndarray  # (NOISE_LATTICE, NOISE_LATTICE) values in [0, 1]


def _draw_scene(seed: int, num_sprites: int) -> _Scene:
    rng = np.random.default_rng(seed)
    bg_color = int(rng.integers(len(COLOR_NAMES)))
    texture = int(rng.integers(len(TEXTURES)))
    angle = float(rng.uniform(0.0, math.pi))
    period_frac = float(rng.uniform(*STRIPE_PERIOD_FRAC))
    cell_frac = float(rng.uniform(*NOISE_CELL_FRAC))
    pan_dir = int(rng.integers(len(PAN_NAMES)))
    pan_speed_frac = float(rng.uniform(*PAN_SPEED_FRAC))
    pan_start = (float(rng.uniform(0, PAN_START_FRAC)), float(rng.uniform(0, PAN_START_FRAC)))
    palette = [c for c in range(len(COLOR_NAMES)) if c != bg_color]
    order = rng.permutation(len(palette))  # distinct sprite colours while the palette lasts
    shapes, colors, radius, pos, speed, heading = [], [], [], [], [], []
    for n in range(num_sprites):
        shapes.append(int(rng.integers(len(SHAPES))))
        colors.append(palette[int(order[n % len(palette)])])
        radius.append(float(rng.uniform(*SPRITE_RADIUS_FRAC)))
        pos.append((float(rng.uniform()), float(rng.uniform())))
        speed.append(float(rng.uniform(*SPRITE_SPEED_FRAC)))
        heading.append(float(rng.uniform(0.0, 2 * math.pi)))
    lattice = rng.random((NOISE_LATTICE, NOISE_LATTICE))
    return _Scene(bg_color, texture, angle, period_frac, cell_frac, pan_dir, pan_speed_frac,
                  pan_start, shapes, colors, radius, pos, speed, heading, lattice)


def _bounce(start: np.ndarray, vel: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            num_frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """Closed-form motion with reflections at lo/hi: start/vel/lo/hi (N,) -> pos, vel (T, N)."""
    span = hi - lo
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    unfolded = np.mod(start - lo + vel * t, 2 * span)  # position on a circle of length 2*span
    forward = unfolded < span
    pos = lo + np.where(forward, unfolded, 2 * span - unfolded)
    return pos, np.where(forward, vel, -vel)


def _band(u: torch.Tensor, period: float) -> torch.Tensor:
    """Signed distance (pixels) to the nearest edge of a square wave of `period`; > 0 inside."""
    phase = torch.remainder(u / period, 1.0)
    return (0.25 - (phase - 0.5).abs()) * period


def _texture_weight(scene: _Scene, x: torch.Tensor, y: torch.Tensor, unit: float) -> torch.Tensor:
    """Texture tone weight in [0, 1] at texture coordinates x (T,1,W), y (T,H,1) -> (T,H,W)."""
    cos, sin = math.cos(scene.angle), math.sin(scene.angle)
    name = TEXTURES[scene.texture]
    if name in ("striped", "checkered"):
        period = max(MIN_TEXTURE_PERIOD, scene.period_frac * unit)
        a = _band(x * cos + y * sin, period)
        if name == "striped":
            return (0.5 + a).clamp(0.0, 1.0)
        b = _band(y * cos - x * sin, period)
        dist = torch.minimum(a.abs(), b.abs()) * torch.sign(a * b)
        return (0.5 + dist).clamp(0.0, 1.0)
    cell = max(MIN_NOISE_CELL, scene.cell_frac * unit)
    lattice = torch.from_numpy(scene.lattice).float()
    gx, gy = x / cell, y / cell
    ix, iy = torch.floor(gx), torch.floor(gy)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep fade
    ix0, iy0 = ix.long() % NOISE_LATTICE, iy.long() % NOISE_LATTICE
    ix1, iy1 = (ix0 + 1) % NOISE_LATTICE, (iy0 + 1) % NOISE_LATTICE
    top = lattice[iy0, ix0] * (1 - fx) + lattice[iy0, ix1] * fx
    bottom = lattice[iy1, ix0] * (1 - fx) + lattice[iy1, ix1] * fx
    value = top * (1 - fy) + bottom * fy
    return ((value - 0.5) * NOISE_CONTRAST + 0.5).clamp(0.0, 1.0)


def _sprite_sdf(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: float) -> torch.Tensor:
    """Signed distance (pixels, < 0 inside) of a sprite of half-extent r at offsets dx, dy."""
    ax, ay = dx.abs(), dy.abs()
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return torch.maximum(ax, ay) - r
    if shape == "diamond":
        return (ax + ay - r) / math.sqrt(2.0)
    if shape == "triangle":  # apex up at (0, -r), base from (-r, r) to (r, r)
        return torch.maximum((2 * ax - dy - r) / math.sqrt(5.0), dy - r)
    arm = CROSS_ARM_FRAC * r
    return torch.minimum(torch.maximum(ax - r, ay - arm), torch.maximum(ax - arm, ay - r))


def _caption(scene: _Scene, camera_pan: bool) -> str:
    """One sentence from the fixed VOCABULARY describing the sprites, background and camera."""

    def article(word: str) -> str:
        return "an" if word[0] in "aeiou" else "a"

    things = [f"{article(COLOR_NAMES[c])} {COLOR_NAMES[c]} {SHAPES[s]}"
              for c, s in zip(scene.colors, scene.shapes)]
    bg_name = COLOR_NAMES[scene.bg_color]
    background = f"{article(bg_name)} {bg_name} {TEXTURES[scene.texture]} background"
    if len(things) > 1:
        things = [", ".join(things[:-1]) + " and " + things[-1]]
    text = f"{things[0]} over {background}" if things else background
    camera = f"camera panning {PAN_NAMES[scene.pan_dir]}" if camera_pan else "static camera"
    return f"{text}, {camera}"


class SyntheticSprites(Dataset):
    """The bouncing-sprites clips of one split; item i is rendered on the fly from its seed."""

    def __init__(self, cfg: DataConfig, split: str = "train", seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose one of {SPLITS}")
        self.cfg, self.split, self.seed = cfg, split, seed  # seed: kept for the API, see docstring
        self.length = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}[split]
        if not 0 <= self.length <= SPLIT_SEED_RANGE:
            raise ValueError(f"data.num_{split}={self.length} must be in [0, {SPLIT_SEED_RANGE}] "
                             "so that the splits' seed ranges stay disjoint")
        if cfg.num_sprites < 0:
            raise ValueError(f"data.num_sprites={cfg.num_sprites} must be >= 0")

    def __len__(self) -> int:
        return self.length

    def clip_seed(self, index: int) -> int:
        """The render seed of clip `index` of this split."""
        return SPLIT_SEED_START[self.split] + index

    def __getitem__(self, index: int) -> Dict[str, object]:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for the {self.length} {self.split} clips")
        seed = self.clip_seed(index)
        c = self.cfg
        video, caption, gt = render_clip(seed, c.height, c.width, c.num_frames, c.num_sprites,
                                         c.camera_pan)
        return {"video": video, "caption": caption, "index": index, "seed": seed, "gt": gt}


def render_clip(seed: int, height: int, width: int, num_frames: int, num_sprites: int = 2,
                camera_pan: bool = True) -> Tuple[torch.Tensor, str, Dict[str, torch.Tensor]]:
    """Render one clip: video (T,3,H,W) float32 in [0,1], its caption and ground-truth tensors."""
    if height < 1 or width < 1 or num_frames < 1 or num_sprites < 0:
        raise ValueError(f"render_clip needs height, width, num_frames >= 1 and num_sprites >= 0, "
                         f"got {height}x{width}, {num_frames} frames, {num_sprites} sprites")
    scene = _draw_scene(seed, num_sprites)
    unit = float(min(height, width))
    dims = np.array([width, height], dtype=np.float64)
    t = np.arange(num_frames, dtype=np.float64)[:, None]

    pan_vel = np.array(PAN_DIRECTIONS[PAN_NAMES[scene.pan_dir]]) * scene.pan_speed_frac * unit
    pan_vel = pan_vel if camera_pan else np.zeros(2)
    offsets = np.array(scene.pan_start_frac) * dims + pan_vel * t  # (T, 2)

    radii = np.clip(np.array(scene.radius_frac) * unit, MIN_SPRITE_RADIUS,
                    MAX_SPRITE_RADIUS_FRAC * unit)  # (N,)
    positions = np.zeros((num_frames, num_sprites, 2))
    velocities = np.zeros((num_frames, num_sprites, 2))
    for axis in range(2):
        lo, hi = radii, dims[axis] - radii
        start = lo + np.array([p[axis] for p in scene.pos_frac]).reshape(-1) * (hi - lo)
        trig = np.cos if axis == 0 else np.sin
        vel = np.array(scene.speed_frac) * unit * trig(np.array(scene.heading))
        positions[..., axis], velocities[..., axis] = _bounce(start, vel, lo, hi, num_frames)

    xs = torch.arange(width, dtype=torch.float32) + 0.5
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    off = torch.from_numpy(offsets).float()
    weight = _texture_weight(scene, xs[None, None, :] + off[:, 0, None, None],
                             ys[None, :, None] + off[:, 1, None, None], unit)  # (T, H, W)
    base = torch.tensor(COLORS[COLOR_NAMES[scene.bg_color]])
    tone0, tone1 = base * BG_TONES[0] + BG_GRAY, base * BG_TONES[1] + BG_GRAY
    video = tone0[None, :, None, None] + (tone1 - tone0)[None, :, None, None] * weight[:, None]

    pos = torch.from_numpy(positions).float()
    colors = torch.tensor([COLORS[COLOR_NAMES[c]] for c in scene.colors]).reshape(-1, 3)
    for n in range(num_sprites):
        dx = xs[None, None, :] - pos[:, n, 0, None, None]  # (T, 1, W)
        dy = ys[None, :, None] - pos[:, n, 1, None, None]  # (T, H, 1)
        alpha = (0.5 - _sprite_sdf(SHAPES[scene.shapes[n]], dx, dy, float(radii[n]))).clamp(0, 1)
        video = video + (colors[n][None, :, None, None] - video) * alpha[:, None]

    gt = {
        "ids": torch.arange(num_sprites, dtype=torch.long),
        "shapes": torch.tensor(scene.shapes, dtype=torch.long),
        "color_ids": torch.tensor(scene.colors, dtype=torch.long),
        "colors": colors,
        "sizes": torch.from_numpy(radii).float(),
        "positions": pos,
        "velocities": torch.from_numpy(velocities).float(),
        "bg_offset": off,
        "bg_color_id": torch.tensor(scene.bg_color, dtype=torch.long),
        "texture": torch.tensor(scene.texture, dtype=torch.long),
        "pan_velocity": torch.from_numpy(pan_vel).float(),
    }
    return video.clamp(0.0, 1.0).contiguous(), _caption(scene, camera_pan), gt


def shape_name(shape_id: int) -> str:
    """The caption word of a gt `shapes` entry."""
    return SHAPES[int(shape_id)]


def color_name(color_id: int) -> str:
    """The caption word of a gt `color_ids` entry."""
    return COLOR_NAMES[int(color_id)]
