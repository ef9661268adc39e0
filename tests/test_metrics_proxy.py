"""Proxy metrics (OpenCV) on clips with known motion, and bench/metrics.py on real video files."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from core.metrics import proxy
from core.synthetic import render_clip

ROOT = Path(__file__).resolve().parents[1]


def _frames(pan: bool, sprites: int = 2, size: int = 96, frames: int = 12) -> np.ndarray:
    video, _, _ = render_clip(20_000_001, size, size, frames, sprites, pan)  # cloudy, pans right
    return proxy.as_uint8(video.permute(0, 2, 3, 1).numpy())


def _write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt, stream.bit_rate = "yuv420p", 4_000_000
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def test_temporal_flickering_is_vbenchs_formula():
    frames = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    frames[1] = 51  # |0-51| then |51-0|: mean absolute difference 51
    assert proxy.temporal_flickering(frames) == pytest.approx((255 - 51) / 255)
    assert proxy.temporal_flickering(frames[:1].repeat(5, axis=0)) == 1.0
    floats = frames.astype(np.float32) / 255  # floats in [0, 1] are quantised like a video file
    assert proxy.temporal_flickering(floats) == pytest.approx((255 - 51) / 255)


def test_static_and_panning_clips_are_told_apart():
    # a slow pan alone stays under VBench's dynamic threshold (6 * 96 / 256 = 2.25 px); the
    # moving sprites exceed it
    static, pan = _frames(False, sprites=0), _frames(True, sprites=2)
    s, p = proxy.proxy_metrics(static), proxy.proxy_metrics(pan, camera="pan_right")
    assert s["proxy_dynamic_degree"] == 0.0 and p["proxy_dynamic_degree"] == 1.0
    assert s["proxy_flow_top5_px"] < 0.5 < p["proxy_flow_top5_px"]
    assert proxy.dynamic_degree(_frames(True, sprites=0))["proxy_dynamic_degree"] == 0.0
    assert s["proxy_camera_motion"] == "static" and p["proxy_camera_motion"] == "pan_right"
    assert p["proxy_camera_motion_match"] == 1.0
    for key in ("proxy_subject_consistency", "proxy_background_consistency", "temporal_flickering"):
        assert s[key] > p[key], key  # SSIM and frame differences penalise any motion
    assert s["proxy_motion_smoothness"] > 0.99


def test_motion_smoothness_drops_when_frames_are_shuffled():
    pan = _frames(True)
    shuffled = pan[[0, 3, 2, 5, 4, 1, 6, 9, 8, 11, 10, 7]]
    assert proxy.motion_smoothness(shuffled) < proxy.motion_smoothness(pan) - 0.005


def test_camera_rules_follow_vbench():
    grid = proxy._grid_points(100, 100)  # (100, 2) xy
    assert proxy.classify_camera(grid, grid + [-3, 0], 100) == ["pan_right"]
    assert proxy.classify_camera(grid, grid + [0, 3], 100) == ["tilt_up"]
    centre = np.array([50.0, 50.0])
    # VBench's middle point (index 5 of 10) is off-centre, so zooms also report a pan/tilt
    assert "zoom_in" in proxy.classify_camera(grid, centre + 1.2 * (grid - centre), 100)
    assert "zoom_out" in proxy.classify_camera(grid, centre + 0.8 * (grid - centre), 100)
    assert proxy.classify_camera(grid, grid + 0.2, 100) == ["static"]


def test_i2v_keys_need_the_image_and_fall_for_a_wrong_one():
    pan = _frames(True)
    right = proxy.proxy_metrics(pan, image=pan[0])
    wrong = proxy.proxy_metrics(pan, image=255 - pan[0])
    for key in ("proxy_i2v_subject", "proxy_i2v_background"):
        assert right[key] > wrong[key] + 0.1
    assert "proxy_i2v_subject" not in proxy.proxy_metrics(pan)
    with pytest.raises(ValueError, match="camera"):
        proxy.proxy_metrics(pan, camera="spin")


def test_cli_prints_one_json_object_last(tmp_path):
    video = tmp_path / "pan.mp4"
    _write_mp4(video, _frames(True))
    from PIL import Image
    Image.fromarray(_frames(True)[0]).save(tmp_path / "first.png")
    proc = subprocess.run([sys.executable, "bench/metrics.py", str(video), "--image",
                           str(tmp_path / "first.png")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("proxy_dynamic_degree", "proxy_motion_smoothness", "proxy_subject_consistency",
                "proxy_background_consistency", "temporal_flickering", "proxy_camera_motion",
                "proxy_i2v_subject", "proxy_i2v_background"):
        assert key in result
    assert result["frames"] == 12 and result["proxy_camera_motion"] == "pan_right"


@pytest.mark.parametrize("content", [None, b"not a video at all"], ids=["missing", "garbage"])
def test_cli_names_an_unreadable_file(tmp_path, content):
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run([sys.executable, "bench/metrics.py", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"cannot read video {path}" in proc.stderr
