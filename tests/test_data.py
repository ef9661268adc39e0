"""Data: the bouncing-sprites generator, the video-folder reader and the dataset entry point."""

import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from core.config import DataConfig
from core.data import build_dataset, check_split, collate, describe_dataset
from core.synthetic import (COLOR_NAMES, SHAPES, SPLIT_SEED_RANGE, TEXTURES, VOCABULARY,
                            SyntheticSprites, render_clip)
from core.video_folder import SEEK_MIN_FRAMES, VideoFolder

BAR_WIDTH = 8  # test videos encode their frame index as 7 black/white bars of this width
NUM_BITS = 7
FRAME_H, FRAME_W = 48, 64


def _index_frame(k: int) -> np.ndarray:
    img = np.full((FRAME_H, FRAME_W, 3), 128, np.uint8)
    for bit in range(NUM_BITS):
        img[:, bit * BAR_WIDTH:(bit + 1) * BAR_WIDTH] = 255 if (k >> bit) & 1 else 0
    return img


def _read_index(frame: torch.Tensor) -> int:
    """Frame (3,H,W) in [0,1] written by _index_frame -> its frame index."""
    bars = frame.mean(dim=(0, 1))[:NUM_BITS * BAR_WIDTH].reshape(NUM_BITS, BAR_WIDTH)
    bits = (bars[:, 2:-2].mean(dim=1) > 0.5).long()
    return int((bits * (2 ** torch.arange(NUM_BITS))).sum())


def _write_video(path: Path, codec: str, num_frames: int, gop: int = 12) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = FRAME_W, FRAME_H, "yuv420p"
        stream.codec_context.gop_size = gop
        for k in range(num_frames):
            frame = av.VideoFrame.from_ndarray(_index_frame(k), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ----------------------------------------------------------------------------- synthetic sprites


def test_same_seed_same_clip_and_different_seeds_differ():
    a = render_clip(7, 32, 32, 8, 2, True)
    b = render_clip(7, 32, 32, 8, 2, True)
    c = render_clip(8, 32, 32, 8, 2, True)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("size", [(24, 40, 1), (24, 40, 17), (33, 17, 5), (5, 5, 2)])
def test_any_resolution_and_length(size):
    h, w, t = size
    video, caption, gt = render_clip(3, h, w, t, 3, True)
    assert video.shape == (t, 3, h, w) and video.dtype == torch.float32
    assert 0.0 <= video.min() and video.max() <= 1.0
    assert gt["positions"].shape == (t, 3, 2) and gt["bg_offset"].shape == (t, 2)
    assert isinstance(caption, str) and caption


def test_longer_clip_extends_shorter_one():
    short, _, _ = render_clip(5, 32, 32, 4, 2, True)
    long, _, _ = render_clip(5, 32, 32, 12, 2, True)
    assert torch.allclose(long[:4], short, atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_motion_is_constant_velocity_with_bounces(seed):
    h, w = 24, 40
    _, _, gt = render_clip(seed, h, w, 40, 3, False)
    pos, vel, r = gt["positions"].double(), gt["velocities"].double(), gt["sizes"].double()
    hi = torch.stack([w - r, h - r], dim=-1)  # (N, 2); the low wall is r on both axes
    lo = torch.stack([r, r], dim=-1)
    assert (pos >= lo - 1e-4).all() and (pos <= hi + 1e-4).all(), "sprite left the frame"
    free = pos[:-1] + vel[:-1]
    flipped = torch.isclose(vel[1:], -vel[:-1]) & (vel[:-1].abs() > 1e-6)
    assert (torch.isclose(vel[1:], vel[:-1]) | flipped).all()
    straight = ~flipped
    assert torch.allclose(pos[1:][straight], free[straight], atol=1e-4)
    wall = torch.where(free > hi, hi, lo).expand_as(free)
    assert ((free[flipped] > hi.expand_as(free)[flipped] - 1e-4)
            | (free[flipped] < lo.expand_as(free)[flipped] + 1e-4)).all(), "flip without a wall"
    assert torch.allclose(pos[1:][flipped], (2 * wall - free)[flipped], atol=1e-4)
    assert flipped.any() or seed % 3, "40 frames of 24x40 should show some bounces"


@pytest.mark.parametrize("seed", range(8))
def test_sprite_pixel_has_gt_colour_when_not_occluded(seed):
    h, w = 32, 48
    video, _, gt = render_clip(seed, h, w, 6, 3, True)
    pos, r = gt["positions"], gt["sizes"]
    checked = 0
    for t in range(video.shape[0]):
        for n in range(pos.shape[1]):
            col, row = int(pos[t, n, 0]), int(pos[t, n, 1])
            centre = torch.tensor([col + 0.5, row + 0.5])
            later = (pos[t, n + 1:] - centre).abs().amax(dim=-1) < r[n + 1:] + 1.0
            if later.any():  # a sprite painted on top may cover the pixel
                continue
            assert torch.allclose(video[t, :, row, col], gt["colors"][n], atol=1e-6)
            checked += 1
    assert checked > 0


def test_background_offset_pans_only_with_camera_pan():
    _, cap_pan, gt_pan = render_clip(4, 32, 32, 10, 2, True)
    _, cap_static, gt_static = render_clip(4, 32, 32, 10, 2, False)
    steps = gt_pan["bg_offset"][1:] - gt_pan["bg_offset"][:-1]
    assert torch.allclose(steps, gt_pan["pan_velocity"].expand_as(steps), atol=1e-4)
    assert gt_pan["pan_velocity"].abs().sum() > 0
    assert torch.equal(gt_static["bg_offset"], gt_static["bg_offset"][:1].expand(10, 2))
    assert torch.equal(gt_static["bg_offset"][0], gt_pan["bg_offset"][0])
    assert "camera panning" in cap_pan and "static camera" in cap_static
    # Only the background motion changes: the sprites are the same.
    assert torch.equal(gt_pan["positions"], gt_static["positions"])


@pytest.mark.parametrize("seed", range(10))
def test_caption_names_gt_colours_shapes_and_texture(seed):
    _, caption, gt = render_clip(seed, 32, 32, 4, 3, True)
    for c, s in zip(gt["color_ids"].tolist(), gt["shapes"].tolist()):
        assert f"{COLOR_NAMES[c]} {SHAPES[s]}" in caption
    background = f"{COLOR_NAMES[int(gt['bg_color_id'])]} {TEXTURES[int(gt['texture'])]} background"
    assert background in caption
    assert set(caption.replace(",", " ").split()) <= set(VOCABULARY)


def test_splits_use_disjoint_seed_ranges():
    cfg = DataConfig(num_train=50, num_val=20, num_test=20)
    seeds = {s: {build_dataset(cfg, s)[i]["seed"] for i in range(0, n, 7)}
             for s, n in (("train", 50), ("val", 20), ("test", 20))}
    assert not (seeds["train"] & seeds["val"] or seeds["train"] & seeds["test"]
                or seeds["val"] & seeds["test"])
    assert min(seeds["val"]) == SPLIT_SEED_RANGE and min(seeds["test"]) == 2 * SPLIT_SEED_RANGE
    with pytest.raises(ValueError, match="num_train"):
        SyntheticSprites(DataConfig(num_train=SPLIT_SEED_RANGE + 1), "train")


def test_dataset_items_collate_into_batches():
    cfg = DataConfig(height=24, width=40, num_frames=5, num_sprites=3, num_train=6)
    ds = build_dataset(cfg, "train")
    item = ds[2]
    assert set(item) == {"video", "caption", "index", "seed", "gt"} and item["index"] == 2
    assert torch.equal(ds[-1]["video"], ds[5]["video"])
    with pytest.raises(IndexError):
        ds[6]
    batch = collate([ds[i] for i in range(4)])
    assert batch["video"].shape == (4, 5, 3, 24, 40) and len(batch["caption"]) == 4
    assert batch["gt"]["positions"].shape == (4, 5, 3, 2)
    assert batch["gt"]["colors"].shape == (4, 3, 3)
    with pytest.raises(ValueError, match="split"):
        check_split("validation")
    assert describe_dataset(ds)["num_clips"] == 6


def test_render_is_fast():
    def median_ms(t, h, w):
        times = []
        for seed in range(7):
            start = time.perf_counter()
            render_clip(seed, h, w, t, 2, True)
            times.append(time.perf_counter() - start)
        return 1000 * sorted(times)[3]

    assert median_ms(8, 32, 32) < 20 and median_ms(16, 64, 64) < 50


# ----------------------------------------------------------------------------- video folder


@pytest.fixture
def video_dir(tmp_path):
    _write_video(tmp_path / "my_clip-one.mp4", "libx264", 30)
    _write_video(tmp_path / "second.clip.webm", "libvpx", 30)
    _write_video(tmp_path / "short.mp4", "mpeg4", 4)
    rng = np.random.default_rng(0)
    (tmp_path / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "empty.webm").write_bytes(b"")
    return tmp_path


def test_folder_reads_mp4_and_webm_and_skips_bad_files(video_dir):
    cfg = DataConfig(source="folder", folder=str(video_dir), height=FRAME_H, width=FRAME_W,
                     num_frames=6, frame_stride=2)
    ds = VideoFolder(cfg, "val")
    assert sorted(Path(p).name for p, _ in ds.skipped) == ["corrupt.mp4", "empty.webm", "short.mp4"]
    reasons = dict((Path(p).name, r) for p, r in ds.skipped)
    assert "too short" in reasons["short.mp4"] and "empty" in reasons["empty.webm"]
    assert len(ds) == 2 and len(VideoFolder(cfg, "train")) == 2  # < 20 files: all in every split
    assert describe_dataset(ds)["num_skipped"] == 3
    captions = sorted(ds[i]["caption"] for i in range(len(ds)))
    assert captions == ["my clip one", "second clip"]
    for i in range(len(ds)):
        item = ds[i]
        assert item["video"].shape == (6, 3, FRAME_H, FRAME_W) and item["gt"] == {}
        assert 0.0 <= item["video"].min() and item["video"].max() <= 1.0
        assert [_read_index(f) for f in item["video"]] == [0, 2, 4, 6, 8, 10]  # val: first clip


def test_folder_resizes_and_crops_to_non_square_target(video_dir):
    cfg = DataConfig(source="folder", folder=str(video_dir), height=20, width=36, num_frames=3)
    video = build_dataset(cfg, "test")[0]["video"]
    assert video.shape == (3, 3, 20, 36) and 0.0 <= video.min() and video.max() <= 1.0


def test_folder_train_clips_are_deterministic_and_seek_correctly(tmp_path):
    _write_video(tmp_path / "long.mp4", "libx264", 120)
    cfg = DataConfig(source="folder", folder=str(tmp_path), height=24, width=32, num_frames=4,
                     frame_stride=3, num_train=1)
    native = DataConfig(source="folder", folder=str(tmp_path), height=FRAME_H, width=FRAME_W,
                        num_frames=4, frame_stride=3)
    a, b = VideoFolder(cfg, "train", seed=3)[0], VideoFolder(cfg, "train", seed=3)[0]
    assert torch.equal(a["video"], b["video"])
    starts = set()
    for seed in range(12):
        indices = [_read_index(f) for f in VideoFolder(native, "train", seed=seed)[0]["video"]]
        assert indices == [indices[0] + 3 * k for k in range(4)], indices
        starts.add(indices[0])
    assert len(starts) > 3 and max(starts) >= SEEK_MIN_FRAMES  # the seeking path was used


def test_folder_splits_by_name_hash_when_many_files(tmp_path):
    for i in range(24):
        _write_video(tmp_path / f"clip_{i:02d}.mp4", "mpeg4", 3)
    cfg = DataConfig(source="folder", folder=str(tmp_path), height=16, width=16, num_frames=2)
    names = {s: {Path(p).name for p in VideoFolder(cfg, s).files} for s in ("train", "val", "test")}
    assert names["val"] and names["test"] and len(names["train"]) >= 20
    assert sum(len(v) for v in names.values()) == 24
    assert not (names["train"] & names["val"] or names["train"] & names["test"]
                or names["val"] & names["test"])


def test_folder_errors_name_the_folder(tmp_path):
    cfg = DataConfig(source="folder", folder=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="nope"):
        VideoFolder(cfg, "train")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty_dir.*empty"):
        build_dataset(DataConfig(source="folder", folder=str(empty)), "train")
    (empty / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="no usable video.*junk.mp4"):
        build_dataset(DataConfig(source="folder", folder=str(empty)), "val")
