"""Held-out evaluation of a trained model: next-frame diffusion loss and simple video metrics.

- `heldout_loss`: the training objective on validation clips, with randomness drawn from fixed
  per-batch seeds so two models (or two runs) are scored on identical draws.
- `score_samples`: generate test clips from their first frame (and caption) and compare with the
  ground-truth continuation: per-frame MSE in pixel space and PSNR of the first generated frame.
  On the built-in sprites data it also scores the samples against their exact ground truth with
  the synthetic VBench-I2V-style metrics (`syn_*` keys, core/metrics/synthetic.py).
The proxy and official VBench-I2V backends live in core/metrics/ and bench/.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset

from core.config import SamplerConfig
from core.metrics.synthetic import clip_scores, mean_scores
from core.sampler import sample_latents
from core.synthetic import render_clip

EVAL_SEED_OFFSET = 1_000_003  # keeps evaluation draws apart from training draws of the same seed


def _batches(dataset: Dataset, batch_size: int, num_batches: Optional[int] = None):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for i, batch in enumerate(loader):
        if num_batches is not None and i >= num_batches:
            break
        yield batch


@torch.no_grad()
def heldout_loss(model, dataset: Dataset, *, batch_size: int, num_batches: int, seed: int = 0) -> float:
    """Mean next-frame diffusion loss over `num_batches` validation batches (fixed draws)."""
    device = model.mask_token.device
    was_training = model.training
    model.eval()
    losses = []
    for i, batch in enumerate(_batches(dataset, batch_size, num_batches)):
        tokens = model.tokenizer.encode(batch["video"].to(device))
        generator = torch.Generator().manual_seed(EVAL_SEED_OFFSET + 1000 * seed + i)
        losses.append(float(model.loss(tokens, batch["caption"], generator)))
    model.train(was_training)
    if not losses:
        raise ValueError("heldout_loss: the validation split is empty")
    return sum(losses) / len(losses)


def _synthetic_truth(dataset: Dataset):
    """(num_sprites, camera_pan) when `dataset` is the built-in sprites data, else None."""
    cfg = getattr(dataset, "cfg", None)
    if getattr(cfg, "source", None) == "synthetic" and hasattr(dataset, "clip_seed"):
        return cfg.num_sprites, cfg.camera_pan
    return None


def psnr(mse: float) -> float:
    """PSNR in dB for images in [0, 1]."""
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def score_samples(model, dataset: Dataset, *, num_clips: int, sampler: SamplerConfig,
                  num_frames: Optional[int] = None, batch_size: int = 8, seed: int = 0) -> dict:
    """Generate `num_clips` test clips from their first frames and score them against the truth.

    Returns per-frame MSE over generated frames (`mse_per_frame`), its mean (`mse_mean`), the
    PSNR of the first generated frame (`psnr_first`), sampling wall time, and the videos
    (B, T, C, H, W) under the key "videos" (not meant for the results table). On the synthetic
    data it adds the `syn_*` metrics (core/metrics/synthetic.py): each clip's truth is re-rendered
    from its seed at the generated frame count and resolution (a few ms per clip).
    """
    device = model.mask_token.device
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(EVAL_SEED_OFFSET + seed)
    num_cond = model.cfg.num_cond_frames
    squared, count, videos, sample_time = None, 0, [], 0.0
    synthetic, per_clip = _synthetic_truth(dataset), []
    for batch in _batches(dataset, batch_size):
        if count >= num_clips:
            break
        video = batch["video"][: num_clips - count].to(device)  # (B, T, C, H, W)
        captions = list(batch["caption"][: video.shape[0]])
        frames = num_frames or video.shape[1]
        start = time.perf_counter()
        cond = model.tokenizer.encode(video[:, :num_cond])
        latents = sample_latents(model, cond, frames, sampler, generator, captions)
        generated = model.tokenizer.decode(latents)
        sample_time += time.perf_counter() - start
        truth_frames = min(frames, video.shape[1])
        err = (generated[:, num_cond:truth_frames] - video[:, num_cond:truth_frames]) ** 2
        per_frame = err.mean(dim=(2, 3, 4)).sum(dim=0)  # (frames,) summed over clips
        squared = per_frame if squared is None else squared + per_frame
        count += video.shape[0]
        videos.append(generated.cpu())
        if synthetic is not None:
            num_sprites, camera_pan = synthetic
            _, t_gen, _, h_gen, w_gen = generated.shape
            for clip, clip_seed in zip(generated.cpu(), batch["seed"][: video.shape[0]].tolist()):
                truth, _, gt = render_clip(int(clip_seed), h_gen, w_gen, t_gen, num_sprites,
                                           camera_pan)
                per_clip.append(clip_scores(clip, truth, gt, num_cond))
    model.train(was_training)
    if count == 0:
        raise ValueError("score_samples: the test split is empty")
    mse = (squared / count).tolist()
    out = {"mse_per_frame": mse, "mse_mean": sum(mse) / len(mse), "psnr_first": psnr(mse[0]),
           "sample_time_s": sample_time, "num_clips": count}
    if per_clip:
        out.update(mean_scores(per_clip))
    return {**out, "videos": torch.cat(videos)}
