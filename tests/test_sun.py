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
    rows += [_row("base", "teacher4_cfg", s, psnr_vs_ref=20.0) for s in (0, 1)]
    rows += [_row("base", "sun", 0, speedup=11.0, psnr_vs_ref=24.0, neg_hit=0.1, neg_hit_empty=0.3),
             _row("base", "sun", 1, speedup=13.0, psnr_vs_ref=22.0, neg_hit=0.2, neg_hit_empty=0.3)]
    rows.append({"status": "failed", "domain": "base", "method": "sun", "seed": 2,
                 "metrics": {}, "error": "boom"})
    md = bench.render_markdown(rows, "header")
    assert "| base | sun | n/a | n/a | 12.0x ± 1.4x | 23.00 ± 1.41 |" in md
    assert "holds (12.0x)" in md and "SUN is closer" in md
    assert "0.150 of SUN samples vs 0.300" in md and "1 failed row(s)" in md
    rows[4]["metrics"]["speedup"] = rows[5]["metrics"]["speedup"] = 5.0
    assert "does not hold (5.0x)" in bench.render_markdown(rows, "header")
    assert r"12.0x $\pm$ 1.4x" not in bench.render_latex(rows, "h")  # speedups changed above
    assert r"$\pm$" in bench.render_latex(rows, "h")


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
    assert summary["ok"] and summary["rows"] == 10
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"sun"} and {r["table"] for r in rows} == {"sun"}
    assert (tmp_path / "sun.md").read_text().count("| base |") == 12  # metrics + wall-clock
    assert (tmp_path / "sun.tex").exists()
