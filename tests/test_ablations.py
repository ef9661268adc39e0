"""The ablation suite: curricula, FLOP budgets, position embeddings, configs and idempotent sweeps."""

from __future__ import annotations

import dataclasses

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from core.config import ConfigError, DataConfig, RunConfig, SamplerConfig, TrainConfig, preset
from core.curriculum import Curriculum, Stage
from core.data import build_dataset
from core.flops import train_step_flops
from core.model import VideoMAR
from core.train import derive_seed, train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "ablations" / "conf"
from ablations import run as run_app  # noqa: E402

SMALL_MODEL = dict(width=32, depth=1, num_heads=2, head_width=32, head_depth=1,
                   num_sampling_steps=3)
TINY_RUN = ["train.steps=2", "train.batch_size=2", "train.ckpt_every=0", "eval.num_clips=2",
            "eval.num_loss_batches=1", "sampler.num_iter=2", "model.num_sampling_steps=3",
            "model.width=32", "model.num_heads=2", "model.depth=1", "model.head_width=32",
            "threads=1"]

SUN_HEAD_QUICK = ["head_distill.steps=3", "head_distill.num_clips=2", "head_distill.pool_size=64",
                  "head_distill.teacher_sampling_steps=3", "head_distill.batch_cfg=16",
                  "head_distill.batch_msc=8", "head_distill.batch_states=2"]


def _tiny_model(**overrides) -> VideoMAR:
    return VideoMAR(preset("tiny", **{**SMALL_MODEL, **overrides}), seed=0)


# ------------------------------------------------------------------------------- curriculum


def test_curriculum_stages_follow_progress_and_milestones():
    equal = Curriculum(TrainConfig(frame_stages=[2, 4, 8], res_stages=[16, 32]), 8, 32, 48)
    assert equal.stage_at(0.0) == Stage(2, 16, 24)
    assert equal.stage_at(0.34) == Stage(4, 16, 24)
    assert equal.stage_at(0.5) == Stage(4, 32, 48)
    assert equal.stage_at(0.99) == Stage(8, 32, 48)
    custom = Curriculum(TrainConfig(frame_stages=[2, 8], frame_milestones=[0.9]), 8, 32, 32)
    assert custom.stage_at(0.89).frames == 2 and custom.stage_at(0.9).frames == 8
    off = Curriculum(TrainConfig(), 8, 32, 32)
    assert {off.stage_at(p) for p in (0.0, 0.5, 1.0)} == {Stage(8, 32, 32)}


def test_curriculum_apply_keeps_first_frames_and_area_averages():
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 8, 3, 8, 8, generator=g)
    cut = Curriculum.apply(video, Stage(3, 4, 4))
    assert cut.shape == (2, 3, 3, 4, 4)
    blocks = video[:, :3].unflatten(3, (4, 2)).unflatten(5, (4, 2)).mean(dim=(4, 6))
    torch.testing.assert_close(cut, blocks)
    assert Curriculum.apply(video, Stage(8, 8, 8)) is video or torch.equal(
        Curriculum.apply(video, Stage(8, 8, 8)), video)
    with pytest.raises(ValueError, match="only downsample"):
        Curriculum.apply(video, Stage(8, 16, 16))


@pytest.mark.parametrize("bad, match", [
    (dict(frame_stages=[4, 2]), "must grow"),
    (dict(frame_stages=[2, 4, 8], frame_milestones=[0.5]), "need len"),
    (dict(res_stages=[16, 32], res_milestones=[1.2]), "fractions in"),
    (dict(flop_budget=-1.0), ">= 0"),
])
def test_bad_stage_lists_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**bad)


@pytest.mark.parametrize("train_cfg, data, match", [
    (dict(frame_stages=[1, 8]), {}, "more than"),
    (dict(frame_stages=[2, 16]), {}, "at most data.num_frames"),
    (dict(res_stages=[18, 32]), {}, "divisible by the tokenizer stride"),
    (dict(res_stages=[16, 64]), {}, "must be <= data.height"),
])
def test_stages_must_fit_the_data(train_cfg, data, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig(train=TrainConfig(**train_cfg), data=DataConfig(**data))


def _train(tmp_path, name, **train_kw):
    model = _tiny_model()
    data = build_dataset(DataConfig(num_train=64), "train")
    cfg = TrainConfig(batch_size=4, ckpt_every=0, **train_kw)
    return model, cfg, train(model, data, cfg, seed=3, out_dir=None, progress=False,
                             val_fn=lambda: 0.25)


def test_flop_budget_stops_training_and_curriculum_buys_more_steps(tmp_path):
    _, cfg_off, off = _train(tmp_path, "off", steps=200, budget_steps=6, val_every=2)
    _, cfg_on, on = _train(tmp_path, "on", steps=200, budget_steps=6, val_every=2,
                           frame_stages=[2, 4, 8], res_stages=[16, 32])
    budget = 6 * train_step_flops(preset("tiny", **SMALL_MODEL), 4, 8, (8, 8))
    for summary in (off, on):
        flops = summary["flops"]
        assert flops[-1] >= budget > flops[-2]  # stopped at the step that reached the budget
        assert summary["train_flops"] == flops[-1]
        assert all(b > a for a, b in zip(flops, flops[1:]))
    assert on["steps"] > 2 * off["steps"]  # short, small clips are cheaper per step
    assert [s[1:] for s in on["stages"]][0] == [2, 16, 16] and on["stages"][-1][1:] == [8, 32, 32]
    assert off["stages"] == [[0, 8, 32, 32]]
    steps = [v["step"] for v in on["val_curve"]]
    assert steps == sorted(set(steps)) and steps[-1] == on["steps"]
    assert all(v["flops"] == on["flops"][v["step"] - 1] for v in on["val_curve"])


@pytest.mark.parametrize("model_kw", [dict(attn="full"), dict(temporal_window=1),
                                      dict(target_frames="all")])
def test_the_budget_is_counted_in_causal_steps_for_every_attention_pattern(model_kw):
    """Arms that differ in attention get equal compute: a full-attention step costs more than a
    causal one, so the same budget_steps buys it fewer steps."""
    model = _tiny_model(**model_kw)
    data = build_dataset(DataConfig(num_train=64), "train")
    cfg = TrainConfig(batch_size=4, ckpt_every=0, steps=200, budget_steps=6)
    summary = train(model, data, cfg, seed=3, out_dir=None, progress=False)
    budget = 6 * train_step_flops(preset("tiny", **SMALL_MODEL), 4, 8, (8, 8))
    assert summary["flops"][-1] >= budget > summary["flops"][-2]
    own = train_step_flops(model.cfg, 4, 8, (8, 8))
    if own > 2 * budget / 6:  # every generated frame per step: at least twice a causal step
        assert summary["steps"] <= 3


def test_counted_flops_are_the_analytic_flops_of_each_steps_draws():
    model, cfg, summary = _train(None, "count", steps=5, frame_stages=[2, 8])
    per_step = [summary["flops"][0]] + [b - a for a, b in zip(summary["flops"],
                                                              summary["flops"][1:])]
    for step, counted in enumerate(per_step):
        frames = summary["stages"][-1][1] if step >= summary["stages"][-1][0] else 2
        g = torch.Generator().manual_seed(derive_seed(3, "draws", step))
        draws = model.sample_train_draws(4, frames, (8, 8), g)
        expected = train_step_flops(model.cfg, 4, frames, (8, 8), target_frame=draws.target_frame,
                                    num_masked=draws.num_masked)
        assert counted == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------ position embeddings


@torch.no_grad()
def test_rope_is_relative_in_time_learned_positions_are_absolute():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(1, 3, 4, 4, 48, generator=g)
    rope, learned = _tiny_model(text_dim=0), _tiny_model(text_dim=0, pos_emb="learned")
    for model in (rope, learned):
        model.eval()
    same = rope.backbone(tokens, None, 0), rope.backbone(tokens, None, 5)
    torch.testing.assert_close(same[0], same[1], rtol=1e-4, atol=1e-5)
    moved = learned.backbone(tokens, None, 0), learned.backbone(tokens, None, 5)
    assert (moved[0] - moved[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="raise model.max_frames"):
        learned.backbone(tokens, None, 30)


def test_learned_tables_must_cover_the_evaluated_shapes():
    from core.config import EvalConfig

    with pytest.raises(ConfigError, match="raise model.max_frames / model.max_grid"):
        RunConfig(model=preset("tiny", pos_emb="learned", max_grid=8),
                  eval=EvalConfig(extrap_frames=12, extrap_height=44, extrap_width=44))
    RunConfig(model=preset("tiny", pos_emb="learned", max_grid=11),
              eval=EvalConfig(extrap_frames=12, extrap_height=44, extrap_width=44))


# --------------------------------------------------------------------------- Hydra configs


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _ablation_arms():
    """(ablation, overrides of one arm) for every arm of every ablation file, seed left out."""
    arms = []
    for path in sorted((CONF / "ablation").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        params = spec["hydra"]["sweeper"]["params"]
        if path.stem == "optuna":
            arms.append((path.stem, []))
            continue
        axes = [(k, str(v).split(",")) for k, v in params.items() if k != "seed"]
        key, values = axes[0]
        rest = [f"{k}={vals[0]}" for k, vals in axes[1:]]
        arms += [(path.stem, [f"{key}={v}"] + rest) for v in values]
    return arms


def test_every_ablation_sweeps_at_least_three_seeds_and_names_its_table():
    for path in sorted((CONF / "ablation").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        assert spec["ablation"] == spec["table"] == path.stem
        if path.stem != "optuna":
            seeds = str(spec["hydra"]["sweeper"]["params"]["seed"]).split(",")
            assert len(set(seeds)) >= 3, path.name


@pytest.mark.slow
@pytest.mark.parametrize("ablation, arm", _ablation_arms(),
                         ids=lambda v: v if isinstance(v, str) else ",".join(v) or "-")
def test_every_ablation_arm_composes_and_runs(ablation, arm, tmp_path):
    quick = SUN_HEAD_QUICK if ablation == "sun_head" else []
    cfg = OmegaConf.to_object(_compose([f"ablation={ablation}", *arm, *TINY_RUN, *quick,
                                        f"results={tmp_path / 'runs.jsonl'}",
                                        f"out_dir={tmp_path / 'runs'}"]))
    assert cfg.ablation == cfg.table == ablation
    row = run_app.run(cfg)
    assert row["status"] == "ok" and row["table"] == ablation and row["variant"] == cfg.variant
    metrics = row["metrics"]
    assert metrics["train_flops"] > 0 and isinstance(metrics["mse_mean"], float)
    if ablation == "rope":
        assert metrics["extrap_frames"] == 12 and metrics["extrap_height"] == 44
        assert len(metrics["extrap_mse_per_frame"]) == 11
    if ablation == "temperature":
        assert len(metrics["mse_per_frame"]) == 15
    if ablation == "sun_head" and cfg.sampler.head == "sun":  # distilled, cached, recorded
        assert Path(row["head_distill"]["adapter"]).name.startswith("sun_head-")
        assert row["head_distill"]["pool_tokens"] == 64
    if ablation == "sun_head":  # several samples per clip: the spread beside MSE
        assert metrics["sample_spread"] > 0
    if ablation == "sun_head" and cfg.sampler.guidance == "sun":
        assert Path(row["backbone_distill"]["adapter"]).name.startswith("sun_backbone-")
        assert row["backbone_distill"]["pool_tokens"] > 0
    if ablation == "sun_head" and cfg.sampler.guidance == "distilled":  # a whole student file
        assert Path(row["guidance_distill"]["student"]).name.startswith("guided_student-")
        assert row["guidance_distill"]["pool_tokens"] > 0 and "adapter" not in row
        again = run_app.run(dataclasses.replace(cfg, force=True))  # the cached student
        assert again["guidance_distill"] == {"reused": True,
                                             "student": row["guidance_distill"]["student"]}
        assert again["metrics"]["mse_mean"] == metrics["mse_mean"]
    if ablation in ("curriculum", "resolution"):
        assert metrics["val_curve"] and metrics["val_curve"][-1]["step"] == metrics["train_steps"]


def test_variant_labels_come_from_the_swept_knobs():
    def variant(*overrides):
        return OmegaConf.to_object(_compose(list(overrides))).variant

    assert variant() == "causal" and variant("attn=full") == "full"
    assert variant("ablation=curriculum", "curriculum=on") == "on"
    assert variant("ablation=resolution", "resolution=fixed") == "fixed"
    assert variant("ablation=rope", "pos=learned") == "learned"
    assert variant("ablation=temperature", "temperature=increasing") == "increasing"
    assert variant("ablation=temperature", "temperature=progressive") == "progressive"
    assert variant("ablation=temperature", "temperature=constant_matched") == "constant"
    assert variant("ablation=temperature", "temperature=list") == "list"
    assert variant("ablation=temperature", "temperature=progressive",
                   "sampler.temperature_end=1.0") == "constant"  # no drift: a constant arm
    assert variant("ablation=sampler", "sampler.num_iter=4", "sampler.cfg_scale=3") == "iter4_cfg3"
    assert variant("ablation=sun_head", "head=ddpm100_cfg") == "ddpm100_cfg"
    assert variant("ablation=sun_head", "head=dpm4_cfg") == "dpm4_cfg"
    assert variant("ablation=sun_head", "head=sun4") == "sun4"
    assert variant("ablation=sun_head", "head=sun4_nomsc") == "sun4_nomsc"
    assert variant("ablation=sun_head", "head=sun8") == "sun8"
    assert variant("ablation=sun_head", "head=sunbb_ddpm100") == "sunbb_ddpm100"
    assert variant("ablation=sun_head", "head=sunbb_dpm4") == "sunbb_dpm4"
    assert variant("ablation=sun_head", "head=gd_dpm4") == "gd_dpm4"
    assert variant("ablation=sun_head", "head=sunbb_dpm4_nomsc") == "sunbb_dpm4_nomsc"
    assert variant("ablation=sun_head", "head=sunbb_dpm4",
                   "head_distill.lambda_msc=0.3") == "sunbb_dpm4_msc0.3"
    assert variant("ablation=sun_head", "head=gd_dpm4", "head_distill.lambda_msc=0") == "gd_dpm4_nomsc"
    assert variant("ablation=sun_head", "head=dpm4_cfg",
                   "head_distill.lambda_msc=0") == "dpm4_cfg"  # nothing distilled: no MSC label
    assert variant("ablation=window", "model.temporal_window=2") == "w2"
    assert variant("variant=mine") == "mine"


def test_temperature_arms_separate_drift_from_level():
    """Every arm has mean temperature 0.9 over the 15 generated frames; labels name the drift."""
    from core.sampler import frame_temperatures

    spec = yaml.safe_load((CONF / "ablation" / "temperature.yaml").read_text())
    arms = spec["hydra"]["sweeper"]["params"]["temperature"].split(",")
    labels, drifts = [], {}
    for arm in arms:
        cfg = OmegaConf.to_object(_compose(["ablation=temperature", f"temperature={arm}"]))
        assert cfg.eval.num_frames == 16 and cfg.eval.num_clips >= 32
        taus = frame_temperatures(cfg.sampler, cfg.eval.num_frames - cfg.model.num_cond_frames)
        assert len(taus) == 15 and sum(taus) / 15 == pytest.approx(0.9), (arm, taus)
        labels.append(cfg.variant)
        drifts[cfg.variant] = (taus[0], taus[-1])
    assert sorted(labels) == ["constant", "increasing", "list", "progressive"]
    assert drifts["constant"] == (0.9, 0.9)
    assert drifts["progressive"] == (1.0, 0.8) and drifts["increasing"] == (0.8, 1.0)
    assert drifts["list"][0] > drifts["list"][1]
    # the default run's constant schedule keeps SamplerConfig's level
    assert OmegaConf.to_object(_compose([])).sampler.temperature == SamplerConfig().temperature


def test_sample_ablations_score_at_least_32_clips():
    for ablation, arm in _ablation_arms():
        cfg = OmegaConf.to_object(_compose([f"ablation={ablation}", *arm]))
        assert cfg.eval.num_clips >= 32, (ablation, arm)
    assert OmegaConf.to_object(_compose([])).eval.num_clips == 32


def test_the_default_recipe_arms_share_one_trained_model():
    """The default run is the causal / on / progressive arm of its tables: trained once per seed."""
    def cfg(*overrides):
        return OmegaConf.to_object(_compose(list(overrides)))

    key = run_app.training_key
    default = key(cfg(), "c")
    shared = [cfg("ablation=attn", "attn=causal"), cfg("ablation=curriculum", "curriculum=on"),
              cfg("ablation=resolution", "resolution=progressive"),
              cfg("ablation=temperature", "temperature=list"), cfg("ablation=sampler")]
    assert all(key(c, "c") == default for c in shared)
    off = key(cfg("ablation=curriculum", "curriculum=off"), "c")
    fixed = key(cfg("ablation=resolution", "resolution=fixed"), "c")
    full = key(cfg("ablation=attn", "attn=full"), "c")
    assert len({default, off, fixed, full}) == 4 and default != key(cfg(), "d")


def test_the_default_recipe_is_both_curricula_under_one_budget_for_every_arm():
    default = OmegaConf.to_object(_compose([]))
    assert default.train.frame_stages == [2, 4, 8] and default.train.res_stages == [16, 32]
    assert default.train.budget_steps == 500
    for ablation, arm in _ablation_arms():
        c = OmegaConf.to_object(_compose([f"ablation={ablation}", *arm]))
        assert c.train.budget_steps == default.train.budget_steps, (ablation, arm)


@pytest.mark.parametrize("overrides, match", [
    (["data.height=16"], "resolution=fixed"),
    (["data.num_frames=4"], "curriculum=off"),
    (["train.res_stages=[16]"], "ends below data.height=32"),
    (["train.frame_stages=[2,4]"], "ends below data.num_frames=8"),
])
def test_a_curriculum_that_cannot_reach_the_data_names_the_fix(overrides, match):
    with pytest.raises(Exception, match=match):
        OmegaConf.to_object(_compose(overrides))


# --------------------------------------------------------------------------- sweeps


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_sweep_survives_a_failed_run_and_reruns_only_what_is_missing(tmp_path):
    # A 1-value temperature list cannot cover the 2 generated frames: that run fails at sampling.
    cmd = [sys.executable, str(ROOT / "ablations" / "run.py"), "-m",
           "sampler.temperature_schedule=list", "sampler.temperatures=[1.0],[1.0,0.9]",
           "data.height=16", "data.width=16", "data.num_frames=3", "curriculum=off",
           "resolution=fixed", *TINY_RUN,
           f"results={tmp_path / 'runs.jsonl'}", f"out_dir={tmp_path / 'runs'}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]

    def sweep(*extra):
        return subprocess.run(cmd + list(extra), capture_output=True, text=True, cwd=tmp_path,
                              timeout=600)

    first = sweep()
    assert first.returncode != 0 and "sampler.temperatures has 1 values" in first.stderr
    rows = _rows(tmp_path / "runs.jsonl")
    assert [r["variant"] for r in rows if r["kind"] == "baseline"] == ["copy"]  # of the ok run
    rows = [r for r in rows if r["kind"] != "baseline"]
    assert sorted(r["status"] for r in rows) == ["failed", "ok"]  # the failure did not stop it
    failed = next(r for r in rows if r["status"] == "failed")
    assert "sampler.temperatures has 1 values" in failed["error"]
    assert len(list((tmp_path / "runs").glob("train-*"))) == 1  # both runs share one training

    sweep()  # the ok run is skipped, the failed one is retried (and fails again)
    again = _rows(tmp_path / "runs.jsonl")[len(rows) + 1:]
    assert [r["status"] for r in again] == ["failed"] and again[0]["run_id"] == failed["run_id"]

    sweep("force=true")  # force reruns both; the deterministic baseline is not duplicated
    forced = _rows(tmp_path / "runs.jsonl")[len(rows) + 2:]
    assert sorted(r["status"] for r in forced) == ["failed", "ok"]
    assert all(r["kind"] != "baseline" for r in forced)


# --------------------------------------------------------------------------- baselines


def test_runs_write_one_copy_baseline_row_per_table_and_seed(tmp_path):
    from core.evaluate import score_baseline

    results = tmp_path / "runs.jsonl"
    base = [*TINY_RUN, "data.height=16", "data.width=16", "data.num_frames=3",
            "curriculum=off", "resolution=fixed",
            "eval.extrap_frames=4", "eval.extrap_height=20", "eval.extrap_width=20",
            f"results={results}", f"out_dir={tmp_path / 'runs'}"]

    def run(*extra):
        cfg = OmegaConf.to_object(_compose(base + list(extra)))
        return cfg, run_app.run(cfg)

    cfg, model_row = run()
    run("sampler.num_iter=3")  # another arm of the same table and seed: shares the baseline
    run("seed=1")  # another seed: its own baseline
    run()  # the skipped rerun adds nothing
    rows = _rows(results)
    models = [r for r in rows if r["kind"] == "train"]
    baselines = [r for r in rows if r["kind"] == "baseline"]
    assert len(models) == 3 and len(rows) == 5
    assert sorted(r["seed"] for r in baselines) == [0, 1]
    assert len({r["run_id"] for r in baselines}) == 2
    for row in baselines:
        assert (row["variant"], row["status"], row["table"], row["ablation"]) == \
            ("copy", "ok", "attn", "attn")
        assert row["factor"] == "variant" and row["config"]["variant"] == "copy"
        assert row["commit"] == model_row["commit"] and row["preset"] == "tiny"
    (baseline,) = [r for r in baselines if r["seed"] == 0]
    metrics, model = baseline["metrics"], model_row["metrics"]
    for prefix in ("", "extrap_"):
        for key in ("mse_mean", "mse_per_frame", "psnr_first", "num_clips", "dist_energy",
                    "syn_subject_consistency", "syn_dynamic_degree", "syn_i2v_subject"):
            assert prefix + key in metrics and prefix + key in model, prefix + key
        assert len(metrics[prefix + "mse_per_frame"]) == len(model[prefix + "mse_per_frame"])
    assert metrics["extrap_frames"] == 4 and metrics["extrap_height"] == 20
    only_model = {"val_loss", "train_loss", "train_steps", "steps_per_s", "params", "train_flops",
                  "val_curve", "stages", "train_reused", "train_resumed_from", "world_size",
                  "sample_time_s", "extrap_sample_time_s"}
    assert set(metrics) == set(model) - only_model
    # the numbers are core.evaluate's copy baseline on the run's own test clips
    for prefix, test, frames, _ in run_app._test_sets(cfg):
        direct = score_baseline(test, num_clips=cfg.eval.num_clips, num_cond=1, num_frames=frames)
        for key in ("mse_mean", "psnr_first", "dist_energy", "syn_i2v_subject"):
            assert metrics[prefix + key] == pytest.approx(direct[key], rel=1e-6), prefix + key
    assert metrics["syn_dynamic_degree"] == 0.0  # nothing moves in a copy
