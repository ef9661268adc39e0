"""SUN on VideoMAR's per-token head (core/sun/solver.py, head_adapter.py, head_distill.py and
core/head_sampler.py): adapter identity, one-pass guidance, the solver, distillation,
weights-only save/load, the sampler's `head` option and its head hook."""

from __future__ import annotations

import pytest
import torch

from core.config import ConfigError, DataConfig, HeadDistillConfig, SamplerConfig, preset
from core.data import build_dataset
from core.diffusion_head import DiffusionHead
from core.model import VideoMAR
from core.sampler import sample_latents
from core.sun import head_adapter, head_distill, solver

TOKEN_DIM, COND_DIM = 6, 10


def _head(seed: int = 0) -> DiffusionHead:
    """A small head whose zero-initialised output layers are randomised (a non-trivial eps)."""
    torch.manual_seed(seed)
    head = DiffusionHead(TOKEN_DIM, COND_DIM, depth=2, width=16)
    with torch.no_grad():
        for p in head.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.3)
    return head.eval()


def _conditions(n: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, COND_DIM, generator=g), torch.randn(n, COND_DIM, generator=g)


def test_fresh_adapter_with_equal_conditions_is_the_plain_head():
    head = _head()
    adapter = head_adapter.SUNHeadAdapter(head.net, cfg_max=3.0)
    z, _ = _conditions()
    x = torch.randn(z.shape[0], TOKEN_DIM)
    for t, w in [(999, 3.0), (400, 1.0), (20, 2.2)]:
        tt = torch.tensor([t])
        student = adapter.eps_fn(head, z, z, torch.tensor(w))(x, tt)
        plain = head.net(x, tt, z)[:, :TOKEN_DIM]
        torch.testing.assert_close(student, plain, rtol=1e-5, atol=1e-5)


def test_guided_eps_of_the_teacher_is_cfg_and_the_student_uses_one_pass():
    head = _head()
    z, z_u = _conditions()
    x, t = torch.randn(z.shape[0], TOKEN_DIM), torch.tensor([500])
    eps_c, eps_u = head.net(x, t, z)[:, :TOKEN_DIM], head.net(x, t, z_u)[:, :TOKEN_DIM]
    guided = solver.guided_eps_fn(head, z, z_u, torch.tensor(2.5))(x, t)
    torch.testing.assert_close(guided, eps_u + 2.5 * (eps_c - eps_u), rtol=1e-5, atol=1e-5)
    w = torch.linspace(1.0, 3.0, z.shape[0])  # per-token scales, (N,) or (N, 1)
    for shape in [(-1,), (-1, 1)]:
        per_token = solver.guided_eps_fn(head, z, z_u, w.reshape(shape))(x, t)
        torch.testing.assert_close(per_token, eps_u + w[:, None] * (eps_c - eps_u), rtol=1e-5,
                                   atol=1e-5)

    rows = []
    hook = head.net.register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    adapter = head_adapter.SUNHeadAdapter(head.net, cfg_max=3.0)
    adapter.sample(head, z, z_u, cfg_scale=3.0, num_steps=4,
                   generator=torch.Generator().manual_seed(0))
    assert rows == [z.shape[0]] * 4  # 4 steps, one pass of N rows each (CFG folded in)
    rows.clear()
    solver.sample_dpm(head, z, z_u, cfg_scale=3.0, num_steps=4,
                      generator=torch.Generator().manual_seed(0))
    assert rows == [2 * z.shape[0]] * 4  # the frozen head needs [cond; uncond]
    hook.remove()


def test_solver_converges_to_the_many_step_solution():
    head = _head()
    z, _ = _conditions()
    cond = head.net.cond_embed(z)
    eps_fn = lambda x, t: head.net(x, t, None, cond)[:, :TOKEN_DIM]  # noqa: E731
    x_T = torch.randn(z.shape[0], TOKEN_DIM, generator=torch.Generator().manual_seed(3))
    ref, traj = solver.solve(eps_fn, head, x_T, 200, record=True)
    assert traj["states"].shape == (z.shape[0], 200, TOKEN_DIM)
    errors = [(solver.solve(eps_fn, head, x_T, n)[0] - ref).abs().mean().item()
              for n in (4, 20, 100)]
    assert errors[0] > errors[1] > errors[2]
    clipped, _ = solver.solve(eps_fn, head, x_T, 4, clip_x0=0.5)
    assert clipped.abs().max() <= 0.5 + 1e-5  # the last step lands on the clamped x0

    def sde(seed):
        g = torch.Generator().manual_seed(seed)
        return solver.solve(eps_fn, head, x_T, 4, noise=lambda: torch.randn(
            x_T.shape, generator=g))[0]
    torch.testing.assert_close(sde(0), sde(0))  # the noise comes only from the given function
    assert not torch.allclose(sde(0), sde(1))
    assert not torch.allclose(sde(0), solver.solve(eps_fn, head, x_T, 4)[0])


def test_coupled_noise_puts_teacher_and_student_on_one_brownian_path():
    """SDE-DPM-Solver++ at 40 steps on the noise coupled to a 4-step run's noise: the fine
    noises are i.i.d. N(0, 1), and for a denoiser whose x0 does not depend on x (where the
    solver is exact) both runs meet at every coarse timestep; independent noise does not."""
    head = VideoMAR(preset("tiny", width=32, depth=1, num_heads=2, head_width=32,
                           head_depth=1), seed=0).head
    g = torch.Generator().manual_seed(0)
    fine = solver.coupled_noise(head, 40, 4, torch.randn(20000, 4, 2, generator=g), g)
    assert fine.shape == (20000, 40, 2)
    corr = torch.corrcoef(fine[:, :, 0].T)
    assert (corr - torch.eye(40)).abs().max() < 0.04
    assert (fine.std(dim=(0, 2)) - 1).abs().max() < 0.03
    abar = solver.make_scheduler(head, 4).alphas_cumprod
    x0 = torch.randn(1, 3, generator=g)

    def eps_fn(x, t):  # the exact eps when the data is the point x0
        a = abar[t].float()
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    x_T, coarse = torch.randn(6, 3, generator=g), torch.randn(6, 4, 3, generator=g)
    _, student = solver.solve(eps_fn, head, x_T, 4, noise=solver.replay(coarse))
    coupled = solver.coupled_noise(head, 40, 4, coarse, g)
    for noise, close in ((coupled, True), (torch.randn(6, 40, 3, generator=g), False)):
        _, teacher = solver.solve(eps_fn, head, x_T, 40, noise=solver.replay(noise))
        gap = (student["after"] - teacher["after"][:, [9, 19, 29, 39]]).abs().max()
        assert (gap < 2e-3) == close, gap


def test_temperature_scales_x_T_and_seeds_are_deterministic():
    head = _head()
    adapter = head_adapter.SUNHeadAdapter(head.net, cfg_max=3.0)
    z, z_u = _conditions()

    def draw(seed, temperature=1.0, stochastic=False):
        return adapter.sample(head, z, z_u, cfg_scale=2.0, num_steps=4, temperature=temperature,
                              generator=torch.Generator().manual_seed(seed),
                              stochastic=stochastic)

    for sde in (False, True):
        torch.testing.assert_close(draw(7, stochastic=sde), draw(7, stochastic=sde))
        assert not torch.allclose(draw(7, stochastic=sde), draw(8, stochastic=sde))
        assert not torch.allclose(draw(7, stochastic=sde), draw(7, 0.5, stochastic=sde))
    with pytest.raises(ValueError, match="cfg_max=3"):
        adapter.sample(head, z, z_u, cfg_scale=4.0, num_steps=4, generator=torch.Generator())


def _setup(steps=4, pool=96, teacher_steps=40, solver_kind="sde"):
    model = VideoMAR(preset("tiny", width=32, depth=1, num_heads=2, head_width=32, head_depth=1,
                            num_sampling_steps=5), seed=0).eval()
    with torch.no_grad():  # a non-trivial head: randomise its zero-initialised output layers
        for p in model.head.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.2)
    data = build_dataset(DataConfig(num_frames=3), "train", seed=0)
    sampler = SamplerConfig(head="sun", num_sampling_steps=steps, cfg_scale=3.0, num_iter=2,
                            head_solver=solver_kind)
    cfg = HeadDistillConfig(num_clips=2, pool_size=pool, teacher_sampling_steps=3,
                            teacher_steps=teacher_steps, steps=0, batch_cfg=32, batch_msc=16)
    return model, data, sampler, cfg


@pytest.mark.parametrize("solver_kind", ["sde", "ode"])
def test_distillation_brings_the_4_step_student_to_the_teacher(solver_kind):
    model, data, sampler, cfg = _setup(solver_kind=solver_kind)
    g = torch.Generator().manual_seed(0)
    clips = [(model.tokenizer.encode(b["video"][:, :1]), 3)
             for b in torch.utils.data.DataLoader(data, batch_size=2)][:1]
    pool = head_distill.teacher_pool(model, clips, [["a red circle"] * 2], sampler, cfg, 3.0,
                                     None, 4, g)
    assert pool["targets"].shape == (pool["z"].shape[0], 4, model.cfg.token_dim)
    assert torch.allclose(pool["targets"][:, -1], pool["final"])
    # The targets are the teacher's states at the student's timesteps (749, 499, 249, 0), on
    # the solver the student samples with (SDE: the Brownian path of the student's step noise):
    # the same guided chain solved in only 4 steps lands near each, far nearer than its spread.
    assert ("step_noise" in pool) == (solver_kind == "sde")
    teacher_fn = solver.guided_eps_fn(model.head, pool["z"], pool["z_uncond"], pool["guidance"])
    rows = torch.arange(pool["z"].shape[0])
    with torch.no_grad():
        _, coarse = solver.solve(teacher_fn, model.head, pool["noise"], 4,
                                 noise=head_distill.rollout_noise(pool, rows))
    err = (coarse["after"] - pool["targets"]).pow(2).mean(dim=(0, 2))
    spread = pool["targets"].var(dim=0).mean(dim=-1)
    assert bool((err < 0.1 * spread).all()), (err, spread)
    weights = {k: v.clone() for k, v in model.head.state_dict().items()}
    before = head_adapter.SUNHeadAdapter(model.head.net, 3.0)
    distill_cfg = HeadDistillConfig(steps=60, batch_cfg=64, batch_msc=32, lr=3e-3)
    trained, curves = head_distill.distill(model, pool, distill_cfg, 3.0, 4, None, g,
                                           log=lambda s: None)
    for k, v in model.head.state_dict().items():  # the head is frozen: only the adapter trains
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    assert all(p.requires_grad for p in model.head.parameters())  # and unfrozen again after

    def gap(adapter):
        fn = adapter.eps_fn(model.head, pool["z"], pool["z_uncond"], pool["guidance"])
        with torch.no_grad():
            out, _ = solver.solve(fn, model.head, pool["noise"], 4,
                                  noise=head_distill.rollout_noise(pool, rows))
        return (out - pool["final"]).pow(2).mean().item()

    assert gap(trained) < 0.8 * gap(before)
    assert curves["msc"][-1] < curves["msc"][0]


def test_teacher_grid_must_contain_the_students():
    model, data, sampler, cfg = _setup(teacher_steps=25)
    with pytest.raises(ValueError, match="not on the teacher's grid"):
        head_distill.distill_for_model(model, data, sampler, cfg, seed=0, log=lambda s: None)


def test_sampler_head_option_save_load_and_errors(tmp_path):
    model, data, sampler, cfg = _setup()
    cond = model.tokenizer.encode(data[0]["video"][None, :1])
    with pytest.raises(ValueError, match="no SUN head adapter"):
        sample_latents(model, cond, 3, sampler, torch.Generator(), ["x"])
    adapter, info = head_distill.distill_for_model(
        model, data, sampler, HeadDistillConfig(**{**cfg.__dict__, "steps": 2}), seed=0,
        log=lambda s: None)
    assert info["student_steps"] == 4 and info["cfg_max"] == 3.0
    path = tmp_path / "head.safetensors"
    adapter.save(path, info, head=model.head)
    head_adapter.install(model, adapter)
    assert not any(n.startswith(head_adapter.ATTR)
                   for n in model.state_dict())  # not in checkpoints
    first = sample_latents(model, cond, 3, sampler, torch.Generator().manual_seed(0), ["x"])
    head_adapter.remove(model)
    from_file = SamplerConfig(**{**sampler.__dict__, "head_adapter": str(path)})
    second = sample_latents(model, cond, 3, from_file, torch.Generator().manual_seed(0), ["x"])
    torch.testing.assert_close(first, second)
    dpm = SamplerConfig(**{**sampler.__dict__, "head": "dpm"})
    assert sample_latents(model, cond, 3, dpm, torch.Generator(), ["x"]).shape == first.shape

    with pytest.raises(FileNotFoundError, match="distil one"):
        head_adapter.load_adapter(model.head, tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="delete it and distil again"):
        head_adapter.load_adapter(model.head, tmp_path / "bad.safetensors")
    other = DiffusionHead(model.cfg.token_dim, model.cfg.width, depth=1, width=48)
    with pytest.raises(ValueError, match="does not fit"):
        head_adapter.load_adapter(other, path)
    with pytest.warns(UserWarning, match="distilled for 4 steps"):
        sample_latents(model, cond, 3, SamplerConfig(**{**from_file.__dict__,
                                                       "num_sampling_steps": 8}),
                       torch.Generator(), ["x"])
    with torch.no_grad():  # other head weights than the ones it was distilled from
        model.head.net.input_proj.bias.add_(0.1)
    with pytest.warns(UserWarning, match="other head weights"):
        head_adapter.load_adapter(model.head, path)
    too_strong = SamplerConfig(**{**from_file.__dict__, "cfg_scale": 5.0})
    with pytest.raises(ValueError, match="cfg_max"):
        sample_latents(model, cond, 3, too_strong, torch.Generator(), ["x"])


def test_head_config_errors():
    with pytest.raises(ConfigError, match="sampler.head="):
        SamplerConfig(head="lcm")
    with pytest.raises(ConfigError, match="num_sampling_steps"):
        SamplerConfig(head="sun", cfg_scale=3.0)
    with pytest.raises(ConfigError, match="classifier-free guidance"):
        SamplerConfig(head="sun", num_sampling_steps=4)
    with pytest.raises(ConfigError, match="head_solver"):
        SamplerConfig(head_solver="euler")
    with pytest.raises(ConfigError, match="lambda_msc"):
        HeadDistillConfig(lambda_msc=-1)


def test_head_hook_sees_every_guided_head_call_and_changes_nothing():
    model, data, _, _ = _setup()
    cond = model.tokenizer.encode(data[0]["video"][None, :1])
    head_calls = []
    model.head.sample = lambda *a, **kw: (head_calls.append(kw["cfg_scale"]),
                                          type(model.head).sample(model.head, *a, **kw))[1]
    try:
        for head, guidance in [("ddpm", 3.0), ("dpm", 3.0), ("ddpm", 1.0)]:
            sampler = SamplerConfig(head=head, num_sampling_steps=4, cfg_scale=guidance,
                                    num_iter=2)
            plain = sample_latents(model, cond, 3, sampler, torch.Generator().manual_seed(0),
                                   ["x"])
            head_calls.clear()
            records = []
            hooked = sample_latents(model, cond, 3, sampler, torch.Generator().manual_seed(0),
                                    ["x"], head_hook=lambda z, z_u, w: records.append(
                                        (z.shape, z_u.shape, w)))
            assert torch.equal(plain, hooked)  # the hook only observes
            assert len(records) == (4 if guidance != 1.0 else 0)  # 2 frames x 2 iterations
            if head == "ddpm":  # exactly the guided calls of the DDPM head, with their scales
                assert [w for *_, w in records] == head_calls[:len(records)]
            assert all(s == u for s, u, _ in records)
    finally:
        del model.head.sample
