"""core/sun: the SpeedUpNet adapter, its training losses, samplers, testbed and table."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from core.sun import adapter as sun_adapter
from core.sun import classifier as sun_classifier
from core.sun import distill as sun_distill
from core.sun import evaluate as sun_eval
from core.sun import teacher as sun_teacher
from core.sun import testbed
from core.sun.adapter import SUNAttnProcessor, install_sun, joint_context, load_sun

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5


@pytest.fixture(scope="module")
def parts():
    g = torch.Generator().manual_seed(0)
    cfg = sun_teacher.TeacherConfig()
    unet = sun_teacher.build_unet(cfg, g)
    encoder = sun_teacher.build_text_encoder(cfg, g)
    return unet.eval(), encoder.eval()


def sd_like_unet() -> UNet2DConditionModel:
    """A UNet laid out like SD1.5 (cross-attention at the first three levels, none at the last,
    transformer blocks with biasless K/V), at toy width and a different text width."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32, 32),
        layers_per_block=1, cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).eval()


def inputs(batch=3, channels=3, size=16, length=5, dim=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g)
    t = torch.randint(1000, (batch,), generator=g)
    pos, neg = torch.randn(2, batch, length, dim, generator=g)
    return x, t, pos, neg


def perturb(adapter, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


# ----------------------------------------------------------------------------- adapter


@pytest.mark.parametrize("make", ["testbed", "sd_like"])
def test_install_covers_cross_attention_only_and_remove_restores(parts, make):
    unet = parts[0] if make == "testbed" else sd_like_unet()
    dim = unet.config.cross_attention_dim
    chans = unet.config.in_channels
    x, t, pos, neg = inputs(channels=chans, size=unet.config.sample_size, dim=dim)
    before = dict(unet.attn_processors)
    with torch.no_grad():
        reference = unet(x, t, pos).sample
    adapter = install_sun(unet)
    after = unet.attn_processors
    for name, proc in after.items():
        if name.endswith("attn2.processor"):
            assert isinstance(proc, SUNAttnProcessor), name
        else:
            assert proc is before[name], f"self-attention {name} was replaced"
    num_cross = sum(n.endswith("attn2.processor") for n in before)
    assert len(adapter.names) == num_cross > 0
    with torch.no_grad():
        changed = unet(x, t, joint_context(pos, neg)).sample
    assert (changed - reference).abs().max() > 1e-3, "the adapter had no effect"
    adapter.remove()
    assert all(unet.attn_processors[n] is p for n, p in before.items())
    with torch.no_grad():
        assert torch.equal(unet(x, t, pos).sample, reference)


@pytest.mark.parametrize("attn_norm", ["sample", "batch", "none"])
def test_negative_equal_to_positive_reproduces_the_base_unet_at_init(parts, attn_norm):
    # copy-initialised branches: An' = Ae' = Ap, so Ap - An' + Ae' = Ap (CFG with cn = cp
    # likewise gives eps(cp) at every guidance scale)
    unet, _ = parts
    x, t, pos, _ = inputs()
    with torch.no_grad():
        reference = unet(x, t, pos).sample
        adapter = install_sun(unet, attn_norm=attn_norm)
        try:
            out = unet(x, t, joint_context(pos, pos)).sample
        finally:
            adapter.remove()
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)


def test_per_sample_norm_is_batch_independent_and_whole_tensor_norm_is_not(parts):
    unet, _ = parts
    x, t, pos, neg = inputs(batch=4)
    for mode, independent in (("sample", True), ("batch", False)):
        adapter = install_sun(unet, attn_norm=mode)
        perturb(adapter)
        with torch.no_grad():
            full = unet(x, t, joint_context(pos, neg)).sample
            alone = unet(x[:1], t[:1], joint_context(pos[:1], neg[:1])).sample
        adapter.remove()
        same = torch.allclose(full[:1], alone, atol=ATOL)
        assert same == independent, f"attn_norm={mode}: batch independence should be {independent}"


def test_attention_normalisation_matches_the_frozen_branch_norm(parts):
    unet, _ = parts
    adapter = install_sun(unet)
    layer = next(iter(adapter.layers.values()))
    adapter.remove()
    g = torch.Generator().manual_seed(0)
    width = layer.alpha_neg.numel()
    ref, x = torch.randn(3, 7, width, generator=g), torch.randn(3, 7, width, generator=g) * 5
    out = layer._normalise(x, ref, layer.alpha_neg, layer.beta_neg)  # alpha 1, beta 0 at init
    torch.testing.assert_close(torch.linalg.vector_norm(out, dim=(1, 2)),
                               torch.linalg.vector_norm(ref, dim=(1, 2)))
    with torch.no_grad():
        layer.alpha_neg.fill_(2.0)
        layer.beta_neg.fill_(0.5)
    out2 = layer._normalise(x, ref, layer.alpha_neg, layer.beta_neg)
    torch.testing.assert_close(out2, 2.0 * out + 0.5)


def test_only_adapter_parameters_train(parts):
    unet, _ = parts
    x, t, pos, neg = inputs(batch=2)
    adapter = install_sun(unet)
    try:
        trainable = {id(p) for p in unet.parameters() if p.requires_grad}
        assert trainable == {id(p) for p in adapter.parameters()}
        unet(x, t, joint_context(pos, neg)).sample.square().mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
        assert all(p.grad is None for n, p in unet.named_parameters() if "processor" not in n)
    finally:
        adapter.remove()
        for p in adapter.parameters():
            p.grad = None


def test_add_pos_false_has_half_the_projections():
    unet = sd_like_unet()
    with_pos = sum(p.numel() for p in install_sun(unet).parameters())
    unet2 = sd_like_unet()
    without = sum(p.numel() for p in install_sun(unet2, add_pos=False).parameters())
    assert with_pos == 2 * without
    # per layer of width C and text width D: 4 D x C projections + 4 C vectors (ref. sec. 2.4)
    widths = [p.to_k_neg.out_features for p in unet2.attn_processors.values()
              if isinstance(p, SUNAttnProcessor)]
    assert with_pos == sum(4 * 24 * c + 4 * c for c in widths)


def test_save_load_round_trip_holds_only_adapter_weights(parts, tmp_path):
    unet, _ = parts
    x, t, pos, neg = inputs(batch=2)
    adapter = install_sun(unet)
    perturb(adapter)
    with torch.no_grad():
        expected = unet(x, t, joint_context(pos, neg)).sample
    path = tmp_path / "sun.safetensors"
    adapter.save(path)
    adapter.remove()
    from safetensors.torch import load_file

    keys = set(load_file(str(path)))
    per_layer = {"to_k_neg.weight", "to_v_neg.weight", "to_k_pos2.weight", "to_v_pos2.weight",
                 "alpha_neg", "beta_neg", "alpha_pos2", "beta_pos2"}
    assert keys == {f"{n}.{k}" for n in adapter.names for k in per_layer}
    fresh = copy.deepcopy(unet)  # an untouched copy of the base UNet
    loaded = load_sun(fresh, path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, t, joint_context(pos, neg)).sample, expected,
                                   atol=ATOL, rtol=0)
    loaded.remove()
    other = install_sun(fresh, add_pos=False)
    with pytest.raises(ValueError, match="do not fit this UNet"):
        other.load(path)
    other.remove()
    with pytest.raises(ValueError, match="do not fit this UNet"):
        load_sun(sd_like_unet(), path)  # other layer names


def test_bad_inputs_get_clear_errors(parts):
    unet, _ = parts
    x, t, pos, neg = inputs(batch=2)
    adapter = install_sun(unet)
    try:
        with pytest.raises(ValueError, match="already installed"):
            install_sun(unet)
        with pytest.raises(ValueError, match="joint_context"):
            unet(x, t, torch.cat([pos, pos[:, :2]], dim=1))  # 7 tokens
        with pytest.raises(ValueError, match="same shape"):
            joint_context(pos, neg[:, :2])
    finally:
        adapter.remove()
    with pytest.raises(ValueError, match="attn_norm"):
        install_sun(sd_like_unet(), attn_norm="layer")


# ----------------------------------------------------------------------------- sampling, losses


def test_scheduler_trailing_spacing_shared_by_teacher_and_student():
    student, teacher = sun_teacher.make_scheduler(4), sun_teacher.make_scheduler(25)
    assert student.timesteps.tolist() == [999, 749, 499, 249]
    assert teacher.timesteps.tolist() == list(range(999, 0, -40))
    for key in ("timestep_spacing", "algorithm_type", "solver_order", "beta_schedule"):
        assert student.config[key] == teacher.config[key]
    assert student.config.timestep_spacing == "trailing"
    assert student.config.algorithm_type == "dpmsolver++"
    with pytest.raises(ValueError, match="num_steps"):
        sun_teacher.make_scheduler(0)


def _eps_fn(x, t):  # a deterministic, time-dependent stand-in for a denoiser
    return 0.6 * x + 0.001 * t.float()[:, None, None, None]


def test_msc_loss_zero_for_identical_trajectories_and_rollout_matches_sampler():
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    final, traj = sun_teacher.dpm_sample(_eps_fn, noise, 4, record=True)

    class Fake:  # unet(x, t, context).sample interface
        def __call__(self, x, t, context):
            return type("Out", (), {"sample": _eps_fn(x, t)})()
    rollout = sun_distill.student_rollout(Fake(), None, noise, 4)
    teacher_path = torch.cat([traj["states"][:, 1:], final[:, None]], dim=1)
    torch.testing.assert_close(rollout, teacher_path)
    assert sun_distill.msc_loss(rollout, teacher_path).item() == 0.0
    assert sun_distill.msc_loss(rollout + 0.1, teacher_path).item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="differ"):
        sun_distill.msc_loss(rollout[:, :3], teacher_path)


def test_teacher_targets_equal_recorded_states_on_shared_grid_points():
    # 8 trailing steps contain the 4-step grid, so no DDIM transfer distance is left
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    final, traj = sun_teacher.dpm_sample(_eps_fn, noise, 8, record=True)
    targets = sun_distill.teacher_states_at(traj, final, 4)
    grid = traj["timesteps"].tolist()
    for i, tau in enumerate([749, 499, 249]):
        torch.testing.assert_close(targets[:, i], traj["states"][:, grid.index(tau)])
    torch.testing.assert_close(targets[:, 3], final)


def test_student_rollout_carries_gradients_to_the_adapter(parts):
    unet, encoder = parts
    adapter = install_sun(unet)
    try:
        captions = testbed.sample_captions(testbed.all_combinations(), 2,
                                           torch.Generator().manual_seed(0))
        with torch.no_grad():
            ctx = joint_context(encoder(captions), encoder(testbed.empty_captions(2)))
        noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        states = sun_distill.student_rollout(unet, ctx, noise, 4)
        sun_distill.msc_loss(states, torch.zeros_like(states)).backward()
        assert adapter.layers[next(iter(adapter.layers))].to_k_neg.weight.grad.abs().sum() > 0
    finally:
        adapter.remove()
        for p in adapter.parameters():
            p.grad = None


def test_cfg_equals_plain_when_negative_equals_positive_or_scale_one(parts):
    unet, _ = parts
    x, t, pos, neg = inputs(batch=2)
    with torch.no_grad():
        plain = sun_teacher.plain_eps_fn(unet, pos)(x, t)
        torch.testing.assert_close(sun_teacher.guided_eps_fn(unet, pos, pos, 3.0)(x, t), plain,
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(sun_teacher.guided_eps_fn(unet, pos, neg, 1.0)(x, t), plain,
                                   atol=ATOL, rtol=0)


def test_random_prompt_pairs_never_negate_the_positive():
    g = torch.Generator().manual_seed(0)
    train, held = testbed.split_combinations()
    pos, neg = sun_distill.random_prompt_pairs(train, 2000, g, p_empty_neg=0.4, p_attr_drop=0.25)
    clash = (neg != testbed.ABSENT) & (neg == pos)
    assert not clash.any()
    empty = (neg == testbed.ABSENT).all(1).float().mean().item()
    assert 0.35 < empty < 0.5  # p_empty_neg plus the pairs whose only negation clashed
    assert ((neg != testbed.ABSENT).sum(1) <= 2).all()


# ----------------------------------------------------------------------------- testbed, metrics


def test_split_holds_out_combinations_and_render_is_seeded():
    train, held = testbed.split_combinations()
    assert len(held) == testbed.NUM_HELD_OUT and len(train) + len(held) == 240
    assert not (set(map(tuple, train.tolist())) & set(map(tuple, held.tolist())))
    labels = held[:5]
    a = testbed.render(labels, torch.Generator().manual_seed(3), "stripes")
    b = testbed.render(labels, torch.Generator().manual_seed(3), "stripes")
    assert torch.equal(a, b) and a.shape == (5, 3, 16, 16) and a.abs().max() <= 1
    with pytest.raises(ValueError, match="full captions"):
        testbed.render(testbed.empty_captions(1), torch.Generator())
    with pytest.raises(ValueError, match="style"):
        testbed.render(labels, torch.Generator(), "sepia")


def test_suites_use_held_out_combinations_and_negate_absent_slots():
    g = torch.Generator().manual_seed(0)
    _, held = testbed.split_combinations()
    s = sun_eval.make_suites(held, 40, 30, g)
    held_set = set(map(tuple, held.tolist()))
    assert all(tuple(row) in held_set for row in s.labels.tolist())
    r = torch.arange(30)
    assert (s.neg_pos[r, s.neg_slot] == testbed.ABSENT).all()
    assert (s.neg_neg[r, s.neg_slot] != testbed.ABSENT).all()
    assert ((s.neg_neg != testbed.ABSENT).sum(1) == 1).all()
    assert not ((s.neg != testbed.ABSENT) & (s.neg == s.labels)).any()


def test_frechet_distance_properties():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g)
    shift = torch.tensor([1.0, -2.0, 0, 0, 0.5, 0])
    assert sun_classifier.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert sun_classifier.frechet_distance(a, a + shift) == pytest.approx(5.25, rel=1e-6)
    assert sun_classifier.frechet_distance(a, 2 * a) > 1.0


def test_text_encoder_rejects_bad_captions():
    enc = testbed.TextEncoder(16)
    assert enc(testbed.empty_captions(2)).shape == (2, testbed.CONTEXT_LEN, 16)
    with pytest.raises(ValueError, match="label tensors"):
        enc(torch.zeros(2, 3, dtype=torch.long))


# ----------------------------------------------------------------------------- the bench table


def _row(domain, method, seed, **metrics):
    return {"status": "ok", "domain": domain, "method": method, "seed": seed, "metrics": metrics}


def test_table_aggregates_seeds_and_decides_claims_from_numbers():
    from bench import sun as bench

    rows = [_row("base", "teacher25_cfg", s, speedup=1.0, psnr_vs_ref=100.0, neg_hit=0.1)
            for s in (0, 1)]
    rows += [_row("base", "teacher4_cfg", s, nfe=8, psnr_vs_ref=20.0) for s in (0, 1)]
    rows += [_row("base", "teacher2_cfg", s, nfe=4, psnr_vs_ref=v)
             for s, v in ((0, 18.0), (1, 16.0))]
    rows += [_row("base", "sun", 0, nfe=4, speedup=11.0, psnr_vs_ref=24.0, neg_hit=0.1,
                  neg_hit_empty=0.3),
             _row("base", "sun", 1, nfe=4, speedup=13.0, psnr_vs_ref=22.0, neg_hit=0.2,
                  neg_hit_empty=0.3)]
    rows.append({"status": "failed", "domain": "base", "method": "sun", "seed": 2,
                 "metrics": {}, "error": "boom"})
    md = bench.render_markdown(rows, "header")
    assert "| base | sun | 4 ± 0 | n/a | 12.0x ± 1.4x | 23.00 ± 1.41 |" in md
    assert "holds (12.0x)" in md and "1 failed row(s)" in md
    # sun - teacher2_cfg = +6, +6 (no spread): holds; sun - teacher4_cfg = +4, +2: straddles 0
    assert ("- Fidelity at equal cost: SUN (`sun`, 4 NFE) is closer to the 25-step CFG output "
            "(PSNR, same noise) than the teacher's CFG at the same cost (`teacher2_cfg`, 4 NFE): "
            "holds — 23.00 vs 17.00 dB (diff +6.0 [+6.0, +6.0], p < 0.001, paired over 2 "
            "seeds). Context: the teacher's 4-step CFG at twice the cost (`teacher4_cfg`, 8 NFE) "
            "20.00 dB; SUN minus it: diff +3 [-10, +16], p = 0.2, paired over 2 seeds.") in md
    assert "0.150 of SUN samples with the negative prompt vs 0.300 with an empty one" in md
    assert "`teacher2_cfg` teacher, 2 steps, CFG" in md and "sun_retrained" not in md
    rows[6]["metrics"]["speedup"] = rows[7]["metrics"]["speedup"] = 5.0
    assert "does not hold (5.0x)" in bench.render_markdown(rows, "header")
    assert r"12.0x $\pm$ 1.4x" not in bench.render_latex(rows, "h")  # speedups changed above
    assert r"$\pm$" in bench.render_latex(rows, "h")


SEEDS = (0, 1, 2)


def _psnr_rows(domain, method, values, nfe=4):
    return [_row(domain, method, s, nfe=nfe, psnr_vs_ref=v) for s, v in zip(SEEDS, values)]


def _claim(lines, start):
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def test_compare_is_a_paired_test_across_seeds():
    from bench import sun as bench

    rows = (_psnr_rows("base", "a", [20.0, 21.0, 22.0])
            + _psnr_rows("base", "up", [21.0, 21.9, 23.1])
            + _psnr_rows("base", "down", [19.0, 20.1, 20.9])
            + _psnr_rows("base", "noisy", [19.0, 22.5, 21.0])
            + [_row("base", "one", 0, psnr_vs_ref=25.0)])
    values = bench.by_seed(rows)
    c = bench.compare(values, ("base", "up"), ("base", "a"), "psnr_vs_ref")
    assert c.verdict == "holds" and c.a == pytest.approx(22.0) and c.b == pytest.approx(21.0)
    assert c.evidence.endswith("paired over 3 seeds") and c.said() == "holds"
    down = bench.compare(values, ("base", "down"), ("base", "a"), "psnr_vs_ref")
    assert down.verdict == "does not hold"
    # lower is better flips the direction
    assert bench.compare(values, ("base", "down"), ("base", "a"), "psnr_vs_ref",
                         lower_is_better=True).verdict == "holds"
    # noisy - a = -1, +1.5, -1: mean > 0 would "win" on means, the interval straddles 0
    straddle = bench.compare(values, ("base", "noisy"), ("base", "a"), "psnr_vs_ref")
    assert straddle.verdict == "inconclusive" and straddle.a < straddle.b
    assert straddle.said() == "inconclusive (the 95 % interval of the difference straddles 0)"
    one = bench.compare(values, ("base", "one"), ("base", "a"), "psnr_vs_ref")
    assert one.verdict == "holds" and one.evidence == "diff +5.0, no test, 1 seed"
    assert bench.compare(values, ("base", "a"), ("style", "a"), "psnr_vs_ref") is None


def _full_rows(sun_base, t2_base, sun_style, t2_style, retrained, no_msc, no_attn_norm):
    rows = _psnr_rows("base", "teacher25_cfg", [100.0] * 3, nfe=50)
    rows += _psnr_rows("base", "teacher4_cfg", [25.0, 25.0, 25.0], nfe=8)
    rows += _psnr_rows("base", "teacher2_cfg", t2_base)
    rows += _psnr_rows("base", "sun", sun_base)
    rows += _psnr_rows("base", "sun_no_msc", no_msc)
    rows += _psnr_rows("base", "sun_no_attn_norm", no_attn_norm)
    rows += _psnr_rows("style", "teacher4_cfg", [25.0, 25.0, 25.0], nfe=8)
    rows += _psnr_rows("style", "teacher2_cfg", t2_style)
    rows += _psnr_rows("style", "sun", sun_style)
    rows += _psnr_rows("style", "sun_no_msc", no_msc)
    rows += _psnr_rows("style", "sun_no_attn_norm", sun_style)  # identical: zero difference
    rows += _psnr_rows("style", "sun_retrained", retrained)
    return rows


def test_claims_decide_each_comparison_by_a_paired_test():
    from bench import sun as bench

    lines = bench.claims(_full_rows(
        sun_base=[24.0, 25.0, 26.0], t2_base=[22.0, 23.1, 23.9],  # +2.0, +1.9, +2.1: holds
        sun_style=[22.0, 23.0, 24.0], t2_style=[23.0, 22.0, 24.5],  # -1, +1, -0.5: straddles
        retrained=[24.0, 24.0, 26.0], no_msc=[23.0, 24.1, 24.9], no_attn_norm=[24.5, 25.6, 26.4]))
    assert _claim(lines, "- Fidelity at equal cost:").count(": holds — 25.00 vs 23.00 dB (diff "
                                                             "+2.00 [+1.75, +2.25], p < 0.001") == 1
    plugin = _claim(lines, "- Plug-in to the fine-tuned model without retraining:")
    assert "(`teacher2_cfg`, 4 NFE): inconclusive (the 95 % interval of the difference straddles " \
           "0) — 23.00 vs 23.17 dB" in plugin
    assert "Against the upper bound `sun_retrained` (trained on the fine-tune's own " \
           "trajectories, 24.67 dB), the base-trained file keeps -11 % of its PSNR gain over " \
           "`teacher2_cfg` (base-trained minus retrained: diff -1.7" in plugin
    assert "Context: the fine-tune's own 4-step CFG at twice the cost (`teacher4_cfg`, 8 NFE) " \
           "25.00 dB; the base-trained SUN minus it:" in plugin
    assert _claim(lines, "- The MSC loss helps (base):").startswith(
        "- The MSC loss helps (base): holds — PSNR 25.00 dB with vs 24.00 dB without "
        "(`sun_no_msc`; diff +1.0")
    assert ": does not hold — PSNR 25.00 dB with vs 25.50 dB without (`sun_no_attn_norm`" in \
        _claim(lines, "- Attention normalisation helps (base):")
    assert ": does not hold — PSNR 23.00 dB with vs 24.00 dB without" in _claim(
        lines, "- The MSC loss helps (style: the base-trained files on the fine-tune):")
    assert _claim(lines, "- Attention normalisation helps (style: the base-trained files on the "
                  "fine-tune):").count(": inconclusive (the difference is 0 on every seed) — "
                                       "PSNR 23.00 dB with vs 23.00 dB") == 1

    # the plug-in holds on the equal-cost baseline, and the retrained bound gains nothing
    lines = bench.claims(_full_rows(
        sun_base=[24.0, 25.0, 26.0], t2_base=[22.0, 23.1, 23.9], sun_style=[24.0, 24.5, 25.0],
        t2_style=[22.0, 22.4, 23.1], retrained=[21.0, 22.0, 23.0], no_msc=[23.0, 24.1, 24.9],
        no_attn_norm=[24.5, 25.6, 26.4]))
    plugin = _claim(lines, "- Plug-in to the fine-tuned model without retraining:")
    assert "(`teacher2_cfg`, 4 NFE): holds — 24.50 vs 22.50 dB" in plugin
    assert ("Upper bound `sun_retrained` (trained on the fine-tune's own trajectories) 22.00 dB "
            "gains nothing over `teacher2_cfg` (22.50 dB), so no share of its gain is given"
            ) in plugin
    lines = bench.claims(_full_rows(
        sun_base=[24.0, 25.0, 26.0], t2_base=[22.0, 23.1, 23.9], sun_style=[24.0, 24.5, 25.0],
        t2_style=[22.0, 22.4, 23.1], retrained=[26.0, 26.6, 27.0], no_msc=[23.0, 24.1, 24.9],
        no_attn_norm=[24.5, 25.6, 26.4]))
    plugin = _claim(lines, "- Plug-in to the fine-tuned model without retraining:")
    assert "keeps 50 % of its PSNR gain" in plugin  # (24.5 - 22.5) / (26.53 - 22.5)
    assert "base-trained minus retrained: diff -2.0" in plugin


def test_claims_render_rows_from_before_the_equal_cost_baseline():
    from bench import sun as bench

    rows = [r for r in _full_rows([24.0, 25.0, 26.0], [22.0, 23.1, 23.9], [22.0, 23.0, 24.0],
                                  [23.0, 22.0, 24.5], [24.0, 24.0, 26.0], [23.0, 24.1, 24.9],
                                  [24.5, 25.6, 26.4])
            if r["method"] not in ("teacher2_cfg", "sun_retrained")]
    md = bench.render_markdown(rows, "header")
    assert ("- Fidelity at equal cost: not computed (no `teacher2_cfg` rows: these rows predate "
            "the equal-cost baseline). Context: the teacher's 4-step CFG") in md
    assert "- Plug-in to the fine-tuned model without retraining: not computed" in md
    assert "teacher2_cfg` teacher" not in md and "sun_retrained" not in md


def test_equal_cost_baseline_has_suns_nfe_and_derives_its_steps_from_the_config():
    from bench import sun as bench
    from core.sun.config import SunConfig

    for cfg in (SunConfig(), SunConfig.quick()):
        for domain in bench.DOMAINS:
            methods = bench.domain_methods(cfg, domain)
            assert methods["teacher2_cfg"].nfe == methods["sun"].nfe == 4
            assert methods["teacher2_cfg"].steps == cfg.equal_cost_steps == 2
            assert methods["teacher4_cfg"].nfe == 8 and methods["teacher25_cfg"].nfe == 50
            assert methods["teacher4_nocfg"].nfe == 4
    six = SunConfig.quick(distill=sun_distill.DistillConfig(student_steps=6))
    assert six.equal_cost_steps == 3
    assert bench.domain_methods(six, "base")["teacher2_cfg"].nfe == 6
    for odd in (1, 3):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            SunConfig.quick(distill=sun_distill.DistillConfig(student_steps=odd))


def test_style_domain_runs_every_base_trained_variant_and_the_retrained_adapter():
    from bench import sun as bench
    from core.sun.config import VARIANTS, SunConfig

    cfg = SunConfig.quick()
    base, style = bench.domain_methods(cfg, "base"), bench.domain_methods(cfg, "style")
    teachers = ["teacher25_cfg", "teacher4_cfg", "teacher2_cfg", "teacher4_nocfg"]
    assert list(base) == teachers + list(VARIANTS)
    assert list(style) == teachers + list(VARIANTS) + ["sun_retrained"]
    assert {name: m.adapter for name, m in style.items() if m.kind == "sun"} == {
        **{v: v for v in VARIANTS}, "sun_retrained": "sun_retrained"}
    assert set(bench.METHOD_NOTES) >= set(style)
    with pytest.raises(ValueError, match="domain"):
        bench.domain_methods(cfg, "anime")


def test_retrained_adapter_is_trained_on_the_style_teachers_own_trajectories(parts, tmp_path,
                                                                            monkeypatch):
    from bench import sun as bench
    from core.sun.config import SunConfig

    unet, encoder = parts
    style = copy.deepcopy(unet)
    calls = []

    def fake_cache(teacher, enc, combos, dcfg, g):
        calls.append(("cache", teacher, g.initial_seed()))
        return {}

    def fake_train(teacher, adapter, enc, cache, dcfg, g, log):
        calls.append(("train", teacher, dcfg, g.initial_seed()))

    monkeypatch.setattr(bench.sun_distill, "build_trajectory_cache", fake_cache)
    monkeypatch.setattr(bench.sun_distill, "train_adapter", fake_train)
    cfg = SunConfig.quick()
    paths = bench.train_adapters(cfg, {"unet": unet, "style": style, "encoder": encoder}, 3,
                                 tmp_path)
    assert list(paths) == list(cfg.variants) + ["sun_retrained"]
    assert all(p.exists() for p in paths.values())
    caches = [c for c in calls if c[0] == "cache"]
    assert [(c[1], c[2]) for c in caches] == [(unet, 1003), (style, 1003)]  # same pool per seed
    trains = [c for c in calls if c[0] == "train"]
    assert [t[1] for t in trains] == [unet] * len(cfg.variants) + [style]
    assert trains[-1][2] == trains[0][2] == cfg.distill  # sun_retrained: the `sun` DistillConfig
    assert {t[3] for t in trains} == {2003}
    assert not any(isinstance(p, SUNAttnProcessor) for m in (unet, style)
                   for p in m.attn_processors.values())


def test_speedup_claim_uses_pooled_per_round_intervals_at_every_thread_count():
    from bench import sun as bench

    def rows(rounds_1, rounds_2):
        return [dict(_row("base", "sun", seed, speedup=12.0), metrics={
            "speedup": 12.0, "speedup_t1_rounds": r1, "speedup_t2_rounds": r2})
            for seed, (r1, r2) in enumerate(zip(rounds_1, rounds_2))]
    good = rows([[11.0, 12, 13, 14, 15]] * 2, [[10.5, 11, 12, 13, 14]] * 2)
    pooled = bench.pooled_speedups(good)[("base", "sun")]
    assert pooled[1]["n"] == 10 and pooled[1]["lo"] <= pooled[1]["median"] <= pooled[1]["hi"]
    md = bench.render_markdown(good, "header")
    assert "wall-clock vs 25-step DPM-Solver++ with CFG: holds (1 thread: 13.0x [" in md
    assert "| base | sun | 13.0x [" in md  # the wall-clock table
    straddle = rows([[11.0, 12, 13, 14, 15]] * 2, [[8.0, 9, 10.5, 11, 12]] * 2)
    assert ": inconclusive" in bench.render_markdown(straddle, "h")
    slow = rows([[5.0, 6, 7, 8, 9]] * 2, [[5.0, 6, 7, 8, 9]] * 2)
    assert ": does not hold (1 thread: 7.0x" in bench.render_markdown(slow, "h")


def test_time_domain_interleaves_methods_and_leaves_the_unet_plain(parts, tmp_path):
    from bench import sun as bench

    unet, encoder = parts
    adapter = install_sun(unet)
    path = tmp_path / "sun.safetensors"
    adapter.save(path)
    adapter.remove()
    before = dict(unet.attn_processors)
    _, held = testbed.split_combinations()
    suites = sun_eval.make_suites(held, 8, 4, torch.Generator().manual_seed(0))
    methods = {bench.REF: (sun_eval.teacher_cfg_sampler(unet, 2, 3.0), None),
               "sun": (sun_eval.sun_sampler(unet, 2), path)}
    opts = bench.TimingOptions(threads=(1,), repeats=2, warmup=0, batch=3, headline=1)
    out = bench.time_domain(unet, methods, encoder, suites, opts)
    assert all(unet.attn_processors[n] is p for n, p in before.items())
    assert out[bench.REF]["speedup"] == 1.0 and out["sun"]["timing_batch"] == 3
    m = out["sun"]
    assert m["ms_per_image_t1_lo"] <= m["ms_per_image"] <= m["ms_per_image_t1_hi"]
    assert len(m["speedup_t1_rounds"]) == 2 and m["speedup"] == m["speedup_t1"]
    with pytest.raises(ValueError, match="include the run's"):
        bench.TimingOptions(threads=(1,), headline=2)


@pytest.mark.slow
def test_quick_bench_end_to_end(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/sun.py"), "--quick", "--seeds", "0", "--threads", "1",
         "--timing-threads", "1", "--results", str(tmp_path / "runs.jsonl"), "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["rows"] == 15
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"sun"} and {r["table"] for r in rows} == {"sun"}
    teachers = ["teacher25_cfg", "teacher4_cfg", "teacher2_cfg", "teacher4_nocfg"]
    variants = ["sun", "sun_no_msc", "sun_no_attn_norm"]
    for domain, extra in (("base", []), ("style", ["sun_retrained"])):
        mine = [r for r in rows if r["domain"] == domain]
        assert [r["method"] for r in mine] == teachers + variants + extra
        nfe = {r["method"]: r["metrics"]["nfe"] for r in mine}
        assert nfe["teacher2_cfg"] == nfe["sun"] == 4
        assert all("speedup_t1_rounds" in r["metrics"] for r in mine)  # every method timed
    md = (tmp_path / "sun.md").read_text()
    assert md.count("| base |") == 14 and md.count("| style |") == 16  # metrics + wall-clock
    for start in ("- Fidelity at equal cost: SUN", "- Plug-in to the fine-tuned model without "
                  "retraining: the base-trained", "- The MSC loss helps (style"):
        assert start in md
    assert (tmp_path / "sun.tex").exists()
