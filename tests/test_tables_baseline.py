"""make tables: the copy baseline beside every sample table and figure, computed readings from a
paired t-test across seeds, the README sample picture from saved samples, byte-identical reruns."""

import numpy as np
import pytest
from PIL import Image

from bench import make_tables as mt
from bench.tables import plots, samples, spec
from bench.tables import readings as rd
from core.results import append_row

NEW = "fed0000" + "0" * 33
ATTN_SAMPLES = spec.spec_for("attn").samples  # line -> row title of samples_attn.png
OLD = "0ld0000" + "0" * 33


def _row(table, variant, seed, metrics, *, kind="train", commit=NEW,
         date="2026-12-01T10:00:00+00:00", out_dir=None, run_id=None):
    row = {"run_id": run_id or f"{table}-{variant}-{seed}-{commit[:3]}-{kind}", "kind": kind,
           "status": "ok", "table": table, "ablation": table, "seed": seed, "commit": commit,
           "dirty": False, "date": date, "variant": variant, "factor": "variant",
           "config": {"variant": variant, "seed": seed,
                      "data": {"height": 8, "width": 8, "num_frames": 4, "source": "synthetic",
                               "num_sprites": 2, "camera_pan": True}},
           "metrics": metrics, "wall_time_s": 1.0}
    if out_dir is not None:
        row["out_dir"] = str(out_dir)
    return row


def _metrics(mse, dist=None, **extra):
    m = {"mse_mean": mse, "mse_per_frame": [mse * 0.5, mse, mse * 1.5], "psnr_first": 20.0,
         "num_clips": 32, "syn_dynamic_degree": 0.5, **extra}
    if dist is not None:
        m["dist_energy"] = dist
    return m


def attn_rows(causal, full, copy, *, dist=None, baseline_per_arm=True):
    """Model rows of both arms and copy-baseline rows (one per arm and seed, as run.py writes)."""
    rows = []
    for seed, (c, f, b) in enumerate(zip(causal, full, copy)):
        rows.append(_row("attn", "causal", seed, _metrics(c, dist and dist[0][seed])))
        rows.append(_row("attn", "full", seed, _metrics(f, dist and dist[1][seed])))
        for arm in ("causal", "full") if baseline_per_arm else ("causal",):
            rows.append(_row("attn", "copy", seed, _metrics(b, dist and dist[2][seed]),
                             kind="baseline", run_id=f"copy-{arm}-{seed}"))
    return rows


def _line(table, label):
    return next((n, cells) for name, n, cells in table.lines if name == label)


# ----------------------------------------------------------------------------- baseline rows


def test_baseline_is_a_line_of_its_own_and_never_averaged_into_a_variant():
    rows = attn_rows([0.01, 0.02, 0.03], [0.02, 0.02, 0.02], [0.5, 0.5, 0.5])
    old = _row("attn", "copy", 0, _metrics(99.0), kind="baseline", commit=OLD,
               date="2026-11-01T10:00:00+00:00")
    t = mt.summarize("attn", rows + [old])
    assert [label for label, _, _ in t.lines] == ["causal", "full", mt.BASELINE_LABEL]
    assert [label for label, _, _ in t.model_lines()] == ["causal", "full"]
    models_only = mt.summarize("attn", [r for r in rows if r["kind"] != "baseline"])
    assert _line(t, "causal") == _line(models_only, "causal")
    assert _line(t, "full") == _line(models_only, "full")
    assert _line(t, "causal")[1]["mse_mean"] == "0.020 ± 0.010"  # no copy value (0.5) in it
    n, cells = _line(t, mt.BASELINE_LABEL)
    assert n == 3 and cells["mse_mean"] == "0.5 ± 0"  # one value per seed; the old commit's 99 out
    assert t.num_ok == 12 and t.commits == ["fed0000"]
    assert any("copy (baseline): the conditioning frame repeated" in note for note in t.notes)
    md = mt.to_markdown(t, "cmd", "runs.jsonl")
    assert "| copy (baseline) | 3 | 0.5 ± 0 | 20 ± 0 |" in md
    assert "synthetic" in md and md.count("| copy (baseline) | 3 |") == 2  # both blocks
    assert "copy (baseline) & 3 & 0.5 $\\pm$ 0 &" in mt.to_latex(t, "cmd", "runs.jsonl")


def test_tables_without_baseline_rows_still_work():
    rows = [r for r in attn_rows([0.01, 0.02, 0.03], [0.02] * 3, [0.5] * 3)
            if r["kind"] != "baseline"]
    t = mt.summarize("attn", rows)
    assert t.baseline is None and [label for label, _, _ in t.lines] == ["causal", "full"]
    assert not any("vs copy" in r for r in t.readings)


def test_baseline_rows_of_a_table_without_models_and_build_routing():
    only_copy = [_row("window", "copy", s, _metrics(0.4), kind="baseline") for s in range(2)]
    t = mt.build(only_copy)["window"][0]
    assert [label for label, _, _ in t.lines] == [mt.BASELINE_LABEL]
    built = mt.build(attn_rows([0.01] * 3, [0.02] * 3, [0.5] * 3))
    assert "copy" not in " ".join(built)  # no table of its own
    vb = built["vbench_i2v"][0]
    assert [label for label, _, _ in vb.lines if label.startswith("attn")] == [
        "attn: causal", "attn: full", "attn: copy (baseline)"]


def test_metric_order_puts_dist_energy_next_to_mse():
    rows = attn_rows([0.01] * 3, [0.02] * 3, [0.5] * 3, dist=([1.0] * 3, [2.0] * 3, [3.0] * 3))
    t = mt.summarize("attn", rows)
    assert t.metrics[:3] == ["mse_mean", "dist_energy", "psnr_first"]


# ----------------------------------------------------------------------------- readings


def _reading(t, metric):
    return next(r for r in t.readings if r.startswith(f"Reading ({metric},"))


def test_reading_supports_contradicts_inconclusive():
    win = mt.summarize("attn", attn_rows([0.010, 0.0205, 0.0301], [0.020, 0.030, 0.040],
                                         [0.5] * 3))
    assert _reading(win, "mse_mean").startswith(
        "Reading (mse_mean, causal vs full, paired over 3 seeds): supports — diff -0.00980 "
        "[-0.01046, -0.00914], p < 0.001; vs copy:")
    loss = mt.summarize("attn", attn_rows([0.020, 0.030, 0.040], [0.010, 0.0205, 0.0301],
                                          [0.05] * 3))
    assert (": contradicts — diff +0.00980 [+0.00914, +0.01046], p < 0.001;"
            in _reading(loss, "mse_mean"))
    noise = mt.summarize("attn", attn_rows([0.010, 0.030, 0.020], [0.020, 0.020, 0.021],
                                           [0.05] * 3))
    assert (": inconclusive — diff +0.000 [-0.025, +0.025], p = 0.96;"
            in _reading(noise, "mse_mean"))
    # both arms beat copy (0.5) on every seed: no caution
    assert "vs copy: causal beats copy (diff" in _reading(win, "mse_mean")
    assert not any(r.startswith("Caution") for r in win.readings)


def test_reading_p_value_of_a_known_case_and_the_copy_caution():
    # scipy.stats.ttest_rel([.031, .035, .029, .040], [.033, .036, .032, .041]): p = 0.03535,
    # 95 % interval [-0.003273, -0.000227]
    rows = attn_rows([0.031, 0.035, 0.029, 0.040], [0.033, 0.036, 0.032, 0.041],
                     [0.0335, 0.0335, 0.0335, 0.0335])
    t = mt.summarize("attn", rows)
    # against copy (0.0335 each seed): causal p = 0.9245, interval [-0.00748, +0.00798]
    assert _reading(t, "mse_mean") == (
        "Reading (mse_mean, causal vs full, paired over 4 seeds): supports — diff -0.0017 "
        "[-0.0033, -0.0002], p = 0.035; vs copy: causal does not beat copy (diff +0.0002 "
        "[-0.0075, +0.0080], p = 0.92, 4 seeds); full does not beat copy (diff +0.0020 [-0.0044, "
        "+0.0084], p = 0.4, 4 seeds).")
    caution = t.readings[-1]
    assert caution.startswith("Caution: causal (mse_mean), full (mse_mean) not better than the "
                              "copy baseline")
    md = mt.to_markdown(t, "cmd", "runs.jsonl")
    assert "\n\n" + _reading(t, "mse_mean") + "\n" in md  # a paragraph of its own
    assert "% Reading (mse\\_mean, causal vs full" in mt.to_latex(t, "cmd", "runs.jsonl")


def test_readings_pair_by_seed_and_skip_missing_arms_and_tables_without_claim():
    rows = attn_rows([0.01, 0.02, 0.03], [0.02, 0.03, 0.04], [0.5] * 3)
    rows = [r for r in rows if not (r["variant"] == "full" and r["seed"] == 2)]
    t = mt.summarize("attn", rows)
    assert "paired over 2 seeds" in _reading(t, "mse_mean")
    only_causal = mt.summarize("attn", [r for r in rows if r["variant"] != "full"])
    assert "not computed — no ok rows of full" in only_causal.readings[-1]
    unclaimed = mt.summarize("optuna", [dict(r, table="optuna") for r in rows])
    assert unclaimed.readings == []
    assert set(rd.declared_claims()) == {"attn", "curriculum", "resolution", "rope",
                                         "temperature", "sampler", "window", "sun_head"}


def test_targets_met_not_met_inconclusive_from_seed_intervals():
    """sun_head's targets: speedup (sample_time_s against ddpm100_cfg, same seed) >= 8, spread
    ratio >= 0.9, dynamic degree within 2 sd of the teacher's; each from the 95 % interval."""
    rows = []
    teacher = {"time": [100.0, 110.0, 90.0], "spread": [0.50, 0.52, 0.48],
               "dyn": [0.60, 0.62, 0.58]}
    arms = {"sunbb_dpm4": {"time": [10.0, 11.0, 9.5], "spread": [0.30, 0.33, 0.29],
                           "dyn": [0.61, 0.60, 0.59]},
            "gd_dpm4": {"time": [12.0, 14.5, 15.0], "spread": [0.40, 0.52, 0.49],
                        "dyn": [0.40, 0.41, 0.42]}}
    for seed in range(3):
        for arm, v in {"ddpm100_cfg": teacher, **arms}.items():
            rows.append(_row("sun_head", arm, seed, _metrics(
                0.03, sample_time_s=v["time"][seed], sample_spread=v["spread"][seed],
                syn_dynamic_degree=v["dyn"][seed])))
    lines = [r for r in mt.summarize("sun_head", rows).readings if r.startswith("Target")]
    absent = [line for line in lines if line.startswith("Target (sunbb_dpm4_nomsc:")]
    assert len(absent) == 3 and all(": not computed — no seed" in line for line in absent)
    lines = [line for line in lines if line not in absent]  # a declared arm without rows
    assert len(lines) == 6 and all(line.endswith("3 seeds.") for line in lines)
    verdict = {(line.split("(")[1].split(":")[0], line.split("; ")[1].split(" ")[0]):
               line.split("): ")[1].split(" — ")[0] for line in lines}
    assert verdict == {
        ("sunbb_dpm4", "sampling_speedup"): "met",  # 10.0, 10.0, 9.47: interval above 8
        ("gd_dpm4", "sampling_speedup"): "inconclusive",  # 8.3, 7.6, 6.0: straddles 8
        ("sunbb_dpm4", "sample_spread"): "not met",  # 0.6-0.63 of the teacher's
        ("gd_dpm4", "sample_spread"): "inconclusive",
        ("sunbb_dpm4", "syn_dynamic_degree"): "inconclusive",  # close, but 3 seeds are wide
        ("gd_dpm4", "syn_dynamic_degree"): "not met"}  # 0.2 below, the margin is 2 x 0.02
    assert "mean 9.82 [9.07, 10.58]" in lines[0] and "margin +-0.04" in lines[-1]
    missing = mt.summarize("sun_head", [r for r in rows if r["variant"] != "gd_dpm4"])
    assert any("gd_dpm4" in r and "not computed" in r for r in missing.readings)


def test_target_blocks_are_checked():
    block = {"arms": ["a"], "metric": "m", "text": "t"}
    assert spec.parse("x", {"variant": "v", "targets": [{**block, "at_least": 8}]},
                      "x.yaml").targets == (spec.Target("a", "m", "at_least", 8.0, "t"),)
    with pytest.raises(ValueError, match="exactly one rule"):
        spec.parse("x", {"variant": "v", "targets": [block]}, "x.yaml")
    with pytest.raises(ValueError, match="add `reference`"):
        spec.parse("x", {"variant": "v", "targets": [{**block, "within_noise": 2}]}, "x.yaml")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['at_most'\]"):
        spec.parse("x", {"variant": "v", "targets": [{**block, "at_most": 2}]}, "x.yaml")


def test_derived_metric_readings_temperature_and_rope():
    rows = []
    for seed in range(3):
        rows.append(_row("temperature", "constant", seed, {
            "mse_mean": 0.1, "mse_per_frame": [0.05, 0.1, 0.15, 0.2, 0.25 + seed / 100]}))
        rows.append(_row("temperature", "progressive", seed, {
            "mse_mean": 0.05, "mse_per_frame": [0.05, 0.05, 0.06, 0.06, 0.07 + seed / 50]}))
        rows.append(_row("temperature", "copy", seed, {
            "mse_mean": 0.3, "mse_per_frame": [0.3] * 5}, kind="baseline"))
        rows.append(_row("rope", "rope3d", seed, {
            "mse_per_frame": [0.1, 0.1], "extrap_mse_per_frame": [0.1, 0.1, 0.2 + seed / 100]}))
        rows.append(_row("rope", "learned", seed, {
            "mse_per_frame": [0.1, 0.1], "extrap_mse_per_frame": [0.2, 0.3, 0.9 - seed / 100]}))
    tables = mt.build(rows)
    temp = tables["temperature"][0]
    assert "Reading (mse_last4, progressive vs constant, paired over 3 seeds): supports" in (
        _reading(temp, "mse_last4"))
    assert "vs copy: progressive beats copy" in _reading(temp, "mse_last4")
    assert _line(temp, mt.BASELINE_LABEL)[1]["mse_drift_per_frame"] == "0 ± 0"
    rope = tables["rope"][0]
    assert ": supports — " in _reading(rope, "extrap_mse_mean")


# ----------------------------------------------------------------------------- figures


def _legend_labels(monkeypatch):
    seen = {}
    real = plots._save

    def spy(fig, path, note):
        seen[path.name] = [text.get_text() for ax in fig.axes if ax.get_legend()
                           for text in ax.get_legend().get_texts()]
        real(fig, path, note)

    monkeypatch.setattr(plots, "_save", spy)
    return seen


def test_figures_draw_the_baseline_reference(tmp_path, monkeypatch):
    seen = _legend_labels(monkeypatch)
    rows = attn_rows([0.01, 0.02, 0.03], [0.02] * 3, [0.05] * 3, dist=([1.0] * 3, [2.0] * 3,
                                                                          [3.0] * 3))
    for seed in range(2):
        rows.append(_row("temperature", "constant", seed, {"mse_mean": 0.1,
                                                           "mse_per_frame": [0.05, 0.1, 0.15]}))
        rows.append(_row("temperature", "copy", seed, {"mse_mean": 0.3,
                                                       "mse_per_frame": [0.3, 0.3, 0.3]},
                         kind="baseline"))
        rows.append(_row("rope", "rope3d", seed, {"mse_per_frame": [0.1, 0.1],
                                                  "extrap_mse_per_frame": [0.1, 0.1, 0.2]}))
        rows.append(_row("rope", "copy", seed, {"mse_per_frame": [0.2, 0.2],
                                                "extrap_mse_per_frame": [0.2, 0.2, 0.2]},
                         kind="baseline"))
    table = tmp_path / "runs.jsonl"
    for row in rows:
        append_row(table, row)
    assert mt.main([str(table), "--out", str(tmp_path / "out"), "--table", "attn",
                    "--table", "temperature", "--table", "rope"]) == 0
    assert mt.BASELINE_LABEL in seen["attn.png"]
    assert mt.BASELINE_LABEL in seen["temperature_drift.png"]
    assert f"{mt.BASELINE_LABEL}, extrapolated shape" in seen["rope_extrapolation.png"]
    assert "copy" not in [x for x in seen["temperature_drift.png"] if x != mt.BASELINE_LABEL]


# ----------------------------------------------------------------------------- sample picture


def _save_samples(directory, clips, frames, seed, as_tensor=False):
    """A run directory as ablations/run.py leaves it: samples.png (or samples.pt)."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    videos = rng.random((clips, frames, 8, 8, 3)).astype(np.float32)
    if as_tensor:
        import torch

        torch.save(torch.from_numpy(videos).permute(0, 1, 4, 2, 3).contiguous(),
                   directory / samples.TENSOR_FILE)
    else:
        grid = videos.transpose(0, 2, 1, 3, 4).reshape(clips * 8, frames * 8, 3)
        Image.fromarray((grid * 255).round().astype(np.uint8)).save(directory / samples.SHEET_FILE)
    return videos


def test_sample_picture_from_saved_samples_and_byte_identical_reruns(tmp_path, capsys):
    rows = attn_rows([0.01, 0.02, 0.03], [0.02] * 3, [0.05] * 3)
    for r in rows:
        if r["kind"] == "train" and r["seed"] == 0:
            r["out_dir"] = str(tmp_path / "runs" / r["run_id"])
    causal = next(r for r in rows if r["variant"] == "causal" and r["seed"] == 0)
    full = next(r for r in rows if r["variant"] == "full" and r["seed"] == 0)
    sheet = _save_samples(tmp_path / "runs" / causal["run_id"], 8, 4, 0)
    _save_samples(tmp_path / "runs" / full["run_id"], 8, 4, 1, as_tensor=True)
    loaded = samples.load_videos(causal, tmp_path)
    assert loaded.shape == (8, 4, 8, 8, 3) and np.abs(loaded - sheet).max() <= 0.5 / 255 + 1e-6
    strips, runs = samples.sample_strips(rows, tmp_path, "attn", ATTN_SAMPLES)
    assert [title for _, title, _ in strips[:3]] == ["cond. + truth", "causal rollout",
                                                      "full attention"]
    assert len(strips) == 3 * samples.NUM_CLIPS and set(runs) == {"causal", "full"}

    table = tmp_path / "runs.jsonl"
    for row in rows:
        append_row(table, row)
    out = tmp_path / "out"
    monkey_root = mt.ROOT
    try:
        mt.ROOT = tmp_path  # out_dir is absolute here; ROOT only resolves relative ones
        assert mt.main([str(table), "--out", str(out)]) == 0
        first = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        assert "samples_attn.png" in first and "attn.png" in first
        assert mt.main([str(table), "--out", str(out)]) == 0
    finally:
        mt.ROOT = monkey_root
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == first
    printed = capsys.readouterr().out
    assert "Readings (computed by make tables; quote them verbatim):" in printed
    assert "  attn: Reading (mse_mean, causal vs full, paired over 3 seeds): " in printed


def test_no_saved_samples_keeps_a_committed_picture(tmp_path):
    rows = attn_rows([0.01, 0.02, 0.03], [0.02] * 3, [0.05] * 3)
    for r in rows:
        r["out_dir"] = "runs/does-not-exist"
    assert samples.sample_strips(rows, tmp_path, "attn", ATTN_SAMPLES) is None
    table = tmp_path / "runs.jsonl"
    for row in rows:
        append_row(table, row)
    out = tmp_path / "out"
    out.mkdir()
    (out / "samples_attn.png").write_bytes(b"committed")
    assert mt.main([str(table), "--out", str(out), "--table", "attn"]) == 0
    assert (out / "samples_attn.png").read_bytes() == b"committed"


# ----------------------------------------------------------------------------- sun.md


def _sun_row(method, seed, invocation, date, speedup):
    return {"run_id": f"sun-{method}-{seed}-{invocation}", "kind": "sun", "status": "ok",
            "table": "sun", "seed": seed, "commit": NEW, "dirty": False, "date": date,
            "domain": "base", "method": method, "config": {"invocation": invocation},
            "metrics": {"nfe": 4, "speedup": speedup, "psnr_vs_ref": 25.0}}


def test_sun_table_from_the_newest_invocation(tmp_path):
    table = tmp_path / "runs.jsonl"
    for seed in (0, 1):
        append_row(table, _sun_row("sun", seed, "old", "2026-11-01T10:00:00+00:00", 99.0))
        append_row(table, _sun_row("sun", seed, "new", "2026-11-02T10:00:00+00:00", 9.0 + seed))
    assert mt.main([str(table), "--out", str(tmp_path / "out"), "--table", "sun"]) == 0
    md = (tmp_path / "out" / "sun.md").read_text()
    assert md.startswith(f"Generated by `python bench/make_tables.py {table} --out")
    assert "the 2 kind=sun rows of `python bench/sun.py` invocation new" in md
    assert "| base | sun | 4 ± 0 | n/a | 9.5x ± 0.7x |" in md  # the old invocation's 99 left out
    assert (tmp_path / "out" / "sun.tex").read_text().startswith("% Generated by")
