"""A dataset over a folder of real videos (mp4, webm and anything else PyAV decodes).

Construction scans the folder once (recursively, hidden files and folders ignored) and reads only
container metadata, the first frame and the packet index of the file's tail; files that are empty,
cannot be opened or decoded (random bytes, a codec FFmpeg has no decoder for), have no video
stream, end well before the frame count their container promises (truncated copies), or are
shorter than the clip span (num_frames - 1) * frame_stride + 1 frames are left out and listed with
the reason in `VideoFolder.skipped` (`core.data.write_data_report` saves that list next to a run).
An empty folder, or one without a usable video, is an error at construction, before any training.
Probe results are cached per (path, size, mtime), so building the train/val/test datasets scans
each file once. A file that still fails to decode while training raises a RuntimeError naming it.

Splits: files are ordered by the SHA-1 of their path relative to the folder; the first 5% (at least
one file) are val, the next 5% (at least one) test, the rest train. The order depends only on the
names, so a file keeps its split when the folder moves. With fewer than `MIN_FILES_TO_SPLIT`
usable files every split uses all files (a tiny folder is a smoke test, not a benchmark).

Items: a clip of num_frames frames, every frame_stride-th decoded frame, starting at frame 0 for
val/test and at a start drawn from numpy Generator([seed, index]) for train. Frames are resized so
that the video covers the target (the shorter side relative to the target aspect becomes the target
size; torch bilinear with antialias) and then cropped to height x width: a centre crop, except for
train with `random_crop` (default True), where the crop position comes from the same generator.
Decoding seeks close to the start frame for long videos and stops as soon as the last needed frame
is read. The caption
is the file stem with separators replaced by spaces; `gt` is empty.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from core.config import DataConfig
from core.synthetic import SPLITS

MIN_FILES_TO_SPLIT = 20
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
DEFAULT_FPS = 25.0  # when a stream reports no frame rate at all
SEEK_MIN_FRAMES = 48  # decode from the beginning below this start frame, seek above it
RESIZE_CHUNK = 4  # frames converted to float and resized at a time (bounds peak memory)
PIXEL_MAX = 255.0
# A stream whose last packet lies more than this many frames (or this fraction of the promised
# count) before the end its container promises is treated as truncated; smaller gaps are rounding
# in frame-rate estimates, and the usable count is clipped to what is really there.
TRUNCATION_SLACK_FRAMES = 2
TRUNCATION_SLACK_FRACTION = 0.02
_PROBE_CACHE: Dict[Tuple[str, int, int], Tuple[int, str]] = {}


class _SeekFailed(Exception):
    """A seek landed after the wanted frame or frames lack timestamps: decode from the start."""


def _fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


def _start_seconds(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _probe(path: Path) -> Tuple[int, str]:
    """(frame count, "") for a usable video, or (0, reason) when it cannot be opened or decoded."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    result = _probe_uncached(path) if stat.st_size > 0 else (0, "empty file (0 bytes)")
    _PROBE_CACHE[key] = result
    return result


def _last_packet_index(path: Path, count: int) -> int:
    """Frame index of the last video packet, found by seeking near frame `count` - 1 and demuxing
    (no decoding) to the end; -1 when nothing is found there."""
    last = -1
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps, t0, base = _fps(stream), _start_seconds(stream), stream.time_base
        if base is None:
            return -1
        target = max(0.0, t0 + (count - 1) / fps)
        try:
            container.seek(int(target / base), stream=stream, backward=True, any_frame=False)
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    last = max(last, int(round((float(packet.pts * base) - t0) * fps)))
        except av.FFmpegError:  # a cut-off file may end in a damaged packet: keep what was read
            pass
    return last


def _probe_uncached(path: Path) -> Tuple[int, str]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0, "no video stream"
            stream = container.streams.video[0]
            if stream.frames and stream.frames > 0:
                count = int(stream.frames)
            elif stream.duration is not None and stream.time_base is not None:
                count = int(round(float(stream.duration * stream.time_base) * _fps(stream)))
            elif container.duration is not None:
                count = int(round(container.duration / av.time_base * _fps(stream)))
            else:
                count = -1  # unknown: count packets below
            if next(iter(container.decode(stream)), None) is None:
                return 0, "no decodable video frame"
        if count < 0:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                count = sum(1 for packet in container.demux(stream) if packet.size)
            return count, ""
        # The container's frame count comes from its header; a copy cut short keeps the header.
        last = _last_packet_index(path, count)
        slack = max(TRUNCATION_SLACK_FRAMES, int(TRUNCATION_SLACK_FRACTION * count))
        if last + 1 < count - slack:
            return 0, (f"truncated: the container promises {count} frames but the video stream "
                       f"ends after about {last + 1} (an incomplete copy? re-download or remove "
                       "it)")
        return min(count, last + 1), ""
    except av.DecoderNotFoundError as err:
        return 0, f"unsupported codec (this FFmpeg build has no decoder for it): {err}"
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        return 0, f"cannot open or decode: {type(err).__name__}: {err}"


def _decode(path: Path, indices: List[int], allow_seek: bool) -> Tuple[List[np.ndarray], int]:
    """Decode the frames at sorted `indices` as (H,W,3) uint8; also return the last index seen."""
    wanted, last, got, seen, size = set(indices), indices[-1], {}, -1, None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps, t0 = _fps(stream), _start_seconds(stream)
        by_time = allow_seek and indices[0] >= SEEK_MIN_FRAMES and stream.time_base is not None
        if by_time:
            target = int((t0 + indices[0] / fps) / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
        for count, frame in enumerate(container.decode(stream)):
            if by_time:
                if frame.time is None:
                    raise _SeekFailed
                idx = int(round((frame.time - t0) * fps))
                if count == 0 and idx > indices[0]:
                    raise _SeekFailed
            else:
                idx = count
            seen = max(seen, idx)
            if idx in wanted and idx not in got:
                size = size or (frame.width, frame.height)  # a mid-stream size change is undone
                rgb = frame.reformat(width=size[0], height=size[1], format="rgb24")
                got[idx] = rgb.to_ndarray()
            if idx >= last:
                break
    return [got[i] for i in indices if i in got], seen


def _read_frames(path: Path, indices: List[int]) -> Tuple[List[np.ndarray], int]:
    try:
        return _decode(path, indices, allow_seek=True)
    except _SeekFailed:
        return _decode(path, indices, allow_seek=False)


def _caption_from_name(path: Path) -> str:
    return " ".join(re.sub(r"[_\-.+]+", " ", path.stem).split())


def _split_files(files: List[Path], root: Path, split: str) -> List[Path]:
    """The files of `split`: ordered by SHA-1 of the relative path, val and test first."""
    if len(files) < MIN_FILES_TO_SPLIT:
        return list(files)
    ranked = sorted(files, key=lambda p: hashlib.sha1(
        p.relative_to(root).as_posix().encode("utf-8")).hexdigest())
    num_val = max(1, int(round(VAL_FRACTION * len(files))))
    num_test = max(1, int(round(TEST_FRACTION * len(files))))
    chosen = {"val": ranked[:num_val], "test": ranked[num_val:num_val + num_test],
              "train": ranked[num_val + num_test:]}[split]
    return sorted(chosen)


class VideoFolder(Dataset):
    """Clips from the usable videos of one split of cfg.folder; see the module docstring."""

    def __init__(self, cfg: DataConfig, split: str = "train", seed: int = 0,
                 random_crop: Optional[bool] = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose one of {SPLITS}")
        if seed < 0:
            raise ValueError(f"seed={seed} must be >= 0 (it seeds numpy Generators)")
        if cfg.frame_stride < 1 or cfg.height < 1 or cfg.width < 1:
            raise ValueError(f"data.frame_stride={cfg.frame_stride}, data.height={cfg.height} and "
                             f"data.width={cfg.width} must all be >= 1")
        self.cfg, self.split, self.seed = cfg, split, seed
        self.random_crop = (split == "train") if random_crop is None else random_crop
        self.span = (cfg.num_frames - 1) * cfg.frame_stride + 1
        self.root = Path(cfg.folder or "").expanduser()
        if not cfg.folder or not self.root.is_dir():
            raise FileNotFoundError(f"video folder {str(self.root)!r} does not exist: set "
                                    "data.folder to a directory of mp4/webm files")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(self.root).parts))
        if not files:
            raise FileNotFoundError(f"video folder {str(self.root)!r} is empty: put mp4/webm "
                                    "files in it")
        self.skipped: List[Tuple[str, str]] = []
        usable: Dict[Path, int] = {}
        for path in files:
            count, reason = _probe(path)
            if not reason and count < self.span:
                reason = (f"too short: {count} frames, a clip of {cfg.num_frames} frames at "
                          f"stride {cfg.frame_stride} needs {self.span}")
            if reason:
                self.skipped.append((str(path), reason))
            else:
                usable[path] = count
        if not usable:
            listing = "; ".join(f"{Path(p).name}: {r}" for p, r in self.skipped[:5])
            raise ValueError(f"video folder {str(self.root)!r} has no usable video among "
                             f"{len(files)} files ({listing}{'; ...' if len(files) > 5 else ''})")
        self.files = _split_files(sorted(usable), self.root, split)
        self.num_frames_per_file = [usable[p] for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def _resize_crop(self, frames: List[np.ndarray], rng: Optional[np.random.Generator]
                     ) -> torch.Tensor:
        """Cover-resize and crop uint8 frames (H,W,3) to video (T,3,height,width) in [0,1]."""
        th, tw = self.cfg.height, self.cfg.width
        h, w = frames[0].shape[:2]
        raw = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # (T, 3, h, w) uint8
        scale = max(th / h, tw / w)
        size = (max(th, int(round(h * scale))), max(tw, int(round(w * scale))))
        chunks = []
        for chunk in raw.split(RESIZE_CHUNK):
            chunk = chunk.float() / PIXEL_MAX
            if size != (h, w):
                chunk = F.interpolate(chunk, size=size, mode="bilinear", antialias=True,
                                      align_corners=False)
            chunks.append(chunk)
        video = torch.cat(chunks).clamp(0.0, 1.0)
        if rng is not None:
            top = int(rng.integers(0, size[0] - th + 1))
            left = int(rng.integers(0, size[1] - tw + 1))
        else:
            top, left = (size[0] - th) // 2, (size[1] - tw) // 2
        return video[:, :, top:top + th, left:left + tw].contiguous()

    def __getitem__(self, index: int) -> Dict[str, object]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for the {len(self)} {self.split} videos")
        path, total = self.files[index], self.num_frames_per_file[index]
        stride, num = self.cfg.frame_stride, self.cfg.num_frames
        rng = np.random.default_rng([self.seed, index]) if self.split == "train" else None
        start = int(rng.integers(0, total - self.span + 1)) if rng is not None else 0
        try:
            frames, seen = _read_frames(path, [start + k * stride for k in range(num)])
            if len(frames) < num:  # the metadata overstated the length: take the last full clip
                start = max(0, seen + 1 - self.span)
                frames, seen = _read_frames(path, [start + k * stride for k in range(num)])
        except (av.FFmpegError, OSError) as err:
            raise RuntimeError(f"{path}: decoding frames {start}..{start + self.span - 1} failed "
                               f"({type(err).__name__}: {err}) although the file passed the scan; "
                               "re-encode or remove it") from err
        if len(frames) < num:
            raise RuntimeError(f"{path}: decoded only {seen + 1} frames, fewer than the "
                               f"{self.span} a clip needs although its metadata promised more; "
                               "re-encode or remove the file")
        video = self._resize_crop(frames, rng if self.random_crop else None)
        return {"video": video, "caption": _caption_from_name(path), "index": index,
                "seed": self.seed, "gt": {}}
