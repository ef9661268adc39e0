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
name of this module so callers need one import. `build_loader` adds a seeded shuffling generator.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from core.config import DataConfig
from core.synthetic import SPLITS, SyntheticSprites
from core.video_folder import VideoFolder

__all__ = ["SPLITS", "build_dataset", "build_loader", "check_split", "collate", "describe_dataset",
           "fixed_batch", "infinite_batches"]


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


def build_loader(cfg: DataConfig, split: str = "train", batch_size: int = 8, seed: int = 0,
                 shuffle: Optional[bool] = None, num_workers: int = 0,
                 drop_last: Optional[bool] = None) -> DataLoader:
    """A DataLoader over build_dataset(cfg, split, seed); train shuffles with a `seed` generator."""
    dataset = build_dataset(cfg, split, seed)
    shuffle = (split == "train") if shuffle is None else shuffle
    if drop_last is None:
        drop_last = split == "train" and len(dataset) >= batch_size
    if len(dataset) == 0:
        raise ValueError(f"the {split} split of data.source={cfg.source} is empty: raise "
                         f"data.num_{split} (synthetic) or add videos (folder)")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, collate_fn=collate, generator=generator,
                      persistent_workers=num_workers > 0)


def infinite_batches(loader: DataLoader) -> Iterator[Dict[str, object]]:
    """Yield batches forever, starting a new (reshuffled) epoch whenever the loader is exhausted."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batches (dataset smaller than the batch size "
                             "with drop_last=True): lower the batch size or add clips")


def fixed_batch(dataset: Dataset, num: int, start: int = 0) -> Dict[str, object]:
    """Items start..start+num-1 of `dataset` collated (video (num,T,3,H,W)): a fixed eval batch."""
    if num < 1 or start < 0 or start + num > len(dataset):
        raise ValueError(f"fixed_batch: items {start}..{start + num - 1} do not fit a dataset of "
                         f"{len(dataset)} items: lower num or start")
    return collate([dataset[i] for i in range(start, start + num)])


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
