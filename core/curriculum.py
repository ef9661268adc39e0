"""Training curricula: temporal short-to-long clips and spatial progressive resolution.

VideoMAR (arXiv 2506.14168: temporal short-to-long curriculum, spatial progressive resolution) trains on short clips
first and long ones later, and at low resolution first; the paper does not publish its stage lists.
Here a stage is (frames, height, width) of the pixel clips fed to the tokenizer, chosen from
`TrainConfig.frame_stages` / `res_stages` by training *progress* in [0, 1]: steps / train.steps,
or cumulative training FLOPs / train.flop_budget when a budget is set, so that a curriculum run and
a fixed run compared at equal compute move through their stages by compute, not by step count.

A clip is shortened by keeping its first n frames (the image-to-video conditioning frame is always
frame 0) and downsampled with area interpolation (box filter, so no aliasing), which works for any
data source. Milestones: stage i+1 begins at `milestones[i]`; empty = equal-length stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.nn.functional as F

from core.config import TrainConfig


@dataclass(frozen=True)
class Stage:
    frames: int
    height: int
    width: int

    def as_dict(self) -> dict:
        return {"frames": self.frames, "height": self.height, "width": self.width}


def _index(progress: float, num_stages: int, milestones: Sequence[float]) -> int:
    """Stage index at `progress` in [0, 1] for `num_stages` stages split at `milestones`."""
    if num_stages <= 1:
        return 0
    bounds = list(milestones) or [i / num_stages for i in range(1, num_stages)]
    return sum(progress >= b for b in bounds)


class Curriculum:
    """Which clip shape to train on at a given progress, and how to cut a batch to it."""

    def __init__(self, cfg: TrainConfig, num_frames: int, height: int, width: int):
        """Stages for clips of the data's full shape (num_frames, height, width)."""
        self.frame_stages: List[int] = list(cfg.frame_stages) or [num_frames]
        self.res_stages: List[int] = list(cfg.res_stages) or [height]
        self.frame_milestones = list(cfg.frame_milestones)
        self.res_milestones = list(cfg.res_milestones)
        self.height, self.width = height, width

    def stage_at(self, progress: float) -> Stage:
        frames = self.frame_stages[_index(progress, len(self.frame_stages), self.frame_milestones)]
        height = self.res_stages[_index(progress, len(self.res_stages), self.res_milestones)]
        return Stage(frames, height, self.width * height // self.height)

    @staticmethod
    def apply(video: torch.Tensor, stage: Stage) -> torch.Tensor:
        """Cut a batch (B, T, C, H, W) to the stage: first `frames` frames, area-resized."""
        video = video[:, : stage.frames]
        b, t, c, h, w = video.shape
        if (h, w) == (stage.height, stage.width):
            return video
        if stage.height > h or stage.width > w:
            raise ValueError(f"curriculum stage {stage.height}x{stage.width} is larger than the "
                             f"data's {h}x{w} frames; stages may only downsample")
        small = F.interpolate(video.reshape(b * t, c, h, w), size=(stage.height, stage.width),
                              mode="area")
        return small.reshape(b, t, c, stage.height, stage.width)
