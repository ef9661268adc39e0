"""Sampler properties: cache equivalence, seed determinism, schedules, CFG and shapes."""

import pytest
import torch

from core import SamplerConfig, VideoMAR, sample_video
from core.config import ModelConfig
from core.sampler import guidance_at, frame_temperatures
from tests.helpers import tiny, trained_like

FAST = dict(num_iter=3)


def first_frame(batch=2, size=16, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_shapes_range_and_conditioning_frame_kept():
    model = trained_like(VideoMAR(tiny()))
    frame = first_frame()
    video = sample_video(model, frame, 4, generator=torch.Generator().manual_seed(0), **FAST)
    assert video.shape == (2, 4, 3, 16, 16)
    assert video.min() >= 0 and video.max() <= 1 and torch.isfinite(video).all()
    torch.testing.assert_close(video[:, 0], frame)  # patch tokenizer round trip is exact


@pytest.mark.parametrize("cfg_scale", [1.0, 2.5])
def test_kv_cache_and_recompute_give_the_same_video(cfg_scale):
    model = trained_like(VideoMAR(tiny()))
    kw = dict(num_iter=3, cfg_scale=cfg_scale, temperature_schedule="progressive")
    caps = ["a red circle", "a blue square"]
    cached = sample_video(model, first_frame(), 4, use_kv_cache=True, captions=caps,
                          generator=torch.Generator().manual_seed(1), **kw)
    recomputed = sample_video(model, first_frame(), 4, use_kv_cache=False, captions=caps,
                              generator=torch.Generator().manual_seed(1), **kw)
    diff = (cached - recomputed).abs()
    assert diff.max() < 1e-4, f"cache vs recompute: max {diff.max():.2e} mean {diff.mean():.2e}"


def test_same_seed_same_video_different_seed_different_video():
    model = trained_like(VideoMAR(tiny()))
    a = sample_video(model, first_frame(), 3, generator=torch.Generator().manual_seed(5), **FAST)
    b = sample_video(model, first_frame(), 3, generator=torch.Generator().manual_seed(5), **FAST)
    c = sample_video(model, first_frame(), 3, generator=torch.Generator().manual_seed(6), **FAST)
    assert torch.equal(a, b)
    assert not torch.equal(a[:, 1:], c[:, 1:])


def test_full_attention_joint_sampling_and_cache_refused():
    model = trained_like(VideoMAR(tiny(attn="full")))
    video = sample_video(model, first_frame(), 3, generator=torch.Generator().manual_seed(0), **FAST)
    assert video.shape == (2, 3, 3, 16, 16) and torch.isfinite(video).all()
    from core.sampler import sample_latents
    cond = model.tokenizer.encode(first_frame()[:, None])
    with pytest.raises(ValueError, match="use_kv_cache"):
        sample_latents(model, cond, 3, SamplerConfig(use_kv_cache=True), torch.Generator())


def test_cfg_scale_one_ignores_the_unconditional_branch():
    model = trained_like(VideoMAR(tiny()))
    caps = ["a", "b"]
    plain = sample_video(model, first_frame(), 3, captions=caps,
                         generator=torch.Generator().manual_seed(2), cfg_scale=1.0, **FAST)
    guided = sample_video(model, first_frame(), 3, captions=caps,
                          generator=torch.Generator().manual_seed(2), cfg_scale=3.0, **FAST)
    assert not torch.equal(plain, guided)


def test_schedules():
    assert frame_temperatures(SamplerConfig(temperature=0.95, temperature_schedule="progressive",
                                            temperature_end=0.9), 6) == pytest.approx(
        [0.95, 0.94, 0.93, 0.92, 0.91, 0.90])
    assert frame_temperatures(SamplerConfig(temperature=0.8), 3) == [0.8, 0.8, 0.8]
    listed = SamplerConfig(temperature_schedule="list", temperatures=[1.0, 0.5])
    assert frame_temperatures(listed, 2) == [1.0, 0.5]
    with pytest.raises(ValueError, match="temperatures"):
        frame_temperatures(listed, 3)
    linear = SamplerConfig(cfg_scale=3.0)
    assert guidance_at(linear, 64, 64) == 1.0 and guidance_at(linear, 64, 0) == 3.0
    assert guidance_at(SamplerConfig(cfg_scale=3.0, cfg_schedule="constant"), 64, 64) == 3.0


def test_bad_requests_fail_clearly():
    model = VideoMAR(tiny())
    with pytest.raises(ValueError, match="num_iter"):
        sample_video(model, first_frame(), 3, num_iter=17)  # 16 tokens per frame
    with pytest.raises(ValueError, match="num_frames"):
        sample_video(model, first_frame(), 1)
    no_text = VideoMAR(tiny(text_dim=0))
    with pytest.raises(ValueError, match="text"):
        sample_video(no_text, first_frame(), 3, cfg_scale=2.0)


@pytest.mark.parametrize("attn", ["causal", "full"])
def test_latents_clipped_from_the_second_generated_frame(attn):
    from core.sampler import sample_latents
    model = trained_like(VideoMAR(tiny(attn=attn)))
    with torch.no_grad():  # push the head's outputs far outside the token range
        model.head.net.final.linear.bias.add_(3.0)
    cond = model.tokenizer.encode(first_frame()[:, None])
    cfg = SamplerConfig(num_iter=3, clip_denoised=False)
    latents = sample_latents(model, cond, 4, cfg, torch.Generator().manual_seed(0))
    lo, hi = model.tokenizer.clip_range
    assert latents[:, 2:].min() >= lo and latents[:, 2:].max() <= hi
    assert latents[:, 1].abs().max() > hi, "the first generated frame is not clipped (VideoMAR)"


@pytest.mark.parametrize("start, end", [(1.0, 0.8), (0.8, 1.0), (0.95, 0.9), (0.7, 0.7)])
@pytest.mark.parametrize("generated", [1, 2, 3, 7, 15])
def test_progressive_temperature_reaches_its_end_at_the_last_generated_frame(start, end, generated):
    cfg = SamplerConfig(temperature=start, temperature_end=end, temperature_schedule="progressive")
    taus = frame_temperatures(cfg, generated)
    assert len(taus) == generated and taus[0] == start
    if generated == 1:
        assert taus == [start]
        return
    assert taus[-1] == end  # exactly, not 0.813 for 1.0 -> 0.8 over 15 frames
    steps = [b - a for a, b in zip(taus, taus[1:])]
    assert steps == pytest.approx([(end - start) / (generated - 1)] * (generated - 1))
    assert sum(taus) / generated == pytest.approx((start + end) / 2)  # matched mean of the arms


def test_sampling_generator_lives_on_the_model_device_with_the_cpu_stream_unchanged():
    from core.sampler import device_generator

    model = VideoMAR(ModelConfig(width=32, depth=1, num_heads=2, head_width=32,
                                 num_sampling_steps=3), seed=0).eval()
    g = device_generator(model, 5)
    assert g.device == model.mask_token.device
    assert torch.equal(torch.rand(4, generator=g),
                       torch.rand(4, generator=torch.Generator().manual_seed(5)))
    frame = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    default = sample_video(model, frame, 2, num_iter=2)
    explicit = sample_video(model, frame, 2, num_iter=2,
                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(default, explicit)
