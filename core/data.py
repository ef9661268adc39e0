"""Dataset entry point: pick the procedural sprites or a folder of real videos from a DataConfig.

Every dataset item is a dict with the same keys, so training and evaluation code never branch on
the source:

    video   (T, 3, H, W) float32 in [0, 1]
    caption str
    index   int   position in the split
    seed    int   synthetic: the clip's render seed; folder: the run seed used for random choices
    gt      dict  synthetic: fixed-shape ground-truth tensors (see core/synthetic.py); folder: {}

`torch.utils.data.default_collate` batches these (videos stack to (B, T, 3, H, W), captions become
a list of B strings, gt tensors gain a leading batch dimension); `collate` is that function under a
name of this module so callers need one import.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from torch.utils.data import Dataset, default_collate

from core.config import DataConfig
from core.synthetic import SPLITS, SyntheticSprites
from core.video_folder import VideoFolder

__all__ = ["SPLITS", "build_dataset", "check_split", "collate", "describe_dataset",
           "write_data_report"]

DATA_REPORT_NAME = "skipped_videos.json"


def check_split(split: str) -> str:
    """Return `split` if it is one of SPLITS, else raise a ValueError naming the choices."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {SPLITS}")
    return split


def collate(items: List[Dict[str, object]]) -> Dict[str, object]:
    """Batch items: video (B,T,3,H,W), caption list[str], index/seed (B,), gt dict of (B,...)."""
    if not items:
        raise ValueError("collate got an empty list of items")
    return default_collate(items)


def build_dataset(cfg: DataConfig, split: str = "train", seed: int = 0) -> Dataset:
    """The `split` dataset of cfg.source ("synthetic" or "folder"); items as in the module doc."""
    check_split(split)
    if cfg.source == "synthetic":
        return SyntheticSprites(cfg, split, seed=seed)
    if cfg.source == "folder":
        return VideoFolder(cfg, split, seed=seed)
    raise ValueError(f"data.source={cfg.source!r}: choose 'synthetic' or 'folder'")


def describe_dataset(dataset: Dataset) -> Dict[str, object]:
    """A JSON-friendly summary for logs: source, split, clip count, clip shape, skipped files."""
    cfg: DataConfig = dataset.cfg
    info: Dict[str, object] = {
        "source": cfg.source, "split": dataset.split, "num_clips": len(dataset),
        "clip_shape": [cfg.num_frames, 3, cfg.height, cfg.width],
    }
    if isinstance(dataset, VideoFolder):
        skipped: Sequence = dataset.skipped
        info.update(folder=str(dataset.root), frame_stride=cfg.frame_stride,
                    num_skipped=len(skipped), skipped=[f"{p}: {r}" for p, r in skipped])
    else:
        info.update(num_sprites=cfg.num_sprites, camera_pan=cfg.camera_pan,
                    first_seed=dataset.clip_seed(0))
    return info


def write_data_report(dataset: Dataset, out_dir: str | Path) -> Optional[Path]:
    """Write out_dir/skipped_videos.json for a folder dataset; returns its path (None otherwise).

    The report lists every file the folder scan left out with its reason (corrupt, truncated,
    empty, too short, no video stream, unsupported codec), plus the folder, the clip span and how
    many files are used, so a run's outputs say which data it did not train on. Written atomically
    (temp file + rename); rewriting it for a resumed run gives the same content.
    """
    if not isinstance(dataset, VideoFolder):
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "folder": str(dataset.root), "split": dataset.split, "num_frames": dataset.cfg.num_frames,
        "frame_stride": dataset.cfg.frame_stride, "min_frames_needed": dataset.span,
        "num_used": len(dataset), "num_skipped": len(dataset.skipped),
        "skipped": [{"path": p, "reason": r} for p, r in dataset.skipped],
    }
    path = out / DATA_REPORT_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
