"""Evaluation: baselines take the model's scoring path; dist_energy does not reward low variance."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.config import DataConfig, ModelConfig, SamplerConfig
from core.evaluate import (copy_producer, produce_and_score, psnr, score_baseline, score_samples,
                           score_videos)
from core.metrics.distribution import clip_statistics, dist_energy, energy_distance
from core.metrics.synthetic import KEYS
from core.synthetic import SyntheticSprites, render_clip

TEST_START = 20_000_000  # first test-split seed (core/synthetic.py)


def _clips(start: int, count: int, frames: int = 8, size: int = 32):
    """(videos, ground truths) of test clips start .. start + count - 1."""
    rendered = [render_clip(TEST_START + i, size, size, frames, 2, True)
                for i in range(start, start + count)]
    return [v for v, _, _ in rendered], [g for _, _, g in rendered]


def _mse(videos, truths) -> float:
    return float(np.mean([((v[1:] - t[1:]) ** 2).mean() for v, t in zip(videos, truths)]))


# ---------------------------------------------------------------------------- the copy baseline


def test_copy_baseline_is_scored_exactly_like_a_model():
    data = DataConfig(num_frames=5, num_test=8)
    test = SyntheticSprites(data, "test")
    out = score_baseline(test, num_clips=6, num_cond=1, batch_size=4)
    truth = torch.stack([test[i]["video"] for i in range(6)])
    copies = truth[:, :1].expand(-1, 5, -1, -1, -1)
    assert torch.equal(out["videos"], copies)  # the pixel frame, no tokenizer round trip
    # the same numbers as handing the copy videos to the scoring function of score_samples
    direct = score_videos(copies, truth, num_cond=1, dataset=test,
                          seeds=[test.clip_seed(i) for i in range(6)])
    assert {k: out[k] for k in direct} == direct
    # and as an independent computation of the per-frame MSE and the first frame's PSNR
    per_frame = ((copies[:, 1:] - truth[:, 1:]) ** 2).mean(dim=(0, 2, 3, 4))
    assert out["mse_per_frame"] == pytest.approx(per_frame.tolist(), rel=1e-5)
    assert out["psnr_first"] == pytest.approx(psnr(float(per_frame[0])), rel=1e-6)
    assert out["num_clips"] == 6 and out["dist_energy"] > 0
    assert out["syn_dynamic_degree"] == 0.0 and out["syn_i2v_subject"] == pytest.approx(1.0)
    assert set(KEYS) <= set(out)
    # the key set of a model's scores, batch size does not matter
    model = score_samples(_tiny_model(), test, num_clips=2, sampler=SamplerConfig(num_iter=2),
                          batch_size=2)
    assert set(model) == set(out)
    again = score_baseline(test, num_clips=6, num_cond=1, batch_size=6)
    for key, value in direct.items():
        assert again[key] == pytest.approx(value, rel=1e-6), key


def test_copy_repeats_the_last_conditioning_frame_and_longer_rollouts_are_scored():
    video = torch.rand(2, 4, 3, 8, 8)
    out = copy_producer(2)(video, ["a", "b"], 6)
    assert out.shape == (2, 6, 3, 8, 8) and torch.equal(out[:, :2], video[:, :2])
    assert all(torch.equal(out[:, t], video[:, 1]) for t in range(2, 6))
    data = DataConfig(num_frames=6, num_test=4, height=16, width=16)
    scores = produce_and_score(copy_producer(1), SyntheticSprites(data, "test"), num_clips=3,
                               num_cond=1, num_frames=6, batch_size=2)
    assert len(scores["mse_per_frame"]) == 5 and scores["num_clips"] == 3


def _tiny_model():
    from core.model import VideoMAR

    return VideoMAR(ModelConfig(width=32, depth=1, num_heads=2, head_width=32, head_depth=1,
                                num_sampling_steps=3), seed=0)


def test_score_samples_reports_dist_energy():
    data = DataConfig(num_frames=3, num_test=2, height=16, width=16)
    out = score_samples(_tiny_model(), SyntheticSprites(data, "test"), num_clips=2,
                        sampler=SamplerConfig(num_iter=2), batch_size=2)
    assert np.isfinite(out["dist_energy"]) and out["dist_energy"] >= 0


# ---------------------------------------------------------------------------- dist_energy


def test_energy_distance_is_a_symmetric_nonnegative_distance_zero_on_equal_sets():
    g = np.random.default_rng(0)
    x, y = g.normal(size=(10, 6)), g.normal(size=(7, 6)) + 0.5
    assert energy_distance(x, x) == 0.0
    assert energy_distance(x, x[::-1]) == pytest.approx(0.0, abs=1e-12)  # a set, not a sequence
    assert energy_distance(x, y) > 0
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x))
    assert energy_distance(x, y + 3.0) > energy_distance(x, y)  # further apart, larger
    # a collapsed set (every vector the mean) is far from the spread it collapsed
    assert energy_distance(np.repeat(x.mean(0, keepdims=True), 10, 0), x) > 0.1
    with pytest.raises(ValueError, match="equal-length"):
        energy_distance(x, y[:, :3])


def test_dist_energy_is_zero_on_the_truth_and_symmetric():
    videos, gts = _clips(0, 4)
    assert dist_energy(videos, videos, gts) == 0.0
    noisy = [(v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i)))
             .clamp(0, 1) for i, v in enumerate(videos)]
    assert dist_energy(noisy, videos, gts) == pytest.approx(dist_energy(videos, noisy, gts))
    assert dist_energy(noisy, videos, gts) > 0
    with pytest.raises(ValueError, match="as many videos"):
        dist_energy(videos[:2], videos, gts)


def test_clip_statistics_measure_motion_background_shift_and_mass():
    (video,), (gt,) = _clips(0, 1)
    stats = clip_statistics(video, gt).reshape(7, -1)  # 7 generated frames x (3 + 2 sprites)
    assert stats.shape == (7, 5)
    true_pan = -np.diff(gt["bg_offset"].numpy(), axis=0) * 100 / 32  # texture moves against it
    assert stats[:, 1:3] == pytest.approx(true_pan, abs=0.3)
    speed = np.linalg.norm(np.diff(gt["positions"].numpy(), axis=0), axis=-1).mean(-1) * 100 / 32
    assert stats[:, 0] == pytest.approx(speed, rel=0.15)
    assert (stats[:, 3:] > 1).all()  # both sprites visible, a few % of the frame each
    static = clip_statistics(video[:1].expand(8, -1, -1, -1), gt).reshape(7, -1)
    assert np.abs(static[:, :3]).max() < 1e-6  # nothing moves in a frozen clip


def test_dist_energy_does_not_reward_low_variance_but_mse_does():
    """Collapsed predictions (blurry average, frozen first frame) lose to true clips of other
    seeds under dist_energy, although per-frame MSE prefers the blurry average by far."""
    truths, gts = _clips(0, 12)
    kernel = torch.ones(3, 1, 5, 5) / 25
    blurry = []  # the MSE-friendly prediction: each pixel's temporal mean, blurred
    for v in truths:
        mean = F.conv2d(F.pad(v[1:].mean(0, keepdim=True), (2, 2, 2, 2), mode="replicate"),
                        kernel, groups=3)
        blurry.append(torch.cat([v[:1], mean.expand(len(v) - 1, -1, -1, -1)]))
    frozen = [v[:1].expand(len(v), -1, -1, -1) for v in truths]
    for start in (12, 24):  # true clips of other seeds: samples of the true distribution
        others, other_gts = _clips(start, 12)
        true_sample = energy_distance([clip_statistics(v, g) for v, g in zip(others, other_gts)],
                                      [clip_statistics(v, g) for v, g in zip(truths, gts)])
        for collapsed in (blurry, frozen):
            assert dist_energy(collapsed, truths, gts) > 1.5 * true_sample
        assert _mse(blurry, truths) < 0.25 * _mse(others, truths)


def test_sample_spread_measures_variation_across_samples_of_one_input():
    from core.evaluate import sample_spread
    from core.model import VideoMAR

    model = VideoMAR(ModelConfig(width=32, depth=1, num_heads=2, head_width=32, head_depth=1,
                                 num_sampling_steps=3), seed=0)
    with torch.no_grad():  # non-zero head outputs: samples depend on the noise
        for p in model.head.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.3)
    test = SyntheticSprites(DataConfig(num_frames=3, num_test=4), "test")
    run = lambda temperature, seed=0: sample_spread(  # noqa: E731
        model, test, num_clips=2, sampler=SamplerConfig(num_iter=2, temperature=temperature),
        samples=3, seed=seed)
    wide = run(1.0)
    assert wide > 0 and wide == run(1.0)  # seeded: the same draws give the same spread
    assert run(1.0, seed=1) != wide
    assert run(0.2) < wide  # a colder sampler spreads less; MSE to one truth would reward it
    with pytest.raises(ValueError, match="samples >= 2"):
        sample_spread(model, test, num_clips=2, sampler=SamplerConfig(), samples=1)
