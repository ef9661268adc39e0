"""SUN testbed evaluation: held-out prompt suites, the methods compared, and their metrics.

Mirrors SUN's evaluation (arXiv 2312.08887, sec. 4) at testbed scale. Two suites per seed, both
built only from held-out combinations (never seen by the adapter):
- prompt suite: full positive captions; negatives empty for half, a non-contradicting attribute
  for the other half. Gives same-noise fidelity to the reference (the domain's teacher, 25-step
  DPM-Solver++ with CFG), Frechet distances in the classifier's feature space to real images of
  the same captions and to an independent-noise teacher sample set (the paper's "FID before vs
  after acceleration"; the reference row then shows the noise floor) and attribute accuracy.
  Wall-clock is measured apart, in interleaved rounds (bench/sun.py with bench/timing.py).
- negative suite: the positive leaves out shape or colour, the negative names one value of it.
  neg_hit = how often the negated value still appears (lower is better); neg_hit_empty is the
  same prompts with an empty negative (about chance when the negative is ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.sun import adapter as sun_adapter
from core.sun import classifier as sun_classifier
from core.sun import teacher as sun_teacher
from core.sun import testbed

NEGATED_SLOTS = (0, 1)  # shape, colour: the attributes negative prompts remove
Sampler = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Suites:
    labels: torch.Tensor  # (Na, 4) full held-out captions of the prompt suite
    neg: torch.Tensor  # (Na, 4) its negatives
    noise: torch.Tensor  # (Na, 3, H, W)
    noise_indep: torch.Tensor  # (Na, 3, H, W): the independent reference set for FD-to-teacher
    neg_pos: torch.Tensor  # (Nb, 4) negative suite positives (one of shape/colour absent)
    neg_neg: torch.Tensor  # (Nb, 4) negative suite negatives (that one attribute)
    neg_slot: torch.Tensor  # (Nb,) which slot is negated
    neg_noise: torch.Tensor  # (Nb, 3, H, W)


def make_suites(held_out: torch.Tensor, num_prompt: int, num_negative: int,
                generator: torch.Generator) -> Suites:
    """Both evaluation suites from the held-out full captions (C, 4)."""
    size = (3, testbed.IMAGE_SIZE, testbed.IMAGE_SIZE)
    labels = testbed.sample_captions(held_out, num_prompt, generator)
    other = testbed.sample_captions(testbed.all_combinations(), num_prompt, generator)
    slot = torch.randint(len(testbed.ATTRIBUTES), (num_prompt,), generator=generator)
    neg = testbed.empty_captions(num_prompt)
    rows = torch.arange(num_prompt)
    ok = (other[rows, slot] != labels[rows, slot]) & (rows % 2 == 1)  # half keep empty negatives
    neg[rows[ok], slot[ok]] = other[rows[ok], slot[ok]]
    base = testbed.sample_captions(held_out, num_negative, generator)
    neg_slot = torch.tensor(NEGATED_SLOTS)[torch.randint(len(NEGATED_SLOTS), (num_negative,),
                                                         generator=generator)]
    r = torch.arange(num_negative)
    neg_pos = base.clone()
    neg_pos[r, neg_slot] = testbed.ABSENT
    neg_neg = testbed.empty_captions(num_negative)
    num_values = torch.tensor(testbed.NUM_VALUES)[neg_slot]
    neg_neg[r, neg_slot] = (torch.rand(num_negative, generator=generator) * num_values).long()
    return Suites(labels, neg, torch.randn(num_prompt, *size, generator=generator),
                  torch.randn(num_prompt, *size, generator=generator), neg_pos, neg_neg, neg_slot,
                  torch.randn(num_negative, *size, generator=generator))


# ----------------------------------------------------------------------------- methods


def teacher_cfg_sampler(unet, steps: int, guidance: float) -> Sampler:
    """Teacher with CFG; the negative prompt is the unconditional branch. 2 NFE per step."""
    return lambda pos, neg, noise: sun_teacher.dpm_sample(
        sun_teacher.guided_eps_fn(unet, pos, neg, guidance), noise, steps)[0]


def teacher_plain_sampler(unet, steps: int) -> Sampler:
    """Teacher without CFG: the negative prompt is ignored. 1 NFE per step."""
    return lambda pos, neg, noise: sun_teacher.dpm_sample(
        sun_teacher.plain_eps_fn(unet, pos), noise, steps)[0]


def sun_sampler(unet, steps: int) -> Sampler:
    """A UNet with SUN installed: one pass per step on [positive | negative]."""
    return lambda pos, neg, noise: sun_teacher.dpm_sample(
        sun_teacher.plain_eps_fn(unet, sun_adapter.joint_context(pos, neg)), noise, steps)[0]


@torch.no_grad()
def generate(sampler: Sampler, encoder, pos: torch.Tensor, neg: torch.Tensor,
             noise: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1], sampled in chunks of `chunk` prompts."""
    pos_ctx, neg_ctx = encoder(pos), encoder(neg)
    out = [sampler(pos_ctx[i:i + chunk], neg_ctx[i:i + chunk], noise[i:i + chunk]).clamp(-1, 1)
           for i in range(0, noise.shape[0], chunk)]
    return torch.cat(out)


# ----------------------------------------------------------------------------- metrics


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean per-image PSNR (dB) on the [0, 1] scale of images in [-1, 1]."""
    mse = ((images - reference) / 2).square().flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1 / mse)).mean().item()


def negative_hit_rate(clf, images: torch.Tensor, neg: torch.Tensor, slot: torch.Tensor) -> float:
    """Fraction of images showing the negated value of their negated slot."""
    pred = clf.predict(images)
    r = torch.arange(images.shape[0])
    return (pred[r, slot] == neg[r, slot]).float().mean().item()


def prompt_metrics(clf, images: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor,
                   real: torch.Tensor, teacher_indep: torch.Tensor) -> dict[str, float]:
    """Fidelity, distribution and alignment metrics of one method on the prompt suite."""
    feats = clf.features(images)
    return {
        "psnr_vs_ref": psnr(images, reference),
        "mse_vs_ref": ((images - reference) / 2).square().mean().item(),
        "feat_l2_vs_ref": (feats - clf.features(reference)).norm(dim=1).mean().item(),
        "fd_real": sun_classifier.frechet_distance(feats, clf.features(real)),
        "fd_teacher": sun_classifier.frechet_distance(feats, clf.features(teacher_indep)),
        "attr_acc": sun_classifier.accuracy(clf, images, labels),
    }
