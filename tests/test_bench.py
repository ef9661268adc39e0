"""The bench scripts end-to-end at toy sizes: last stdout line is JSON, one bench row is appended.

Timings are never asserted (the machine is shared); the tests check the plumbing and the
properties that do not depend on speed (FLOP ratios, cost-model arithmetic, trace files).
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from core.config import preset
from core.flops import generate_video_flops
from core.results import read_rows

BENCH = Path(__file__).resolve().parents[1] / "bench"



def run_script(name, argv, capsys):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = module.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert len(lines) > 2, "a readable table comes before the JSON line"
    return metrics, last


def only_row(path, table):
    rows = read_rows(path)
    assert len(rows) == 1 and rows[0]["kind"] == "bench" and rows[0]["table"] == table
    assert rows[0]["status"] == "ok"
    return rows[0]


def test_kv_cache_bench(tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    _, out = run_script("kv_cache", ["--frames", "3", "--grid", "4", "--steps", "2",
                                     "--num-iter", "2", "--repeats", "1",
                                     "--results", str(results)], capsys)
    for key in ("kv_cache_backbone_speedup", "analytic_flop_ratio", "last_over_first_frame",
                "cached_tokens_per_s", "recompute_backbone_s", "joint_backbone_s"):
        assert out[key] > 0, key
    cfg = preset("tiny")
    cached = generate_video_flops(cfg, 4, (4, 4), num_iter=2, num_sampling_steps=2)
    recompute = generate_video_flops(cfg, 4, (4, 4), mode="recompute", num_iter=2,
                                     num_sampling_steps=2)
    assert out["analytic_flop_ratio"] == pytest.approx(recompute["backbone"] / cached["backbone"])
    assert len(out["cached_backbone_ms_per_frame"]) == 3
    assert out["analytic_last_over_first_frame"] > 1  # attention to a longer cache
    row = only_row(results, "kv_cache")
    assert row["metrics"]["analytic_flop_ratio"] == pytest.approx(out["analytic_flop_ratio"])


def test_kv_cache_bench_rejects_bad_modes(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown"):
        run_script("kv_cache", ["--modes", "cached,magic", "--no-results"], capsys)


def test_flops_bench(tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    _, out = run_script("flops", ["--preset", "tiny", "--batch", "1", "--frames", "3",
                                  "--grid", "4", "--steps", "1", "--gen-frames", "2",
                                  "--gen-steps", "2", "--num-iter", "2", "--peak-size", "128",
                                  "--results", str(results)], capsys)
    assert 0 < out["train_mfu"] and out["peak_gflops"] > 0
    assert out["train_analytic_over_measured"] == pytest.approx(1.0, abs=0.02)
    assert out["gen_analytic_over_measured_cached"] == pytest.approx(1.0, abs=0.02)
    assert out["gen_analytic_over_measured_recompute"] == pytest.approx(1.0, abs=0.02)
    only_row(results, "flops")


def test_cost_bench_arithmetic(tmp_path, capsys):
    args = ["--token-budget", "1e9", "--no-results"]
    _, a = run_script("cost", [*args, "--mfu", "0.5"], capsys)
    _, b = run_script("cost", [*args, "--mfu", "0.25"], capsys)
    assert b["gpu_hours_no_curriculum"] == pytest.approx(2 * a["gpu_hours_no_curriculum"])
    # Short, low-resolution stages cost less per token than the final shape.
    assert a["gpu_hours_curriculum"] < a["gpu_hours_no_curriculum"]
    # 6 x parameters per token is the usual rule of thumb; attention and the head add to it.
    per_token = a["paper_flops_per_clip"] / (7 * 30 * 48)
    assert 0.8 < per_token / (6 * a["params"]) < 1.6
    results = tmp_path / "runs.jsonl"
    _, c = run_script("cost", ["--token-budget", "1e9", "--results", str(results)], capsys)
    assert c["mfu_source"] == "default" and c["mfu"] == pytest.approx(0.4)
    only_row(results, "cost")
    with pytest.raises(SystemExit, match="fractions must sum to 1"):
        run_script("cost", [*args, "--stages", "3x16x16:0.5"], capsys)
    with pytest.raises(SystemExit, match="FRAMESxHxW"):
        run_script("cost", [*args, "--stages", "oops"], capsys)


def test_profiler_writes_a_chrome_trace(tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    _, out = run_script("profiler", ["--what", "train,sample", "--batch", "1", "--frames", "2",
                                     "--grid", "4", "--gen-steps", "2", "--num-iter", "2",
                                     "--wait", "0", "--warmup", "1", "--active", "1",
                                     "--out", str(tmp_path / "tb"), "--results", str(results)],
                         capsys)
    for what in ("train", "sample"):
        traces = out[f"{what}_traces"]
        assert len(traces) == 1 and Path(traces[0]).parent == tmp_path / "tb" / what
        trace = json.loads(Path(traces[0]).read_text())
        assert trace["traceEvents"], "an empty trace"
        assert out[f"{what}_backbone_ms"] > 0 and out[f"{what}_head_ms"] > 0
    only_row(results, "profile")


def test_learning_curve_is_resumable_and_idempotent(tmp_path, capsys):
    from bench.learning_curve import main

    out, runs = tmp_path / "tables", tmp_path / "runs"
    args = ["t", "train.batch_size=2", "model.depth=1", "misc.steps=[1,2]", "misc.clips=2",
            f'misc.out="{out}"', f'misc.runs="{runs}"']
    rows = main(args)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["train_flops"] > rows[0]["train_flops"] > 0  # cumulative over the resume
    assert (out / "learning_curve_t.png").exists() and (out / "learning_curve_t_samples.png").exists()
    lines = (out / "learning_curve_t.jsonl").read_text().splitlines()
    again = main(args + ["misc.steps=[1,2,3]"])  # only the new milestone is trained and scored
    assert [r["step"] for r in again] == [1, 2, 3]
    assert (out / "learning_curve_t.jsonl").read_text().splitlines()[:2] == lines
    with pytest.raises(SystemExit, match="another NAME"):  # other recipe, same checkpoint dir
        main(["t", "train.batch_size=4"] + args[2:])


def test_sun_speed_bench_times_every_arm_against_the_cfg_head(tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    metrics, last = run_script("sun_speed", ["--results", str(results), "--batch", "1",
                                             "--frames", "2", "--num-iter", "1", "--repeats", "2",
                                             "--warmup", "0", "--thread-counts", "1"], capsys)
    row = only_row(results, "sun_speed")
    arms = ("ddpm100_cfg", "dpm4_cfg", "dpm8_cfg", "sun4", "sunbb_ddpm100", "sunbb_dpm4",
            "gd_dpm4")
    assert row["columns"] == [f"t1_{a}_speedup" for a in arms]
    for arm in arms:
        lo, hi = metrics[f"t1_{arm}_speedup_interval"]
        assert lo <= metrics[f"t1_{arm}_speedup"] <= hi and metrics[f"t1_{arm}_s"] > 0
        assert last[f"t1_{arm}_s"] == pytest.approx(metrics[f"t1_{arm}_s"])
    assert metrics["t1_ddpm100_cfg_speedup"] == 1.0
