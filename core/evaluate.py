"""Held-out evaluation of a trained model: next-frame diffusion loss and simple video metrics.

- `heldout_loss`: the training objective on validation clips, with randomness drawn from fixed
  per-batch seeds so two models (or two runs) are scored on identical draws.
- `score_samples`: generate test clips from their first frame (and caption) and compare with the
  ground-truth continuation: per-frame MSE in pixel space and PSNR of the first generated frame.
  On the built-in sprites data it also scores the samples against their exact ground truth with
  the synthetic VBench-I2V-style metrics (`syn_*` keys, core/metrics/synthetic.py) and with
  `dist_energy`, a distribution-level distance that does not reward low-variance samples
  (core/metrics/distribution.py).
- `sample_spread`: several samples per test clip; the per-pixel spread across them (a sampler
  that under-disperses scores lower; eval.spread_samples turns it on in a harness run).
- `score_baseline`: trivial baselines (`copy`: the conditioning frame repeated) scored by the same
  code: both are video producers handed to `produce_and_score`, which calls `score_videos`.
The proxy and official VBench-I2V backends live in core/metrics/ and bench/.
"""

from __future__ import annotations

import math
import time
from typing import Callable, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from core.config import SamplerConfig
from core.metrics.distribution import KEY as DIST_KEY, dist_energy
from core.metrics.synthetic import clip_scores, mean_scores
from core.sampler import device_generator, sample_latents
from core.synthetic import render_clip

EVAL_SEED_OFFSET = 1_000_003  # keeps evaluation draws apart from training draws of the same seed
SPREAD_SEED_STRIDE = 7_919  # sample_spread's k-th draw: apart from score_samples' own draws


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


# A video producer: (clips (B, T, C, H, W) in [0, 1] with their conditioning frames first,
# captions, frames to produce) -> videos (B, frames, C, H, W), conditioning frames included.
Producer = Callable[[torch.Tensor, List[str], int], torch.Tensor]


def copy_producer(num_cond: int) -> Producer:
    """The `copy` baseline: the last conditioning frame repeated for every generated frame.

    Pixel frames as given (no tokenizer round trip); needs no model and no randomness.
    """
    def produce(video: torch.Tensor, captions: List[str], frames: int) -> torch.Tensor:
        cond = video[:, :num_cond]
        held = cond[:, -1:].expand(-1, frames - num_cond, -1, -1, -1)
        return torch.cat([cond, held], dim=1)
    return produce


BASELINES = {"copy": copy_producer}  # name -> (num_cond) -> Producer


def model_producer(model, sampler: SamplerConfig, generator: torch.Generator) -> Producer:
    """Videos sampled by `model` from the tokenized conditioning frames (core/sampler.py)."""
    num_cond = model.cfg.num_cond_frames
    device = model.mask_token.device

    def produce(video: torch.Tensor, captions: List[str], frames: int) -> torch.Tensor:
        tok = model.tokenizer  # num_cond latent frames; `frames` pixel frames
        cond = tok.encode(video[:, :tok.pixel_frames(num_cond)].to(device))
        latents = sample_latents(model, cond, tok.latent_frames(frames), sampler, generator,
                                 captions)
        return model.tokenizer.decode(latents)
    return produce


@torch.no_grad()
def produce_and_score(produce: Producer, dataset: Dataset, *, num_clips: int, num_cond: int,
                      num_frames: Optional[int] = None, batch_size: int = 8) -> dict:
    """Run `produce` on the first `num_clips` clips of `dataset` and score what it made.

    The one evaluation path for models and baselines: batches of `batch_size` clips in dataset
    order, `produce(clips, captions, frames)` timed (`sample_time_s`), then `score_videos`.
    Returns the scores plus the videos (B, T, C, H, W) on the CPU under "videos".
    """
    videos, truths, seeds, sample_time, count = [], [], [], 0.0, 0
    for batch in _batches(dataset, batch_size):
        if count >= num_clips:
            break
        video = batch["video"][: num_clips - count]  # (B, T, C, H, W)
        captions = list(batch["caption"][: video.shape[0]])
        frames = num_frames or video.shape[1]
        start = time.perf_counter()
        generated = produce(video, captions, frames)
        sample_time += time.perf_counter() - start
        videos.append(generated.detach().float().cpu())
        truths.append(video.float().cpu())
        if "seed" in batch:
            seeds.extend(int(s) for s in batch["seed"][: video.shape[0]])
        count += video.shape[0]
    if count == 0:
        raise ValueError("score_samples: the test split is empty")
    videos = torch.cat(videos)
    scores = score_videos(videos, torch.cat(truths), num_cond=num_cond, dataset=dataset,
                          seeds=seeds or None)
    return {**scores, "sample_time_s": sample_time, "videos": videos}


def score_videos(videos: torch.Tensor, truth: torch.Tensor, *, num_cond: int,
                 dataset: Optional[Dataset] = None, seeds: Optional[List[int]] = None) -> dict:
    """Score produced videos (B, T, C, H, W) against the test clips `truth` (B, T', C, H, W).

    Per-frame MSE over the generated frames the truth covers (`mse_per_frame`, mean over clips),
    its mean (`mse_mean`), PSNR of the first generated frame (`psnr_first`) and `num_clips`. On
    the built-in sprites data (`dataset` synthetic, `seeds` the clip seeds) each clip's truth is
    re-rendered from its seed at the produced frame count and resolution (a few ms per clip) and
    the `syn_*` metrics (core/metrics/synthetic.py) and `dist_energy` (core/metrics/
    distribution.py) are added.
    """
    frames = min(videos.shape[1], truth.shape[1])
    if frames <= num_cond:
        raise ValueError(f"score_videos: {frames} frames leave nothing generated after the "
                         f"{num_cond} conditioning frame(s)")
    err = (videos[:, num_cond:frames].float() - truth[:, num_cond:frames].float()) ** 2
    mse = err.mean(dim=(2, 3, 4)).mean(dim=0).tolist()  # (frames - num_cond,) mean over clips
    out = {"mse_per_frame": mse, "mse_mean": sum(mse) / len(mse), "psnr_first": psnr(mse[0]),
           "num_clips": int(videos.shape[0])}
    synthetic = _synthetic_truth(dataset) if dataset is not None else None
    if synthetic is not None and seeds is not None:
        num_sprites, camera_pan = synthetic
        _, t_gen, _, h_gen, w_gen = videos.shape
        per_clip, rendered, gts = [], [], []
        for clip, clip_seed in zip(videos, seeds):
            true_clip, _, gt = render_clip(int(clip_seed), h_gen, w_gen, t_gen, num_sprites,
                                           camera_pan)
            per_clip.append(clip_scores(clip, true_clip, gt, num_cond))
            rendered.append(true_clip)
            gts.append(gt)
        out.update(mean_scores(per_clip))
        out[DIST_KEY] = dist_energy(list(videos), rendered, gts, num_cond)
    return out


@torch.no_grad()
def score_samples(model, dataset: Dataset, *, num_clips: int, sampler: SamplerConfig,
                  num_frames: Optional[int] = None, batch_size: int = 8, seed: int = 0) -> dict:
    """Generate `num_clips` test clips from their first frames and score them against the truth.

    Returns per-frame MSE over generated frames (`mse_per_frame`), its mean (`mse_mean`), the
    PSNR of the first generated frame (`psnr_first`), sampling wall time, and the videos
    (B, T, C, H, W) under the key "videos" (not meant for the results table). On the synthetic
    data it adds the `syn_*` metrics and `dist_energy` (see `score_videos`). Baselines go through
    the same `produce_and_score` (see `score_baseline`).
    """
    was_training = model.training
    model.eval()
    generator = device_generator(model, EVAL_SEED_OFFSET + seed)
    try:
        return produce_and_score(model_producer(model, sampler, generator), dataset,
                                 num_clips=num_clips, num_cond=model.cfg.num_cond_frames,
                                 num_frames=num_frames, batch_size=batch_size)
    finally:
        model.train(was_training)


@torch.no_grad()
def sample_spread(model, dataset: Dataset, *, num_clips: int, sampler: SamplerConfig,
                  samples: int, num_frames: Optional[int] = None, batch_size: int = 8,
                  seed: int = 0) -> float:
    """How much the sampler varies its answer to one input: `samples` videos from each of the
    first `num_clips` clips' conditioning frames (independent generators), the per-pixel standard
    deviation across them over the generated frames, averaged. A few-step solver that
    under-disperses has a smaller spread than the chain it imitates, which pixel MSE to the one
    true future rewards and this shows (compare arms by their ratio to a reference arm)."""
    if samples < 2:
        raise ValueError(f"sample_spread needs samples >= 2, got {samples}")
    was_training = model.training
    model.eval()
    try:
        draws = []
        for k in range(samples):
            generator = device_generator(model, EVAL_SEED_OFFSET + seed + SPREAD_SEED_STRIDE * (k + 1))
            draws.append(produce_and_score(
                model_producer(model, sampler, generator), dataset, num_clips=num_clips,
                num_cond=model.cfg.num_cond_frames, num_frames=num_frames,
                batch_size=batch_size)["videos"])
    finally:
        model.train(was_training)
    first = model.tokenizer.pixel_frames(model.cfg.num_cond_frames)
    return float(torch.stack(draws)[:, :, first:].std(dim=0).mean())


@torch.no_grad()
def score_baseline(dataset: Dataset, *, num_clips: int, num_cond: int, baseline: str = "copy",
                   num_frames: Optional[int] = None, batch_size: int = 8) -> dict:
    """Score a trivial baseline (BASELINES, e.g. "copy") exactly as `score_samples` scores a model.

    Same clips, batches, metrics and output keys (videos included); no model, no sampling.
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline={baseline!r}: choose one of {sorted(BASELINES)}")
    return produce_and_score(BASELINES[baseline](num_cond), dataset, num_clips=num_clips,
                             num_cond=num_cond, num_frames=num_frames, batch_size=batch_size)
