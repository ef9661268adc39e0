"""Synthetic VBench-I2V-style metrics: exact on the truth, and each drops when its dimension is hurt."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.config import DataConfig, ModelConfig, SamplerConfig
from core.metrics.synthetic import KEYS, clip_scores, colour_evidence, score_rendered
from core.synthetic import SyntheticSprites, render_clip

SEED = 20_000_003  # a test-split clip with a cloudy texture and a downward pan


@pytest.fixture(scope="module")
def clip():
    return render_clip(SEED, 32, 32, 8, 2, True)


def _recolour_sprite(truth, gt):
    """Sprite 0 turns cyan in every generated frame (identity / colour lost)."""
    evidence = colour_evidence(truth.permute(0, 2, 3, 1).numpy(), gt["colors"][0].numpy())
    mask = torch.from_numpy(evidence > 0)[:, None]
    mask[0] = False
    return torch.where(mask, torch.tensor([0.1, 0.85, 0.9])[None, :, None, None], truth)


def _flicker(truth, gt):
    out = truth.clone()
    for t in range(1, len(out)):
        out[t] = (out[t] + 0.1 * (-1) ** t).clamp(0, 1)
    return out


def _blur(truth, gt):
    out = truth.clone()
    kernel = torch.ones(3, 1, 3, 3) / 9
    out[1:] = F.conv2d(F.pad(truth[1:], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return out


def _freeze(truth, gt):
    return truth[:1].expand_as(truth).clone()


def _swap(truth, gt):
    out = truth.clone()
    out[[3, 4]] = truth[[4, 3]]
    return out


def _no_pan(truth, gt):  # same scene, static camera: only the background motion changes
    return render_clip(SEED, 32, 32, 8, 2, False)[0]


def _tint(truth, gt):  # a constant colour shift from the first generated frame on
    out = truth.clone()
    out[1:] = (truth[1:] * 0.8 + 0.1)
    return out


DEGRADATIONS = {
    "syn_subject_consistency": _recolour_sprite,
    "syn_color_persistence": _recolour_sprite,
    "syn_i2v_subject": _recolour_sprite,
    "syn_background_consistency": _flicker,
    "syn_i2v_background": _tint,
    "syn_motion_smoothness": _swap,
    "syn_dynamic_degree": _freeze,
    "syn_camera_motion": _no_pan,
    "syn_imaging_quality": _blur,
}


def test_truth_scores_one_on_every_dimension(clip):
    truth, _, gt = clip
    scores = clip_scores(truth, truth, gt, num_cond=1)
    assert set(scores) == set(KEYS)
    assert scores == pytest.approx({k: 1.0 for k in KEYS}, abs=1e-9)


@pytest.mark.parametrize("key", sorted(DEGRADATIONS))
def test_degrading_a_dimension_lowers_its_score(clip, key):
    truth, _, gt = clip
    degraded = DEGRADATIONS[key](truth, gt)
    score = clip_scores(degraded, truth, gt, num_cond=1)[key]
    assert score is not None and 0.0 <= score < 0.97, f"{key} did not drop: {score}"


def test_background_consistency_ignores_a_stable_tint_but_conditioning_agreement_does_not(clip):
    truth, _, gt = clip
    scores = clip_scores(_tint(truth, gt), truth, gt, num_cond=1)
    # the tint starts at the first generated frame, so only that one step changes
    assert scores["syn_background_consistency"] > scores["syn_i2v_background"]


def test_score_rendered_matches_truth_and_handles_longer_clips():
    seeds = [20_000_000, 20_000_001]
    videos = torch.stack([render_clip(s, 48, 40, 12, 2, True)[0] for s in seeds])  # extrapolated
    scores = score_rendered(videos, seeds, num_sprites=2, camera_pan=True)
    assert scores == pytest.approx({k: 1.0 for k in KEYS})
    noisy = (videos + 0.1 * torch.randn(videos.shape, generator=torch.Generator().manual_seed(0)))
    worse = score_rendered(noisy.clamp(0, 1), seeds, num_sprites=2, camera_pan=True)
    assert worse["syn_imaging_quality"] < 0.9 and worse["syn_subject_consistency"] < 0.9


def test_bad_input_is_named(clip):
    truth, _, gt = clip
    with pytest.raises(ValueError, match="differ in shape"):
        clip_scores(truth[:4], truth, gt)
    with pytest.raises(ValueError, match="num_cond"):
        clip_scores(truth, truth, gt, num_cond=8)
    with pytest.raises(ValueError, match="seeds"):
        score_rendered(truth[None], [1, 2], num_sprites=2, camera_pan=True)


def test_score_samples_adds_synthetic_keys():
    from core.evaluate import score_samples
    from core.model import VideoMAR

    data = DataConfig(num_frames=4, num_test=2)
    model = VideoMAR(ModelConfig(), seed=0)
    sampler = SamplerConfig(num_iter=2, num_sampling_steps=4)
    out = score_samples(model, SyntheticSprites(data, "test"), num_clips=2, sampler=sampler,
                        batch_size=2)
    assert out["num_clips"] == 2 and out["videos"].shape == (2, 4, 3, 32, 32)
    for key in KEYS:
        assert out[key] is None or 0.0 <= out[key] <= 1.0, (key, out[key])
    assert out["syn_imaging_quality"] is not None and out["syn_imaging_quality"] < 1.0
    # reproducible: the metrics depend only on the generated videos and the clip seeds
    again = score_samples(model, SyntheticSprites(data, "test"), num_clips=2, sampler=sampler,
                          batch_size=2)
    assert {k: again[k] for k in KEYS} == {k: out[k] for k in KEYS}
    assert np.isfinite(out["mse_mean"])
