"""Proxy backend: classical, weight-free stand-ins for VBench-I2V dimensions on any video.

VBench scores with RAFT, AMT-S, DINO, CLIP and CoTracker (github.com/Vchitect/VBench); none of
their weights can be fetched offline. These proxies follow VBench's protocols with OpenCV in place
of the networks (VBench, github.com/Vchitect/VBench, `vbench/` and `vbench2_beta_i2v/`):

- proxy_dynamic_degree (dynamic_degree): VBench's rule (~8 fps sampling, top-5 % flow
  magnitude, threshold, pair count) with Farneback flow instead of RAFT; 0 or 1 per video.
  proxy_flow_top5_px is its continuous input (mean over pairs);
- proxy_motion_smoothness (motion_smoothness): odd frames rebuilt from their neighbours by
  half-flow warping instead of AMT-S, (255 - MAE) / 255;
- proxy_subject_consistency / proxy_background_consistency: SSIM to the previous and the first
  frame (VBench's scheme) on the central half / the border ring instead of DINO / CLIP;
- proxy_i2v_subject / proxy_i2v_background: VBench's 0.4 max + 0.3 mean + 0.3 min formula with
  SSIM against the conditioning image (only when one is given);
- proxy_camera_motion: Lucas-Kanade tracks of a 10 x 10 grid instead of CoTracker, then VBench's
  edge-point rules and 0.5 % threshold;
- temporal_flickering: VBench's own model-free algorithm, exactly.

The proxies are not comparable with leaderboard numbers (SSIM penalises camera motion that DINO
ignores; Farneback underestimates fast motion) and are never aggregated into VBench's Total.
Frames are (T, H, W, 3) uint8 RGB, as decoded from a file.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

TARGET_FPS = 8.0  # VBench samples dynamic-degree frames at ~8 fps
TOP_FRACTION = 0.05  # VBench: mean of the top 5 % flow magnitudes per frame pair
MAX_SSIM_SIDE = 256  # SSIM is computed on frames downscaled to at most this short side
SSIM_SIGMA = 1.5  # Wang et al. 2004: Gaussian window sigma 1.5, C1/C2 from K1=0.01, K2=0.03
GRID_SIZE = 10  # VBench's CoTracker grid; the middle point of each border row/column is used
CAMERA_FACTOR = 0.005  # VBench: edge displacement threshold = 0.5 % of min(H, W)
I2V_WEIGHTS = (0.4, 0.3, 0.3)  # VBench i2v_subject: max to image, mean and min consecutive
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2,
                 flags=0)
CAMERA_TYPES = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "static")


def _cv2():
    try:
        import cv2
    except ImportError as e:  # the metrics extra is not installed
        raise ImportError("proxy metrics need OpenCV: install the `metrics` extra "
                          "(uv pip install -e '.[metrics]', i.e. opencv-python-headless)") from e
    return cv2


def as_uint8(frames) -> np.ndarray:
    """(T, H, W, 3) uint8, from uint8 or from floats in [0, 1] (rounded like a video encoder)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got shape {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.rint(frames.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _gray(frame: np.ndarray) -> np.ndarray:
    return _cv2().cvtColor(frame, _cv2().COLOR_RGB2GRAY)


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense Farneback flow from RGB frame a to b -> (H, W, 2) in pixels."""
    return _cv2().calcOpticalFlowFarneback(_gray(a), _gray(b), None, **FARNEBACK)


# ----------------------------------------------------------------------------- exact VBench


def temporal_flickering(frames) -> float:
    """VBench's temporal_flickering: (255 - mean |frame_t - frame_t+1|) / 255, exactly."""
    f = as_uint8(frames).astype(np.float32)
    if len(f) < 2:
        raise ValueError("temporal_flickering needs at least 2 frames")
    return (255.0 - float(np.mean([np.abs(a - b).mean() for a, b in zip(f[:-1], f[1:])]))) / 255.0


# ----------------------------------------------------------------------------- motion


def dynamic_degree(frames, fps: float = TARGET_FPS) -> Dict[str, float]:
    """VBench's dynamic-degree decision with Farneback flow: {dynamic 0/1, top-5 % px, threshold}.

    As in VBench: keep every round(fps / 8)-th frame; per consecutive pair, the mean of the top 5 %
    flow magnitudes; the threshold is max(1, 8 / fps) * 6 * min(H, W) / 256 pixels, and the video
    is dynamic once round(4 * n / 16) pairs exceed it (n = kept frames).
    """
    f = as_uint8(frames)
    if fps <= 0:
        raise ValueError(f"fps={fps} must be > 0")
    kept = f[::max(1, round(fps / TARGET_FPS))]
    h, w = f.shape[1:3]
    threshold = max(1.0, TARGET_FPS / fps) * 6.0 * min(h, w) / 256.0
    need = round(4 * len(kept) / 16.0)
    cut = max(1, int(h * w * TOP_FRACTION))
    scores = []
    for a, b in zip(kept[:-1], kept[1:]):
        magnitude = np.linalg.norm(_flow(a, b), axis=-1).ravel()
        scores.append(float(np.sort(magnitude)[-cut:].mean()))
    count, dynamic = 0, False
    for s in scores:  # VBench's check_move: decided as soon as enough pairs have moved
        count += s > threshold
        if count >= need:
            dynamic = True
            break
    return {"proxy_dynamic_degree": float(dynamic),
            "proxy_flow_top5_px": float(np.mean(scores)) if scores else 0.0,
            "proxy_dynamic_threshold_px": threshold}


def _warp(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(p) = frame(p + flow(p)), bilinear, border replicated."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)
    m = grid + flow.astype(np.float32)
    return cv2.remap(frame, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def interpolate_middle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame halfway between RGB frames a and b by bidirectional half-flow warping (uint8)."""
    from_a = _warp(a, -0.5 * _flow(a, b))  # flow mid->a ~ -1/2 flow a->b
    from_b = _warp(b, -0.5 * _flow(b, a))
    return np.rint((from_a.astype(np.float32) + from_b) / 2).astype(np.uint8)


def motion_smoothness(frames) -> float:
    """VBench's protocol with classical interpolation: rebuild odd frames from even neighbours."""
    f = as_uint8(frames)
    if len(f) < 3:
        raise ValueError("motion_smoothness needs at least 3 frames")
    errors = [np.abs(interpolate_middle(f[i - 1], f[i + 1]).astype(np.float32) - f[i]).mean()
              for i in range(1, len(f) - 1, 2)]
    return (255.0 - float(np.mean(errors))) / 255.0


def _grid_points(h: int, w: int) -> np.ndarray:
    """GRID_SIZE x GRID_SIZE points (row-major, y then x) at cell centres -> (G*G, 2) xy."""
    xs = (np.arange(GRID_SIZE) + 0.5) * w / GRID_SIZE
    ys = (np.arange(GRID_SIZE) + 0.5) * h / GRID_SIZE
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def track_grid(frames) -> np.ndarray:
    """Lucas-Kanade tracks of the grid, frame to frame; lost points stay put -> (T, G*G, 2)."""
    cv2 = _cv2()
    f = as_uint8(frames)
    points = _grid_points(*f.shape[1:3])
    tracks = [points.copy()]
    prev = _gray(f[0])
    for frame in f[1:]:
        gray = _gray(frame)
        moved, status, _ = cv2.calcOpticalFlowPyrLK(prev, gray, points.reshape(-1, 1, 2), None,
                                                   winSize=(15, 15), maxLevel=3)
        ok = status.ravel() == 1
        points = np.where(ok[:, None], moved.reshape(-1, 2), points)
        tracks.append(points.copy())
        prev = gray
    return np.stack(tracks)


def _direction(vector, scale: float) -> List[str]:
    x, y = vector
    out = (["right"] if x > scale else ["left"] if x < -scale else [])
    out += (["down"] if y > scale else ["up"] if y < -scale else [])
    return out or ["static"]


def classify_camera(first: np.ndarray, last: np.ndarray, min_side: int) -> List[str]:
    """VBench's camera rules on grid positions (G*G, 2) of the first and last frame."""
    mid = GRID_SIZE // 2  # VBench uses one point: the middle of each border row / column
    # VBench casts CoTracker's tracks to integers; LK's sub-pixel drift on flat regions would
    # become whole-pixel jumps that way, so positions stay sub-pixel here.
    a = np.asarray(first).reshape(GRID_SIZE, GRID_SIZE, 2)
    b = np.asarray(last).reshape(GRID_SIZE, GRID_SIZE, 2)
    scale = min_side * CAMERA_FACTOR
    top, down = _direction(b[0, mid] - a[0, mid], scale), _direction(b[-1, mid] - a[-1, mid], scale)
    left, right = _direction(b[mid, 0] - a[mid, 0], scale), _direction(b[mid, -1] - a[mid, -1], scale)
    common = {"left_left": "pan_right", "right_right": "pan_left", "down_down": "tilt_up",
              "up_up": "tilt_down", "static_static": "static"}
    vertical = {**common, "up_down": "zoom_in", "down_up": "zoom_out"}
    horizontal = {**common, "left_right": "zoom_in", "right_left": "zoom_out"}
    results = {vertical[f"{t}_{d}"] for t in top for d in down if f"{t}_{d}" in vertical}
    results |= {horizontal[f"{l}_{r}"] for l in left for r in right if f"{l}_{r}" in horizontal}
    if len(results) > 1:
        results.discard("static")
    return sorted(results) or ["None"]


def camera_motion(frames) -> List[str]:
    """Predicted VBench camera types (e.g. ["pan_right"]) from Lucas-Kanade grid tracks."""
    tracks = track_grid(frames)
    return classify_camera(tracks[0], tracks[-1], min(np.asarray(frames).shape[1:3]))


# ----------------------------------------------------------------------------- consistency


def _ssim_frames(frames: np.ndarray) -> np.ndarray:
    """Grayscale float64 frames, downscaled so the short side is at most MAX_SSIM_SIDE."""
    cv2 = _cv2()
    h, w = frames.shape[1:3]
    scale = min(1.0, MAX_SSIM_SIDE / min(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = [_gray(f) if scale == 1.0 else cv2.resize(_gray(f), size, interpolation=cv2.INTER_AREA)
           for f in frames]
    return np.stack(out).astype(np.float64)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004, Gaussian window) of two gray images in [0, 255]."""
    cv2 = _cv2()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def region_masks(h: int, w: int):
    """(subject, background) masks: the central half of each axis, and the border ring around it."""
    centre = np.zeros((h, w), dtype=bool)
    centre[h // 4:h - h // 4, w // 4:w - w // 4] = True
    return centre, ~centre


def consistency(frames) -> Dict[str, float]:
    """VBench's consistency scheme with SSIM: per frame t >= 1, mean of SSIM to t-1 and to 0."""
    g = _ssim_frames(as_uint8(frames))
    if len(g) < 2:
        raise ValueError("consistency needs at least 2 frames")
    subject, background = region_masks(*g.shape[1:])
    per = {"subject": [], "background": []}
    for t in range(1, len(g)):
        prev, first = ssim_map(g[t - 1], g[t]), ssim_map(g[0], g[t])
        for name, mask in (("subject", subject), ("background", background)):
            per[name].append(0.5 * (max(0.0, prev[mask].mean()) + max(0.0, first[mask].mean())))
    return {f"proxy_{k}_consistency": float(np.mean(v)) for k, v in per.items()}


def fit_image(image, h: int, w: int) -> np.ndarray:
    """An RGB image centre-cropped to the aspect ratio h:w and resized to (h, w, 3) uint8."""
    cv2 = _cv2()
    img = as_uint8(np.asarray(image)[None])[0]
    ih, iw = img.shape[:2]
    if ih * w > iw * h:  # too tall
        ch = round(iw * h / w)
        img = img[(ih - ch) // 2:(ih - ch) // 2 + ch]
    else:
        cw = round(ih * w / h)
        img = img[:, (iw - cw) // 2:(iw - cw) // 2 + cw]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def i2v_consistency(frames, image) -> Dict[str, float]:
    """VBench's I2V formula with SSIM: 0.4 max_t sim(image, t) + 0.3 mean + 0.3 min of sim(t-1, t)."""
    f = as_uint8(frames)
    g = _ssim_frames(np.concatenate([fit_image(image, *f.shape[1:3])[None], f]))
    img, video = g[0], g[1:]
    subject, background = region_masks(*g.shape[1:])
    out = {}
    for name, mask in (("subject", subject), ("background", background)):
        to_image = [max(0.0, ssim_map(img, v)[mask].mean()) for v in video]
        steps = [max(0.0, ssim_map(a, b)[mask].mean()) for a, b in zip(video[:-1], video[1:])]
        steps = steps or [1.0]
        w_max, w_mean, w_min = I2V_WEIGHTS
        out[f"proxy_i2v_{name}"] = float(w_max * max(to_image) + w_mean * np.mean(steps)
                                         + w_min * min(steps))
    return out


# ----------------------------------------------------------------------------- all


def proxy_metrics(frames, fps: float = TARGET_FPS, image=None,
                  camera: Optional[str] = None) -> Dict[str, object]:
    """Every proxy metric of one video (T, H, W, 3); `image` adds the I2V keys, `camera` (a VBench
    camera type) adds proxy_camera_motion_match (1.0 if predicted)."""
    f = as_uint8(frames)
    if len(f) < 3:
        raise ValueError(f"need at least 3 frames for the proxy metrics, got {len(f)}")
    if camera is not None and camera not in CAMERA_TYPES:
        raise ValueError(f"camera={camera!r}: choose one of {CAMERA_TYPES}")
    out: Dict[str, object] = {}
    out.update(dynamic_degree(f, fps))
    out["proxy_motion_smoothness"] = motion_smoothness(f)
    out.update(consistency(f))
    if image is not None:
        out.update(i2v_consistency(f, image))
    predicted = camera_motion(f)
    out["proxy_camera_motion"] = "+".join(predicted)
    if camera is not None:
        out["proxy_camera_motion_match"] = float(camera in predicted)
    out["temporal_flickering"] = temporal_flickering(f)
    return out
