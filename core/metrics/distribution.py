"""Distribution-level distance between generated and true clips on the built-in sprites data.

Per-frame MSE against the one true continuation rewards low-variance samples: a blurry average
or a frozen frame is closer in pixels to the truth than any sharp sample that moves differently.
`dist_energy` instead asks whether the generated clips, as a set, behave like true clips:

1. `clip_statistics` turns a clip into a vector of ground-truth-defined quantities, for every
   generated frame t (t >= num_cond):
   - mean sprite displacement from frame t-1 to t (centroid of each sprite's colour evidence,
     core/metrics/synthetic.py; averaged over the sprites present in both frames, 0 if none);
   - background shift (dx, dy) from frame t-1 to t: a global translation fitted by Lucas-Kanade
     (a few warped Gauss-Newton steps) on the pixels that show no sprite colour in either frame;
   - colour mass of each sprite (its summed colour evidence) in frame t.
   Lengths are in % of min(H, W), masses in % of the frame area, so every entry is O(1) for a
   true clip (sprites move 2-6 %, the camera 1-3 % per frame; a sprite covers 3-13 %). Only the
   sprite colours of the clip's ground truth are used, so the statistics of a video depend on the
   video and its clip's palette alone.
2. `energy_distance` between the set of generated-clip vectors X and the set of true-clip
   vectors Y (Szekely's energy distance of the two empirical distributions):
       2 E|X - Y| - E|X - X'| - E|Y - Y'|   (Euclidean norms, all pairs, V-statistics)
   It is >= 0, symmetric, and 0 exactly when both sets are the same multiset of vectors. The
   E|X - X'| term credits spread: a set collapsed to one point (every clip static, or every clip
   blurred to the same washed-out frames) pays the full distance to the true spread, whereas a
   set of true clips of *other* seeds only pays for finite-sample noise.

`dist_energy` (lower is better, 0 when generated == truth) is that distance between the
generated clips and their true continuations over the evaluated clips. numpy only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from core.metrics.synthetic import (BG_MARGIN_PX, MIN_MASS, SPRITE_EVIDENCE, _centroids, _dilate,
                                    colour_evidence, to_frames)

KEY = "dist_energy"
LK_STEPS = 3  # warped Lucas-Kanade iterations per frame pair
LK_RIDGE = 1e-3  # ridge on the normal equations, relative to their trace (aperture: stripes)
MAX_SHIFT_FRAC = 0.1  # background shifts are clipped to +-10 % of min(H, W) per frame
MIN_BACKGROUND_FRAC = 0.05  # fewer usable background pixels than this: shift reported as 0


def _warp(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """image (H, W, C) moved by (dx, dy) pixels, bilinear; edge values enter (cf. _shift)."""
    h, w, _ = image.shape
    src_x, src_y = np.clip(np.arange(w) - dx, 0, w - 1), np.clip(np.arange(h) - dy, 0, h - 1)
    x0, y0 = np.floor(src_x).astype(int), np.floor(src_y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (src_x - x0)[None, :, None], (src_y - y0)[:, None, None]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _frame_shift(prev: np.ndarray, cur: np.ndarray, usable: np.ndarray, limit: float) -> np.ndarray:
    """Translation (dx, dy) in pixels with cur(p) ~ prev(p - d), fitted on `usable` (H, W)."""
    h, w, _ = prev.shape
    d = np.zeros(2)
    for step in range(LK_STEPS):
        warped = _warp(prev, d[0], d[1]) if step else prev
        pad = 1 + int(np.ceil(np.abs(d).max()))  # central differences, pixels the warp invented
        m = usable[pad:h - pad, pad:w - pad]
        if m.sum() < MIN_BACKGROUND_FRAC * h * w:
            break
        base = 0.5 * (warped + cur)
        gx = 0.5 * (base[pad:h - pad, pad + 1:w - pad + 1] - base[pad:h - pad, pad - 1:w - pad - 1])
        gy = 0.5 * (base[pad + 1:h - pad + 1, pad:w - pad] - base[pad - 1:h - pad - 1, pad:w - pad])
        it = (cur - warped)[pad:h - pad, pad:w - pad]
        gx, gy, it = gx[m], gy[m], it[m]  # (n, C)
        gxy = (gx * gy).sum()
        a = np.array([[(gx * gx).sum(), gxy], [gxy, (gy * gy).sum()]])
        b = -np.array([(gx * it).sum(), (gy * it).sum()])
        ridge = LK_RIDGE * np.trace(a) + 1e-12
        d = np.clip(d + np.linalg.solve(a + ridge * np.eye(2), b), -limit, limit)
    return d


def clip_statistics(video, gt: Mapping, num_cond: int = 1) -> np.ndarray:
    """The statistic vector of one clip: (G, 3 + N) per-frame values flattened to (G * (3 + N),).

    video: (T, 3, H, W) or (T, H, W, 3) in [0, 1]; gt: its clip's ground truth (uses `colors`
    (N, 3)); frames < num_cond are conditioning frames, the G = T - num_cond others are scored.
    Columns per frame: sprite displacement, background dx, background dy, mass of sprite 0..N-1.
    """
    frames = np.ascontiguousarray(to_frames(video), dtype=np.float64)  # layout-independent sums
    t_count, h, w, _ = frames.shape
    if not 1 <= num_cond < t_count:
        raise ValueError(f"num_cond={num_cond} must be in [1, {t_count - 1}] for {t_count} frames")
    colours = np.asarray(gt["colors"], dtype=np.float32).reshape(-1, 3)
    unit = float(min(h, w))
    evidence = (np.stack([colour_evidence(frames.astype(np.float32), c) for c in colours])
                if len(colours) else np.zeros((0, t_count, h, w)))  # (N, T, H, W)
    sprites = (evidence > SPRITE_EVIDENCE).any(axis=0)  # (T, H, W)
    background = ~_dilate(sprites, BG_MARGIN_PX)
    tracks = [_centroids(e) for e in evidence]  # [(mass (T,), centre (T, 2))]
    rows = []
    for t in range(num_cond, t_count):
        steps = [np.linalg.norm(c[t] - c[t - 1]) for mass, c in tracks
                 if mass[t] >= MIN_MASS and mass[t - 1] >= MIN_MASS]
        move = float(np.mean(steps)) if steps else 0.0
        shift = _frame_shift(frames[t - 1], frames[t], background[t - 1] & background[t],
                             MAX_SHIFT_FRAC * unit)
        masses = [mass[t] for mass, _ in tracks]
        rows.append([100 * move / unit, *(100 * shift / unit),
                     *(100 * np.asarray(masses) / (h * w))])
    return np.asarray(rows, dtype=np.float64).reshape(-1)


def energy_distance(x: Sequence, y: Sequence) -> float:
    """Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| between two sets of vectors (n, d), (m, d).

    V-statistics over all pairs (the distance between the two empirical distributions): >= 0,
    symmetric, 0 iff the sets are equal as multisets.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    if x.shape[1:] != y.shape[1:] or not len(x) or not len(y):
        raise ValueError(f"energy_distance needs two non-empty sets of equal-length vectors, got "
                         f"shapes {x.shape} and {y.shape}")

    def mean_dist(a, b):
        return float(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1).mean())

    return max(0.0, 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y))


def dist_energy(videos: Sequence, truths: Sequence, gts: Sequence[Mapping],
                num_cond: int = 1) -> float:
    """`dist_energy`: energy distance between the statistics of generated clips and of the truth.

    videos[i] and truths[i] are clip i's generated and true videos (same shape), gts[i] its ground
    truth; each clip's statistics use its own palette. Lower is better; 0 when videos == truths.
    """
    if not (len(videos) == len(truths) == len(gts)) or not len(videos):
        raise ValueError(f"dist_energy needs as many videos ({len(videos)}) as truths "
                         f"({len(truths)}) and ground truths ({len(gts)}), at least one")
    generated = [clip_statistics(v, g, num_cond) for v, g in zip(videos, gts)]
    true = [clip_statistics(v, g, num_cond) for v, g in zip(truths, gts)]
    return energy_distance(generated, true)
