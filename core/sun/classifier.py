"""Attribute classifier: the evaluation-only "Inception + CLIP" stand-in of the SUN testbed.

A small CNN trained on freshly rendered images of both styles with the generator's own labels;
it never sees diffusion samples and shares nothing with the teacher (reference sec. 7.5: FD
features must not come from the teacher). Its penultimate features give the Frechet distance;
its four heads give attribute accuracy and negative-prompt compliance.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.sun import testbed

FEATURE_DIM = 64


class AttributeClassifier(nn.Module):
    """(B, 3, 16, 16) in [-1, 1] -> features (B, 64) and one logit vector per attribute."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 4x4
            nn.Flatten(), nn.Linear(2 * width * 16, FEATURE_DIM), nn.GELU())
        self.heads = nn.ModuleList(nn.Linear(FEATURE_DIM, n) for n in testbed.NUM_VALUES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        h = self.features(images)
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted attribute values (B, 4)."""
        return torch.stack([logits.argmax(-1) for logits in self(images.clamp(-1, 1))], dim=1)


def train_classifier(num_steps: int, generator: torch.Generator, batch_size: int = 128,
                     lr: float = 2e-3, log: Callable[[str], None] = print) -> AttributeClassifier:
    """Train on rendered images of both styles and all combinations; returns it frozen, in eval."""
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=generator)))
        model = AttributeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    combos = testbed.all_combinations()
    for step in range(num_steps):
        labels = testbed.sample_captions(combos, batch_size, generator)
        half = batch_size // 2
        images = torch.cat([testbed.render(labels[:half], generator, "base"),
                            testbed.render(labels[half:], generator, "stripes")])
        loss = sum(F.cross_entropy(lg, labels[:, i]) for i, lg in enumerate(model(images)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % max(1, num_steps // 3) == 0:
            log(f"  [classifier] step {step + 1}/{num_steps} loss {loss.item():.4f}")
    return model.eval().requires_grad_(False)


def accuracy(model: AttributeClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean per-attribute accuracy over the attributes present in `labels` (B, 4)."""
    pred = model.predict(images)
    present = labels != testbed.ABSENT
    return ((pred == labels) & present).sum().item() / max(1, present.sum().item())


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (N, F) feature sets (FID's formula).

    tr sqrt(Ca Cb) is computed as tr sqrt(Ca^1/2 Cb Ca^1/2), a symmetric PSD matrix, in float64.
    """
    if feats_a.shape[0] < 2 or feats_b.shape[0] < 2:
        raise ValueError("Frechet distance needs at least 2 samples per set")
    a, b = feats_a.double(), feats_b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(cov_a)
    cross = _sqrt_psd(root_a @ cov_b @ root_a)
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return float(mean_term + torch.trace(cov_a) + torch.trace(cov_b) - 2 * torch.trace(cross))
