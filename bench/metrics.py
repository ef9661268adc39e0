"""Proxy VBench-I2V metrics of any real video file, printed as one JSON object.

    python bench/metrics.py VIDEO [--image FIRST_FRAME] [--camera pan_left] [--fps 8] [--max-frames N]

Decodes VIDEO with PyAV, computes core/metrics/proxy.py (OpenCV Farneback dynamic degree,
flow-interpolation motion smoothness, SSIM consistency, Lucas-Kanade camera motion and VBench's
exact temporal flickering), prints a readable table, then the JSON object as the last line.
`--image` adds proxy_i2v_subject / proxy_i2v_background against the conditioning image.
These are proxies, not VBench numbers: never compare them with the leaderboard.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from core.metrics.proxy import CAMERA_TYPES, proxy_metrics  # noqa: E402


class VideoReadError(ValueError):
    """The file is missing or is not a video PyAV can decode."""


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Frames (T, H, W, 3) uint8 RGB and the stream's frame rate (8.0 if it has none)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"cannot read video {path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"cannot read video {path}: it has no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.base_rate or 0) or 8.0
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
    except VideoReadError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoReadError(f"cannot read video {path}: {e} (expected a video file FFmpeg can "
                             "decode, e.g. .mp4 or .webm)") from e
    if len(frames) < 3:
        raise VideoReadError(f"cannot score video {path}: {len(frames)} decodable frame(s), "
                             "need at least 3")
    return np.stack(frames), rate


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise VideoReadError(f"cannot read image {path}: {e}") from e


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", help="video file (mp4, webm, ...)")
    p.add_argument("--image", help="the conditioning first frame (adds the proxy_i2v_* keys)")
    p.add_argument("--camera", choices=CAMERA_TYPES, help="expected camera motion (adds a match key)")
    p.add_argument("--fps", type=float, help="frame rate for dynamic degree (default: the file's)")
    p.add_argument("--max-frames", type=int, help="only the first N frames")
    args = p.parse_args(argv)
    try:
        frames, rate = read_video(args.video, args.max_frames)
        image = read_image(args.image) if args.image else None
    except VideoReadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    metrics = proxy_metrics(frames, fps=args.fps or rate, image=image, camera=args.camera)
    elapsed = time.perf_counter() - start
    t, h, w = frames.shape[:3]
    print(f"{args.video}: {t} frames {h}x{w} at {args.fps or rate:g} fps; proxies, not VBench")
    for key, value in metrics.items():
        print(f"  {key:32s} {value:.4f}" if isinstance(value, float) else f"  {key:32s} {value}")
    result = {"video": str(args.video), "frames": t, "height": h, "width": w,
              "fps": args.fps or rate, "seconds": round(elapsed, 3), **metrics}
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
