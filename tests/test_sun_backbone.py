"""SUN in VideoMAR's backbone (core/sun/backbone_adapter.py, backbone_distill.py and
sampler.guidance=sun): identity at initialisation, one backbone pass with one KV cache, per-sample
guidance, distillation towards the CFG teacher, weights-only save/load, errors."""

from __future__ import annotations

import pytest
import torch

from core.config import ConfigError, DataConfig, HeadDistillConfig, SamplerConfig, preset
from core.data import build_dataset
from core.model import VideoMAR
from core.sampler import sample_latents
from core.sun import backbone_adapter, backbone_distill


def _model() -> VideoMAR:
    model = VideoMAR(preset("tiny", width=32, depth=2, num_heads=2, head_width=32, head_depth=1,
                            num_sampling_steps=5), seed=0).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a non-trivial model: randomise the zero-initialised layers
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.2, generator=g)
    return model


def _inputs(model, batch=2, frames=3):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(batch, frames, 2, 2, model.cfg.token_dim, generator=g)
    mask = torch.zeros(batch, frames, 4, dtype=torch.bool)
    mask[:, -1, :3] = True
    return tokens, mask


def test_fresh_adapter_with_the_caption_as_negative_is_the_frozen_backbone():
    model = _model()
    tokens, mask = _inputs(model)
    ctx, ctx_mask = model.encode_context(["a red circle", "two squares"], 2)
    frozen = model.backbone(tokens, mask, 0, ctx, ctx_mask)
    adapter = backbone_adapter.SUNBackboneAdapter(model, cfg_max=3.0)
    joint = backbone_adapter.joint_context(ctx, ctx_mask, ctx, ctx_mask)
    for w in (1.0, 2.5, torch.tensor([1.0, 3.0])):
        with adapter.scale(model, w):
            adapted = model.backbone(tokens, mask, 0, *joint)
        torch.testing.assert_close(adapted, frozen, rtol=1e-5, atol=1e-5)
    # outside `scale` the model is the frozen one, and the adapter never enters its state
    assert all(b.cross.processor is None for b in model.blocks)
    backbone_adapter.install(model, adapter)
    assert not any("sun" in k for k in model.state_dict())
    null, null_mask = model.encode_context(None, 2)
    with adapter.scale(model, 3.0):  # an empty negative: guidance moves the features
        guided = model.backbone(tokens, mask, 0, *backbone_adapter.joint_context(
            ctx, ctx_mask, null, null_mask))
    assert not torch.allclose(guided, frozen, atol=1e-3)


def test_per_sample_guidance_equals_one_call_per_sample():
    model = _model()
    adapter = backbone_adapter.SUNBackboneAdapter(model, cfg_max=4.0)
    with torch.no_grad():
        for p in adapter.parameters():  # a trained-looking adapter: w matters
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    tokens, mask = _inputs(model)
    ctx, ctx_mask = model.encode_context(["a", "b"], 2)
    joint = backbone_adapter.joint_context(ctx, ctx_mask, *model.encode_context(None, 2))
    with adapter.scale(model, torch.tensor([1.5, 3.5])):
        both = model.backbone(tokens, mask, 0, *joint)
    for i, w in enumerate((1.5, 3.5)):
        with adapter.scale(model, w):
            one = model.backbone(tokens[i:i + 1], mask[i:i + 1], 0, joint[0][i:i + 1],
                                 joint[1][i:i + 1])
        torch.testing.assert_close(both[i:i + 1], one, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="outside \\[1, 4\\]"):
        with adapter.scale(model, 5.0):
            pass


def _sampler(**kw):
    return SamplerConfig(**{"cfg_scale": 3.0, "num_iter": 2, "guidance": "sun", **kw})


def test_guidance_sun_runs_one_backbone_pass_with_one_cache():
    model = _model()
    cond = torch.randn(2, 1, 2, 2, model.cfg.token_dim)
    with pytest.raises(ValueError, match="no SUN backbone adapter"):
        sample_latents(model, cond, 3, _sampler(), torch.Generator(), ["a", "b"])
    backbone_adapter.install(model, backbone_adapter.SUNBackboneAdapter(model, 3.0))
    batches = []
    hook = model.blocks[0].register_forward_hook(lambda m, a, out: batches.append(a[0].shape[0]))
    for cached in (True, False):
        batches.clear()
        out = sample_latents(model, cond, 3, _sampler(use_kv_cache=cached),
                             torch.Generator().manual_seed(0), ["a", "b"])
        assert out.shape == (2, 3, 2, 2, model.cfg.token_dim)
        assert set(batches) == {2}  # never the doubled [cond; uncond] batch
        if cached:
            first = out
    torch.testing.assert_close(out, first, rtol=1e-4, atol=1e-4)  # cache == no cache
    batches.clear()
    sample_latents(model, cond, 3, SamplerConfig(cfg_scale=3.0, num_iter=2),
                   torch.Generator(), ["a", "b"])
    assert set(batches) == {4}  # plain CFG doubles the batch, adapter installed or not
    hook.remove()
    assert all(b.cross.processor is None for b in model.blocks)


def test_negative_prompt_replaces_the_null_embedding():
    model = _model()
    cond = torch.randn(1, 1, 2, 2, model.cfg.token_dim)
    run = lambda **kw: sample_latents(model, cond, 2, SamplerConfig(  # noqa: E731
        cfg_scale=3.0, num_iter=2, **kw), torch.Generator().manual_seed(0), ["a red circle"])
    assert not torch.allclose(run(), run(negative_prompt="blurry"))
    torch.testing.assert_close(run(), run())


def _distill_setup():
    model = _model()
    data = build_dataset(DataConfig(num_frames=3), "train", seed=0)
    sampler = _sampler(head="dpm", num_sampling_steps=4)
    cfg = HeadDistillConfig(num_clips=4, teacher_sampling_steps=3, teacher_steps=40, steps=0,
                            batch_states=4, lr=3e-3)
    return model, data, sampler, cfg


def test_distillation_moves_the_one_pass_features_towards_the_cfg_teacher(tmp_path):
    model, data, sampler, cfg = _distill_setup()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    clips, captions = backbone_distill.conditioning_clips(model, data, cfg.num_clips, 2)
    pool = backbone_distill.teacher_states(model, clips, captions, sampler, cfg, 3.0, None, 4, g)
    assert [p["frame"] for p in pool] == [1, 2]
    for group in pool:  # rows are the masked tokens of the states, state-major
        assert group["states"].shape[0] == int(group["counts"].sum()) == int(group["masked"].sum())
        assert bool((group["guidance"] >= 1).all() and (group["guidance"] <= 3).all())

    def gap(adapter):  # the student's guided-eps error at the teacher's cached states
        errs = []
        with torch.no_grad():
            for group in pool:
                states = torch.arange(group["tokens"].shape[0])
                z_s = backbone_distill.student_features(model, adapter, group, states, None)
                t = group["timesteps"]
                for k in range(0, t.numel(), 10):
                    eps = model.head.net(group["states"][:, k], t[k:k + 1], z_s)
                    errs.append((eps[:, :model.cfg.token_dim] - group["eps"][:, k]).pow(2).mean())
        return float(torch.stack(errs).mean())

    before = gap(backbone_adapter.SUNBackboneAdapter(model, 3.0))
    trained, curves = backbone_distill.distill(
        model, pool, HeadDistillConfig(**{**cfg.__dict__, "steps": 40}), 3.0, 4, None, g, None,
        log=lambda s: None)
    assert gap(trained) < 0.8 * before, (gap(trained), before)
    for k, v in model.state_dict().items():  # the model is frozen: only the adapter trains
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())

    path = tmp_path / "bb.safetensors"
    trained.save(path, {"student_steps": 4})
    cond = model.tokenizer.encode(data[0]["video"][None, :1])
    backbone_adapter.install(model, trained)
    first = sample_latents(model, cond, 3, sampler, torch.Generator().manual_seed(0), ["x"])
    backbone_adapter.remove(model)
    from_file = SamplerConfig(**{**sampler.__dict__, "backbone_adapter": str(path)})
    second = sample_latents(model, cond, 3, from_file, torch.Generator().manual_seed(0), ["x"])
    torch.testing.assert_close(first, second)
    with pytest.raises(FileNotFoundError, match="distil one"):
        backbone_adapter.load(model, tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="delete it and distil again"):
        backbone_adapter.load(model, tmp_path / "bad.safetensors")
    wider = VideoMAR(preset("tiny", width=48, depth=2, num_heads=2), seed=0)
    with pytest.raises(ValueError, match="does not fit"):
        backbone_adapter.load(wider, path)


def test_guidance_config_errors():
    with pytest.raises(ConfigError, match="sampler.guidance="):
        SamplerConfig(guidance="doubled")
    with pytest.raises(ConfigError, match="cfg_scale"):
        SamplerConfig(guidance="sun")
    with pytest.raises(ConfigError, match="unguided head"):
        SamplerConfig(guidance="sun", cfg_scale=3.0, head="sun", num_sampling_steps=4)
    with pytest.raises(ValueError, match="text-conditioned"):
        backbone_adapter.SUNBackboneAdapter(VideoMAR(preset("tiny", text_dim=0)), 3.0)
