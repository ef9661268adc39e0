"""Properties of the VideoMAR backbone and its training objective (tiny configs, fp32, CPU)."""

import dataclasses

import pytest
import torch

from core.config import ModelConfig, PRESETS
from core.model import VideoMAR


def tiny(**kw) -> ModelConfig:
    base = dict(width=32, depth=2, num_heads=2, text_dim=16, text_len=8, head_width=32,
                head_depth=2, num_sampling_steps=5)
    return ModelConfig(**{**base, **kw})


def tokens(batch=2, frames=3, h=2, w=3, dim=48, seed=0):
    return torch.randn(batch, frames, h, w, dim, generator=torch.Generator().manual_seed(seed))


def test_mask_causality_frames_after_t_do_not_change_frames_up_to_t():
    model = VideoMAR(tiny()).eval()
    x = tokens()
    ctx, ctx_mask = model.encode_context(["a red circle", "a blue square"], 2)
    mask = torch.zeros(2, 3, 6, dtype=torch.bool)
    mask[:, 1, :3] = True
    base = model.backbone(x, mask, 0, ctx, ctx_mask)
    perturbed = x.clone()
    perturbed[:, 2] += 5.0  # frame t+1 = 2
    mask2 = mask.clone()
    mask2[:, 2, 1] = True
    out = model.backbone(perturbed, mask2, 0, ctx, ctx_mask)
    assert torch.equal(out[:, :2], base[:, :2]), "frames <= 1 changed when frame 2 changed"
    assert not torch.allclose(out[:, 2], base[:, 2])
    # and no gradient flows from frames <= 1 back into frame 2's inputs
    x.requires_grad_(True)
    model.backbone(x, mask, 0, ctx, ctx_mask)[:, :2].sum().backward()
    assert x.grad[:, 2].abs().max() == 0 and x.grad[:, :2].abs().max() > 0


def test_full_attention_sees_later_frames():
    model = VideoMAR(tiny(attn="full")).eval()
    x = tokens()
    base = model.backbone(x, None, 0)
    perturbed = x.clone()
    perturbed[:, 2] += 5.0
    assert not torch.allclose(model.backbone(perturbed, None, 0)[:, 0], base[:, 0])


def test_cached_forward_equals_uncached():
    model = VideoMAR(tiny()).eval()
    x = tokens(frames=4)
    ctx, ctx_mask = model.encode_context(["a", "b"], 2)
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[:, 3, ::2] = True
    full = model.backbone(x, mask, 0, ctx, ctx_mask)
    cache = model.new_cache(2, 4, 6)
    prefill = model.backbone(x[:, :2], None, 0, ctx, ctx_mask, cache, commit=True)  # 2 frames at once
    model.backbone(x[:, 2:3], None, 2, ctx, ctx_mask, cache, commit=True)
    for _ in range(2):  # read-only passes must not advance the cache
        last = model.backbone(x[:, 3:4], mask[:, 3:4], 3, ctx, ctx_mask, cache)
    assert cache.length == 3 * 6
    torch.testing.assert_close(prefill, full[:, :2], atol=1e-5, rtol=1e-5)
    diff = (last[:, 0] - full[:, 3]).abs()
    assert diff.max() < 1e-5, f"cache vs full forward: max {diff.max():.2e} mean {diff.mean():.2e}"
    with pytest.raises(RuntimeError, match="frame_offset"):
        model.backbone(x[:, 3:4], None, 1, ctx, ctx_mask, cache)


@pytest.mark.parametrize("attn", ["causal", "full"])
def test_loss_finite_and_only_masked_target_tokens_matter(attn):
    model = VideoMAR(tiny(attn=attn))
    with torch.no_grad():  # the zero-initialised head ignores its condition: make it trained-like
        g = torch.Generator().manual_seed(7)
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    x = tokens(frames=4)
    g = torch.Generator().manual_seed(3)
    draws = model.sample_train_draws(2, 4, (2, 3), g)
    loss = model(x, ["a", "b"], draws)
    assert torch.isfinite(loss) and loss > 0
    if attn == "causal":
        f = draws.target_frame
        assert 1 <= f <= 3
        assert draws.orders.shape == (2, 6) and draws.noise.shape[:2] == (2, 4)
        later = x.clone()
        if f < 3:  # frames after the target are truncated away: no effect at all
            later[:, f + 1:] += 3.0
            assert torch.equal(model(later, ["a", "b"], draws), loss)
        # the target frame's visible tokens and the earlier frames do matter
        earlier = x.clone()
        earlier[:, 0] += 3.0
        assert not torch.equal(model(earlier, ["a", "b"], draws), loss)
    else:
        assert draws.orders.shape == (2, 3 * 6)


def test_a_rank_draws_only_its_slice_and_the_slices_make_the_batch():
    model = VideoMAR(tiny())
    asked = []

    def per_sample(i):
        asked.append(i)
        return torch.Generator().manual_seed(100 + i)

    whole = model.sample_train_draws(4, 5, (2, 3), torch.Generator().manual_seed(0),
                                     sample_generator=per_sample)
    assert asked == [0, 1, 2, 3]
    for rank in (0, 1):
        asked.clear()
        part = model.sample_train_draws(4, 5, (2, 3), torch.Generator().manual_seed(0),
                                        rows=range(2 * rank, 2 * rank + 2),
                                        sample_generator=per_sample)
        assert asked == [2 * rank, 2 * rank + 1]  # nothing drawn for the other rank's samples
        assert part.target_frame == whole.target_frame and part.num_masked == whole.num_masked
        ref = whole.slice(2 * rank, 2 * rank + 2)
        for name in ("orders", "cond_drop", "timesteps", "noise"):
            assert torch.equal(getattr(part, name), getattr(ref, name)), name


def test_draws_are_seeded_and_sliceable():
    model = VideoMAR(tiny())
    a = model.sample_train_draws(4, 5, (2, 3), torch.Generator().manual_seed(0))
    b = model.sample_train_draws(4, 5, (2, 3), torch.Generator().manual_seed(0))
    assert a.target_frame == b.target_frame and torch.equal(a.noise, b.noise)
    half = a.slice(2, 4)
    assert torch.equal(half.orders, a.orders[2:]) and half.num_masked == a.num_masked
    # per-sample means over equal token counts: the batch loss is the mean of the halves' losses
    x = tokens(batch=4, frames=5)
    caps = ["a", "b", "c", "d"]
    whole = model(x, caps, a)
    parts = (model(x[:2], caps[:2], a.slice(0, 2)) + model(x[2:], caps[2:], a.slice(2, 4))) / 2
    torch.testing.assert_close(whole, parts)


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = VideoMAR(tiny(), seed=1), VideoMAR(tiny(), seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    c = VideoMAR(tiny(), seed=2)
    assert not torch.equal(a.token_embed.weight, c.token_embed.weight)


def test_presets_build_and_paper_size_on_meta():
    assert ModelConfig() == PRESETS["tiny"]
    with torch.device("meta"):
        paper = VideoMAR(PRESETS["paper"])
    n = paper.num_params()
    backbone = paper.num_params(exclude_head=True)
    # reference estimate: ~1.36B transformer (16 d^2 per block x 36) + embeddings + ~20M head
    assert 1.3e9 < backbone < 1.5e9, backbone
    assert 1.35e9 < n < 1.55e9, n
    assert dataclasses.replace(PRESETS["paper"]).head_dim == 64


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="num_heads"):
        ModelConfig(width=30, num_heads=4)
    with pytest.raises(ValueError, match="rope_split"):
        ModelConfig(rope_split=[8, 8, 6])  # head dim 48
    with pytest.raises(ValueError, match="attn"):
        ModelConfig(attn="sideways")
