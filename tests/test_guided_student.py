"""The guidance-distilled student (Meng et al.; core/sun/guided_student.py, sampler.guidance=
distilled): the fresh student is the conditional branch, w reaches every sample, one backbone
pass, distillation moves it towards the CFG teacher without touching the teacher, save/load of
the whole student, errors."""

from __future__ import annotations

import pytest
import torch

from core.config import ConfigError, DataConfig, HeadDistillConfig, SamplerConfig, preset
from core.data import build_dataset
from core.model import VideoMAR
from core.sampler import sample_latents
from core.sun import backbone_distill, guided_student


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


def _sampler(**kw):
    return SamplerConfig(**{"cfg_scale": 3.0, "num_iter": 2, "guidance": "distilled", **kw})


def test_fresh_student_is_the_conditional_branch_and_w_reaches_each_sample():
    model = _model()
    tokens, mask = _inputs(model)
    ctx = model.encode_context(["a red circle", "two squares"], 2)
    conditional = model.backbone(tokens, mask, 0, *ctx)
    student, embedding = guided_student.new_student(model, cfg_max=4.0)
    assert guided_student.installed(model) is None  # the teacher is not a student
    assert student.state_dict().keys() == model.state_dict().keys()  # w embedding outside it
    for w in (1.0, 3.0, torch.tensor([1.0, 4.0])):
        with embedding.scale(student, w):
            torch.testing.assert_close(student.backbone(tokens, mask, 0, *ctx), conditional,
                                       rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # a trained-looking embedding: w moves the features, per sample
        for p in embedding.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    with embedding.scale(student, torch.tensor([1.5, 3.5])):
        both = student.backbone(tokens, mask, 0, *ctx)
    assert not torch.allclose(both, conditional, atol=1e-3)
    for i, w in enumerate((1.5, 3.5)):
        with embedding.scale(student, w):
            one = student.backbone(tokens[i:i + 1], mask[i:i + 1], 0, ctx[0][i:i + 1],
                                   ctx[1][i:i + 1])
        torch.testing.assert_close(both[i:i + 1], one, rtol=1e-5, atol=1e-5)
    assert all(b.cross.processor is None for b in student.blocks)  # only inside `scale`
    with pytest.raises(ValueError, match="outside \\[1, 4\\]"):
        with embedding.scale(student, 4.5):
            pass


def test_distilled_guidance_runs_one_backbone_pass_on_the_caption():
    model = _model()
    cond = torch.randn(2, 1, 2, 2, model.cfg.token_dim)
    with pytest.raises(ValueError, match="not one"):
        sample_latents(model, cond, 3, _sampler(), torch.Generator(), ["a", "b"])
    student, _ = guided_student.new_student(model, cfg_max=3.0)
    shapes = []
    hook = student.blocks[0].register_forward_hook(lambda m, a, out: shapes.append(a[0].shape[0]))
    for cached in (True, False):
        shapes.clear()
        out = sample_latents(student, cond, 3, _sampler(use_kv_cache=cached),
                             torch.Generator().manual_seed(0), ["a", "b"])
        assert set(shapes) == {2}  # never the doubled [cond; uncond] batch
        if cached:
            first = out
    torch.testing.assert_close(out, first, rtol=1e-4, atol=1e-4)  # cache == no cache
    hook.remove()
    # the fresh student samples exactly what the model samples unguided (cfg 1)
    plain = sample_latents(model, cond, 3, SamplerConfig(num_iter=2, cfg_scale=1.0),
                           torch.Generator().manual_seed(0), ["a", "b"])
    torch.testing.assert_close(first, plain, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="folded in None"):
        sample_latents(student, cond, 3, _sampler(negative_prompt="blurry"), torch.Generator(),
                       ["a", "b"])


def test_guidance_distillation_moves_the_student_towards_the_teacher(tmp_path):
    model = _model()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    data = build_dataset(DataConfig(num_frames=3), "train", seed=0)
    sampler = _sampler(head="dpm", num_sampling_steps=4)
    cfg = HeadDistillConfig(num_clips=4, teacher_sampling_steps=3, teacher_steps=40, steps=40,
                            batch_states=4, lr=3e-3, finetune_lr=1e-3)
    g = torch.Generator().manual_seed(0)
    clips, captions = backbone_distill.conditioning_clips(model, data, cfg.num_clips, 2)
    pool = backbone_distill.teacher_states(model, clips, captions, sampler, cfg, 3.0, None, 4, g)

    def gap(student):  # the student's guided-eps error at the teacher's cached states
        embedding, errs = guided_student.installed(student), []
        with torch.no_grad():
            for group in pool:
                states = torch.arange(group["tokens"].shape[0])
                z_s = backbone_distill.distilled_features(student, embedding, group, states)
                t = group["timesteps"]
                for k in range(0, t.numel(), 10):
                    eps = student.head.net(group["states"][:, k], t[k:k + 1], z_s)
                    errs.append((eps[:, :model.cfg.token_dim] - group["eps"][:, k]).pow(2).mean())
        return float(torch.stack(errs).mean())

    before = gap(guided_student.new_student(model, 3.0)[0])
    student, curves = backbone_distill.distill_student(model, pool, cfg, 3.0, 4, None, g, None,
                                                       log=lambda s: None)
    assert gap(student) < 0.8 * before, (gap(student), before)
    assert len(curves["msc"]) == cfg.steps  # the few-step head's MSC loss trained too
    for k, v in model.state_dict().items():  # the teacher is untouched: the copy trains
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    assert not torch.equal(student.head.net.cond_embed.weight, model.head.net.cond_embed.weight)

    path = tmp_path / "gd.safetensors"
    guided_student.installed(student).save(student, path, {"student_steps": 4})
    loaded = guided_student.load(model, path)
    cond = model.tokenizer.encode(data[0]["video"][None, :1])
    first = sample_latents(student, cond, 3, sampler, torch.Generator().manual_seed(0), ["x"])
    second = sample_latents(loaded, cond, 3, sampler, torch.Generator().manual_seed(0), ["x"])
    torch.testing.assert_close(first, second)
    assert guided_student.installed(loaded).info == {"student_steps": 4}
    with pytest.raises(FileNotFoundError, match="distil one"):
        guided_student.load(model, tmp_path / "missing.safetensors")
    wider = VideoMAR(preset("tiny", width=48, depth=2, num_heads=2), seed=0)
    with pytest.raises(ValueError, match="does not fit"):
        guided_student.load(wider, path)


def test_distilled_guidance_config_errors():
    with pytest.raises(ConfigError, match="guidance=distilled folds guidance"):
        SamplerConfig(guidance="distilled")
    with pytest.raises(ConfigError, match="unguided head"):
        SamplerConfig(guidance="distilled", cfg_scale=3.0, head="sun", num_sampling_steps=4)
    with pytest.raises(ConfigError, match="finetune_lr"):
        HeadDistillConfig(finetune_lr=-1.0)
    with pytest.raises(ValueError, match="text-conditioned"):
        guided_student.GuidedStudent(VideoMAR(preset("tiny", text_dim=0)), 3.0)
