"""Synthetic backend: VBench-I2V-style dimensions computed from the sprites data's exact truth.

The built-in data (core/synthetic.py `render_clip`) knows every sprite's colour, shape, size and
sub-pixel position and the camera's texture offset in every frame, so the dimensions VBench-I2V
scores with DINO/CLIP/RAFT/CoTracker features can be scored here exactly and without weights:

- syn_subject_consistency (VBench subject_consistency): each sprite's colour mask vs the true
  frame, aligned on the tracked centroid (soft IoU: identity and shape);
- syn_color_persistence (part of it): each sprite's colour mass vs the true frame;
- syn_background_consistency (background_consistency): frame-to-frame background change vs the
  true change, i.e. stability once the known camera pan is removed;
- syn_motion_smoothness (motion_smoothness): sprite-track accelerations vs the true tracks;
- syn_dynamic_degree (dynamic_degree): sprite path length / true path length, capped at 1;
- syn_i2v_subject (i2v_subject): sprite shape vs the conditioning frame;
- syn_i2v_background (i2v_background): background vs the conditioning frame moved by the true
  camera offset;
- syn_camera_motion (camera_motion): whether the true pan explains the background best;
- syn_imaging_quality (imaging_quality): high-frequency energy vs the true frames.

Every score is in [0, 1], higher is better, and equals 1 for the true video itself. Aesthetic
quality has no ground truth here and is not reported. These are NOT VBench numbers and are never
fed to VBench's Quality/I2V/Total. numpy only (no OpenCV), so core can compute them in
`core.evaluate.score_samples` at a cost of milliseconds per clip.

Sprites are found by colour: a pixel's evidence for sprite n is 1 - |rgb - colour_n| / tolerance,
clipped to [0, 1]; the tolerance (0.25) is below the smallest distance between a sprite colour and
any other sprite or background colour of the palette (0.31), so evidence is colour-specific.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

EVIDENCE_TOLERANCE = 0.25  # RGB distance where colour evidence reaches 0 (see module doc)
MIN_MASS = 0.5  # pixels of colour evidence below which a sprite counts as absent
SPRITE_EVIDENCE = 0.01  # evidence above which a true pixel belongs to a sprite ...
BG_MARGIN_PX = 2  # ... plus this many pixels around it (antialiased edges), for background masks
ACCEL_SCALE_FRAC = 0.05  # acceleration error (fraction of min(H, W)) where smoothness is 1/e
CAMERA_STATIC_MIN_PX = 0.5  # a true pan below this many pixels over the clip counts as static
CAMERA_NOMINAL_FRAC = 0.02  # per-frame pan (fraction of min(H, W)) tested against a static truth
CAMERA_TOLERANCE = 0.002  # mean-absolute-error slack (colour units) when ranking hypotheses
MIN_OVERLAP_FRAC = 0.2  # shifts whose usable overlap is smaller than this are not considered
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Our key -> the VBench-I2V dimension it mirrors (None: no VBench counterpart).
KEYS = {
    "syn_i2v_subject": "i2v_subject",
    "syn_i2v_background": "i2v_background",
    "syn_camera_motion": "camera_motion",
    "syn_subject_consistency": "subject_consistency",
    "syn_background_consistency": "background_consistency",
    "syn_motion_smoothness": "motion_smoothness",
    "syn_dynamic_degree": "dynamic_degree",
    "syn_imaging_quality": "imaging_quality",
    "syn_color_persistence": None,
}


# ----------------------------------------------------------------------------- helpers


def to_frames(video) -> np.ndarray:
    """(T, 3, H, W) torch/numpy or (T, H, W, 3) numpy in [0, 1] -> (T, H, W, 3) float32."""
    if hasattr(video, "detach"):
        video = video.detach().cpu().float().numpy()
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4 or 3 not in (video.shape[1], video.shape[-1]):
        raise ValueError(f"expected a video (T, 3, H, W) or (T, H, W, 3), got shape {video.shape}")
    return video.transpose(0, 2, 3, 1) if video.shape[1] == 3 and video.shape[-1] != 3 else video


def colour_evidence(frames: np.ndarray, colour, tolerance: float = EVIDENCE_TOLERANCE):
    """Per-pixel evidence in [0, 1] that frames (T, H, W, 3) show `colour` (3,) -> (T, H, W)."""
    dist = np.linalg.norm(frames - np.asarray(colour, dtype=np.float32), axis=-1)
    return np.clip(1.0 - dist / tolerance, 0.0, 1.0)


def _centroids(evidence: np.ndarray):
    """Mass (T,) and evidence-weighted centroid (T, 2) in pixel xy (NaN where mass < MIN_MASS)."""
    _, h, w = evidence.shape
    mass = evidence.sum(axis=(1, 2))
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5  # pixel centres
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (evidence.sum(axis=1) * xs).sum(axis=1) / mass
        cy = (evidence.sum(axis=2) * ys).sum(axis=1) / mass
    centre = np.stack([cx, cy], axis=1)
    centre[mass < MIN_MASS] = np.nan
    return mass, centre


def _shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """image (H, W) moved by (dx, dy) pixels with bilinear interpolation; zeros enter."""
    h, w = image.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.float64)
    padded[1:-1, 1:-1] = image
    src_x = np.clip(np.arange(w) - dx + 1, 0, w + 1)  # sample at p - d (padded coordinates)
    src_y = np.clip(np.arange(h) - dy + 1, 0, h + 1)
    x0, y0 = np.floor(src_x).astype(int), np.floor(src_y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w + 1), np.minimum(y0 + 1, h + 1)
    fx, fy = (src_x - x0)[None, :], (src_y - y0)[:, None]
    top = padded[y0][:, x0] * (1 - fx) + padded[y0][:, x1] * fx
    bottom = padded[y1][:, x0] * (1 - fx) + padded[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _aligned_iou(a: np.ndarray, centre_a, b: np.ndarray, centre_b) -> float:
    """Soft IoU (sum min / sum max) of maps a and b after moving a's centroid onto b's."""
    dx, dy = np.asarray(centre_b) - np.asarray(centre_a)
    moved = _shift(a, float(dx), float(dy))
    union = np.maximum(moved, b).sum()
    return float(np.minimum(moved, b).sum() / union) if union > 0 else float("nan")


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (..., H, W) masks with a (2r+1)^2 square."""
    out = mask.copy()
    h, w = mask.shape[-2:]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            src = mask[..., max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            out[..., max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)] |= src
    return out


def _laplacian_energy(frames: np.ndarray) -> np.ndarray:
    """Mean |4-neighbour Laplacian| of the luma of frames (T, H, W, 3) -> (T,)."""
    luma = frames @ LUMA
    p = np.pad(luma, ((0, 0), (1, 1), (1, 1)), mode="edge")
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * luma
    return np.abs(lap).mean(axis=(1, 2))


def shift_errors(a: np.ndarray, b: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray,
                 shifts: np.ndarray) -> np.ndarray:
    """Masked mean |b(p) - a(p - s)| for each content shift s (K, 2) in pixels -> (K,).

    a, b: (H, W, 3) frames; masks (H, W) of usable (background) pixels. Shifts whose usable
    overlap is below MIN_OVERLAP_FRAC of the frame get +inf.
    """
    h, w = mask_a.shape
    errors = np.full(len(shifts), np.inf)
    for k, (sx, sy) in enumerate(shifts):
        moved = np.stack([_shift(a[..., c], sx, sy) for c in range(a.shape[-1])], axis=-1)
        m = (_shift(mask_a.astype(np.float64), sx, sy) > 0.999) & mask_b
        if m.sum() >= MIN_OVERLAP_FRAC * h * w:
            errors[k] = float(np.abs(b[m] - moved[m]).mean())
    return errors


def _mean(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- dimensions


def _subject_scores(e_gen, e_ref, first: int, cond: int) -> Dict[str, Optional[float]]:
    """Identity, colour and conditioning-frame agreement of every sprite (evidence (N, T, H, W))."""
    colour, identity, to_cond = [], [], []
    for n in range(e_gen.shape[0]):
        m_gen, c_gen = _centroids(e_gen[n])
        m_ref, c_ref = _centroids(e_ref[n])
        for t in range(first, e_gen.shape[1]):
            if m_ref[t] < MIN_MASS:  # hidden in the truth (occluded): nothing to compare
                continue
            present = m_gen[t] >= MIN_MASS
            colour.append(min(m_gen[t], m_ref[t]) / max(m_gen[t], m_ref[t]))
            identity.append(_aligned_iou(e_gen[n, t], c_gen[t], e_ref[n, t], c_ref[t])
                            if present else 0.0)
            if m_ref[cond] >= MIN_MASS:  # the truth's own agreement normalises occlusion away
                ceiling = _aligned_iou(e_ref[n, t], c_ref[t], e_ref[n, cond], c_ref[cond])
                got = (_aligned_iou(e_gen[n, t], c_gen[t], e_ref[n, cond], c_ref[cond])
                       if present else 0.0)
                if ceiling > 0:
                    to_cond.append(min(1.0, got / ceiling))
    return {"syn_color_persistence": _mean(colour), "syn_subject_consistency": _mean(identity),
            "syn_i2v_subject": _mean(to_cond)}


def _motion_scores(e_gen, e_ref, first: int, unit: float) -> Dict[str, Optional[float]]:
    """Track smoothness (acceleration error) and dynamic degree (path length ratio) per sprite."""
    smooth, dynamic = [], []
    for n in range(e_gen.shape[0]):
        _, g = _centroids(e_gen[n])  # (T, 2), NaN where the sprite is absent
        _, r = _centroids(e_ref[n])
        for t in range(max(1, first - 1), e_gen.shape[1] - 1):
            if np.isnan(r[t - 1:t + 2]).any():
                continue
            if np.isnan(g[t - 1:t + 2]).any():
                smooth.append(0.0)
                continue
            err = np.linalg.norm((g[t + 1] - 2 * g[t] + g[t - 1]) - (r[t + 1] - 2 * r[t] + r[t - 1]))
            smooth.append(math.exp(-err / (ACCEL_SCALE_FRAC * unit)))
        steps = range(first, e_gen.shape[1])
        true_path = np.nansum([np.linalg.norm(r[t] - r[t - 1]) for t in steps])
        gen_path = np.nansum([np.linalg.norm(g[t] - g[t - 1]) for t in steps])
        if true_path > 1e-6:
            dynamic.append(min(1.0, gen_path / true_path))
    return {"syn_motion_smoothness": _mean(smooth), "syn_dynamic_degree": _mean(dynamic)}


def _background_scores(gen, ref, background, offsets, first: int, cond: int):
    """Temporal stability and conditioning-frame agreement of the background (masks (T, H, W))."""
    t_count, h, w, _ = gen.shape
    stable, to_cond = [], []
    ys, xs = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
    for t in range(first, t_count):
        m = background[t] & background[t - 1]
        if m.any():
            change = (gen[t] - gen[t - 1]) - (ref[t] - ref[t - 1])
            stable.append(1.0 - float(np.abs(change[m]).mean()))
        # the texture point at p in frame t sits at p + (offset_t - offset_cond) in the cond frame
        dx, dy = offsets[t] - offsets[cond]
        sx, sy = np.floor(xs + dx).astype(int), np.floor(ys + dy).astype(int)
        inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
        seen = np.zeros_like(inside)
        seen[inside] = background[cond][sy[inside], sx[inside]]
        m = background[t] & seen
        if m.any():
            to_cond.append(1.0 - float(np.abs(gen[t][m] - ref[t][m]).mean()))
    return {"syn_background_consistency": _mean(stable), "syn_i2v_background": _mean(to_cond)}


def _camera_score(gen, ref, background, offsets, cond: int, unit: float) -> Optional[float]:
    """1 if the true camera motion explains the generated background at least as well as any other.

    Hypotheses (VBench's vocabulary): static, pan left/right, tilt up/down, with the true pan's
    magnitude (a nominal one for a static truth). A hypothesis is scored by how well the
    conditioning frame's background moved by it predicts the last frame's. Striped and checkered
    textures can make motions indistinguishable (aperture, periodicity), so the margin by which
    the truth itself prefers its motion sets the tolerance: the true video scores exactly 1, and a
    generated one is right whenever it is as unambiguous as the truth allows.
    """
    last = gen.shape[0] - 1
    true_shift = -(offsets[last] - offsets[cond])  # texture moves against the camera
    size = float(np.abs(true_shift).max())
    if size < CAMERA_STATIC_MIN_PX:  # static truth: test against a nominal pan
        size, true_shift = max(2.0, CAMERA_NOMINAL_FRAC * unit * (last - cond)), np.zeros(2)
    axes = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float64) * size
    shifts = np.concatenate([np.zeros((1, 2)), axes])  # static, 4 directions
    true_k = int(np.argmin(np.abs(shifts - true_shift).sum(axis=1)))
    others = [k for k in range(len(shifts)) if k != true_k]

    def margin(frames):
        err = shift_errors(frames[cond], frames[last], background[cond], background[last], shifts)
        return err[true_k] - err[others].min()  # < 0: the true motion fits best

    tolerance = max(0.0, margin(ref)) + CAMERA_TOLERANCE
    return float(margin(gen) <= tolerance)


def clip_scores(video, truth, gt: Mapping, num_cond: int = 1) -> Dict[str, Optional[float]]:
    """All synthetic dimensions of one generated clip against its ground truth.

    video, truth: (T, 3, H, W) or (T, H, W, 3) in [0, 1], same shape, frames < num_cond are the
    conditioning frames; gt: the ground-truth dict of core.synthetic.render_clip for `truth`
    (uses `colors` (N, 3) and `bg_offset` (T, 2)). Returns {key: score in [0, 1] or None}.
    """
    gen, ref = to_frames(video), to_frames(truth)
    if gen.shape != ref.shape:
        raise ValueError(f"video {gen.shape} and truth {ref.shape} differ in shape; render the "
                         "truth at the generated frame count and resolution")
    t_count, h, w, _ = gen.shape
    if not 1 <= num_cond < t_count:
        raise ValueError(f"num_cond={num_cond} must be in [1, {t_count - 1}] for {t_count} frames")
    offsets = np.asarray(gt["bg_offset"], dtype=np.float64)
    if offsets.shape != (t_count, 2):
        raise ValueError(f"gt['bg_offset'] has shape {offsets.shape}, expected ({t_count}, 2)")
    colours = np.asarray(gt["colors"], dtype=np.float32).reshape(-1, 3)
    unit, first, cond = float(min(h, w)), num_cond, num_cond - 1
    e_gen = np.stack([colour_evidence(gen, c) for c in colours]) if len(colours) else \
        np.zeros((0, t_count, h, w), dtype=np.float32)  # (N, T, H, W)
    e_ref = np.stack([colour_evidence(ref, c) for c in colours]) if len(colours) else e_gen
    sprites = (e_ref > SPRITE_EVIDENCE).any(axis=0)  # (T, H, W); False without sprites
    background = ~_dilate(sprites, BG_MARGIN_PX)  # (T, H, W)
    scores = {**_subject_scores(e_gen, e_ref, first, cond),
              **_motion_scores(e_gen, e_ref, first, unit),
              **_background_scores(gen, ref, background, offsets, first, cond),
              "syn_camera_motion": _camera_score(gen, ref, background, offsets, cond, unit)}
    e_g, e_r = _laplacian_energy(gen[first:]), _laplacian_energy(ref[first:])
    ratio = [1.0 if max(a, b) == 0 else min(a, b) / max(a, b) for a, b in zip(e_g, e_r)]
    scores["syn_imaging_quality"] = _mean(ratio)
    return {k: scores[k] for k in KEYS}


def mean_scores(per_clip: List[Mapping[str, Optional[float]]]) -> Dict[str, Optional[float]]:
    """Mean over clips of each key, ignoring clips where a key is None."""
    return {k: _mean([c.get(k) for c in per_clip]) for k in KEYS}


def score_rendered(videos, seeds: Sequence[int], *, num_sprites: int, camera_pan: bool,
                   num_cond: int = 1) -> Dict[str, Optional[float]]:
    """Mean synthetic scores of generated clips (B, T, 3, H, W) whose truth is rendered by seed.

    The truth is re-rendered at the generated frame count and resolution (a clip is a pure
    function of its seed; see core/synthetic.py), so longer or larger extrapolated samples work.
    """
    from core.synthetic import render_clip  # lazy: keeps this module importable without torch

    if len(videos) != len(seeds):
        raise ValueError(f"{len(videos)} videos but {len(seeds)} seeds")
    per_clip = []
    for video, seed in zip(videos, seeds):
        t_count, _, h, w = to_frames(video).transpose(0, 3, 1, 2).shape
        truth, _, gt = render_clip(int(seed), h, w, t_count, num_sprites, camera_pan)
        per_clip.append(clip_scores(video, truth, gt, num_cond))
    return mean_scores(per_clip)
