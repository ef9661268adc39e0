"""Regenerate every paper table and figure from the results table. Never edit the outputs by hand.

    python bench/make_tables.py [RESULTS] [--out DIR] [--table NAME]... [--all-commits]
                                [--baseline TABLE=VARIANT]... [--metrics a,b] [--no-plots]

Pure functions turn rows into tables (lm-evaluation-harness `make_table`); main() only reads,
writes and prints. Outputs in --out (default: the results file's directory), per table
`<table>.md`, `<table>.tex` and seaborn figures `<table>*.png`:

- ablation tables (kind train/eval rows, grouped by their `table`): one line per variant
  (`config.variant`; older rows without it fall back to FACTORS / the row's `factor` column),
  cells "mean ± sample std" over seeds; the synthetic `syn_*` metrics get a second block. Derived
  columns: per-frame drift (temperature), extrapolation error (rows with
  `extrap_mse_per_frame`), and for `val_curve` rows the FLOPs to reach the baseline variant's
  final val_loss (same-quality compute) and val_loss at the largest budget every run reached
  (same-compute quality). Figures: metric per variant with seed error bars, extrapolation
  curves, per-frame drift, val_loss vs training FLOPs.
- the `copy` baseline (kind="baseline" rows: the conditioning frame repeated, scored like a model,
  written beside the model rows): one line "copy (baseline)" per sample table (rows of the
  newest commit, one value per seed, never averaged into a variant) and a dashed reference line
  in every sample figure (its per-frame curve in the drift and extrapolation figures).
- readings: every table with a claim in bench/tables/readings.py CLAIMS gets "Reading (...)"
  lines decided by a paired t-test across seeds (claim arm vs reference arm, and each arm vs
  copy), in the .md, as .tex comments, and printed at the end; the README quotes them verbatim.
- `samples_attn.png`: conditioning frame + truth, causal and full-attention rollouts of table
  attn (bench/tables/samples.py), when the runs' saved samples exist; otherwise it is left as is.
- `sun.md`/`.tex`: the kind="sun" rows of the newest `python bench/sun.py` invocation, rendered
  by bench/sun.py's own table code.
- `optuna` rows (kind="optuna"): one line per study with the best params and value.
- kind="bench" rows (kv_cache, flops, cost, ...): the columns the bench declares (the row's
  `columns`, its HEADLINE) per variant, every scalar metric in <name>.csv beside it, and a
  throughput figure when they have `*_per_s` / `*speedup*` metrics.
- `vbench_i2v`: the published VBench-I2V rows of paper_tables/reference/ (with citations and
  aggregates recomputed by core/metrics/aggregate.py) beside the measured rows; synthetic
  (`syn_*`) rows are never aggregated, official `vbench_<dim>` rows (percent) are.
- `efficiency`: VideoMAR vs Cosmos ratios from the reference data.

By default only rows from the newest commit of each (table, variant, seed) are used (rows of
older code are counted in a footnote); --all-commits keeps every commit and flags the mix.
Failed runs are footnoted, never averaged. Reruns are byte-identical: everything is sorted, no
dates are written, and PNG metadata carries no software version or time.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import re
import statistics
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from core.metrics.aggregate import DIMENSION_KEYS, partial_scores  # noqa: E402
from core.metrics.synthetic import KEYS as SYNTHETIC_KEYS  # noqa: E402
from core.results import read_rows  # noqa: E402
from bench.tables import readings as claims_mod  # noqa: E402
from bench.tables import samples as samples_mod  # noqa: E402

DEFAULT_RESULTS = "paper_tables/runs.jsonl"
REFERENCE_DIR = ROOT / "paper_tables" / "reference"
FACTORS = {"attn": "attn"}  # table -> column labelling a line, for rows without config.variant
METRIC_ORDER = ("val_loss", "mse_mean", "dist_energy", "psnr_first", "train_flops", "steps_per_s",
                "wall_time_s")  # then derived metrics, then the rest, sorted
TOP_LEVEL_METRICS = ("wall_time_s",)  # metrics stored beside `metrics`, not inside it
ABLATION_KINDS = ("train", "eval")
# Reference rows written beside the model rows (same table, seed and commit, same metrics): the
# `copy` baseline repeats the conditioning frame. Shown as one line and a dashed reference line in
# figures; never averaged into a variant, never an arm of a reading.
BASELINE_KIND = "baseline"
BASELINE_LABEL = "copy (baseline)"
SAMPLE_METRICS = re.compile(r"^(extrap_)?(mse_mean|mse_per_frame|psnr_first|dist_energy|syn_.*)$")
LAST_FRAMES = 4  # mse_last4: mean MSE over the last generated frames (drift tables)
BASELINES = {"curriculum": "off", "resolution": "fixed"}  # val_curve tables: the reference line
DRIFT_TABLES = ("temperature", "window")
# Tables whose lines are compared with one reference line of the same seed: the speedup of the
# end-to-end sampling time and the relative change of each quality metric (percent).
PAIRED_BASELINES = {"sun_head": "ddpm100_cfg"}
PAIRED_METRICS = ("mse_mean", "psnr_first")  # plus every syn_* metric present
PAIRED_PLOT = ("sampling_speedup", "mse_mean_rel_pct", "psnr_first_rel_pct",
               "syn_i2v_background_rel_pct", "syn_imaging_quality_rel_pct",
               "syn_dynamic_degree_rel_pct")  # the panels of a paired table's figure
THROUGHPUT = re.compile(r"(per_s|speedup)")  # bench metrics shown in the throughput figure
VBENCH_TABLE = "vbench_i2v"
VBENCH_PREFIX = "vbench_"  # official backend metrics in a row: vbench_<dimension>, in percent
LATEX_ESCAPES = {c: "\\" + c for c in "&%$#_{}"}
TEXT_COLUMNS = ("source", "VideoMAR", "Cosmos I2V")  # left-aligned in Markdown and LaTeX
DPI = 120
SAMPLES_FIGURE = "samples_attn"  # the README picture (bench/tables/samples.py)
SUN_KIND = "sun"  # SpeedUpNet testbed rows (bench/sun.py): sun.md/.tex rendered by its own code


@dataclass
class Table:
    name: str
    factor: str  # header of the label column
    metrics: list[str]
    lines: list[tuple[str, int, dict[str, str]]]  # (label, n ok runs, metric -> cell)
    failed: list[dict] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)  # short shas, "+dirty" marked
    num_ok: int = 0
    notes: list[str] = field(default_factory=list)
    blocks: list[tuple[str, list[str]]] = field(default_factory=list)  # (title, metrics) after the first
    source_note: str = "mean ± sample std over seeds"
    plotted: bool = True  # optuna studies have no seeds to plot
    baseline: str | None = None  # label of the copy-baseline line (the last line), if shown
    baseline_rows: list[dict] = field(default_factory=list, repr=False)  # one per seed
    readings: list[str] = field(default_factory=list)  # computed claim readings (bench/tables)

    def model_lines(self) -> list[tuple[str, int, dict[str, str]]]:
        return [line for line in self.lines if line[0] != self.baseline]


# ----------------------------------------------------------------------------- rows


def latest_per_run(rows: list[dict]) -> list[dict]:
    """The last row per run_id; an ok row beats failed ones, so forced reruns do not double n."""
    best: dict = {}
    for i, row in enumerate(rows):
        key = row.get("run_id") or f"#{i}"
        if row.get("status") == "ok" or best.get(key, {}).get("status") != "ok":
            best[key] = row
    return list(best.values())


def value_of(row: dict, key: str):
    """A top-level column, else a dotted path into the nested config (e.g. "sampler.num_iter")."""
    if key in row:
        return row[key]
    node = row.get("config", {})
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _number(value):
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if is_number and math.isfinite(value) else None


def metric_of(row: dict, name: str):
    if name in TOP_LEVEL_METRICS:
        return _number(row.get(name))
    return _number((row.get("metrics") or {}).get(name))


def metric_names(rows: list[dict]) -> list[str]:
    """Scalar metrics present in any row: METRIC_ORDER first, then alphabetical."""
    names = {k for r in rows for k, v in (r.get("metrics") or {}).items()
             if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    names |= {k for k in TOP_LEVEL_METRICS if any(metric_of(r, k) is not None for r in rows)}
    return [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))


def factor_of(name: str, rows: list[dict]) -> str:
    """The column labelling lines: "variant" when rows carry config.variant, else FACTORS/factor."""
    if any(value_of(r, "variant") not in (None, "") for r in rows):
        return "variant"
    if name in FACTORS:
        return FACTORS[name]
    named = sorted({r["factor"] for r in rows if r.get("factor")})
    if len(named) > 1:
        raise ValueError(f"table {name!r}: rows name different factors {named}")
    if not named:
        warnings.warn(f"table {name!r}: no variant or factor known (add it to FACTORS); "
                      "grouping by preset")
    return named[0] if named else "preset"


def label_of(row: dict, factor: str) -> str:
    """A row's line label: config.variant, else its table's older factor column, else its preset.

    Rows written before `variant` existed are labelled through FACTORS or their own `factor`
    column, so they land on the same line as newer rows of the same setting.
    """
    legacy = [FACTORS.get(str(row.get("table"))), row.get("factor"), factor]
    for key in ["variant"] + [k for k in legacy if k and k != "variant"] + ["preset"]:
        value = value_of(row, key)
        if value not in (None, ""):
            return value if isinstance(value, (str, int, float)) else str(value)
    return "–"


def short_commit(row: dict) -> str:
    return str(row.get("commit", "unknown"))[:7] + ("+dirty" if row.get("dirty") else "")


def newest_commit_only(rows: list[dict], factor: str) -> tuple[list[dict], int]:
    """Rows of the newest commit (by row date) per (table, label, seed), and how many were left out."""
    newest: dict = {}
    for r in rows:
        key = (r.get("table"), str(label_of(r, factor)), str(r.get("seed")))
        stamp = (str(r.get("date") or ""), str(r.get("commit")))
        newest[key] = max(newest.get(key, stamp), stamp)
    kept = [r for r in rows if str(r.get("commit")) ==
            newest[(r.get("table"), str(label_of(r, factor)), str(r.get("seed")))][1]]
    return kept, len(rows) - len(kept)


def mean_std(values: list[float]) -> str:
    """ "mean ± sample std", with the decimals that show 2 significant digits of the std."""
    if not values:
        return "–"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    if not std:  # one seed, or identical values: 4 significant digits, integers as integers
        text = str(int(mean)) if mean.is_integer() and abs(mean) < 1e9 else f"{mean:.4g}"
        return text if std is None else f"{text} ± 0"
    # exponent of the std after rounding to 2 significant digits (0.000999.. -> 1.0e-03)
    digits = min(8, max(0, 1 - math.floor(math.log10(float(f"{std:.1e}")))))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# ----------------------------------------------------------------------------- derived metrics


def _interp(x: float, xs: list[float], ys: list[float]):
    """Linear interpolation of y at x on a polyline sorted by xs; None outside its range."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def curve_of(row: dict) -> tuple[list[float], list[float]]:
    """(flops, val_loss) of a row's `val_curve`, sorted by FLOPs, finite points only."""
    points = []
    for p in (row.get("metrics") or {}).get("val_curve") or []:
        if not isinstance(p, dict):
            continue
        f, v = _number(p.get("flops")), _number(p.get("val_loss"))
        if f is not None and v is not None:
            points.append((f, v))
    points.sort()
    return [p[0] for p in points], [p[1] for p in points]


def flops_to_reach(flops: list[float], losses: list[float], target: float):
    """The first FLOPs at which the curve reaches `target` (linear between points), else None."""
    for i, (f, v) in enumerate(zip(flops, losses)):
        if v <= target:
            if i == 0:
                return f
            f0, v0 = flops[i - 1], losses[i - 1]
            return f0 + (f - f0) * (v0 - target) / (v0 - v)
    return None


def curve_metrics(rows: list[dict], factor: str, baseline: str | None) -> tuple[dict, list[str]]:
    """{id(row): derived metrics} for val_curve rows, and the footnotes explaining them."""
    curves = {id(r): curve_of(r) for r in rows}
    curves = {k: c for k, c in curves.items() if c[0]}
    if not curves:
        return {}, []
    budget = min(c[0][-1] for c in curves.values())
    out = {k: {"final_flops": c[0][-1], "val_loss_at_equal_flops": _interp(budget, *c)}
           for k, c in curves.items()}
    notes = [f"val_loss_at_equal_flops: each run's val_curve at {budget:.4g} FLOPs, the largest "
             "budget every run reached (same-compute quality)."]
    base = [curves[id(r)] for r in rows if id(r) in curves and str(label_of(r, factor)) == baseline]
    if base:
        target = statistics.fmean(c[1][-1] for c in base)
        for k, c in curves.items():
            out[k]["flops_to_baseline_val_loss"] = flops_to_reach(*c, target)
        notes.append(f"flops_to_baseline_val_loss: training FLOPs until val_loss <= {target:.4g}, "
                     f"the final val_loss of the baseline {factor}={baseline} (same-quality "
                     "compute; – or n<runs: not reached).")
    else:
        notes.append(f"no baseline line ({factor}={baseline}) among the rows: same-quality compute "
                     "not computed (pass --baseline TABLE=VARIANT).")
    return out, notes


def per_frame_metrics(row: dict, drift: bool) -> dict:
    """Drift of mse_per_frame (slope per frame) and the extrapolation summaries of a row."""
    m = row.get("metrics") or {}
    out = {}
    mse = [v for v in (_number(x) for x in m.get("mse_per_frame") or []) if v is not None]
    if drift and len(mse) >= 2:
        xs = range(len(mse))
        mx, my = statistics.fmean(xs), statistics.fmean(mse)
        out["mse_drift_per_frame"] = (sum((x - mx) * (y - my) for x, y in zip(xs, mse))
                                      / sum((x - mx) ** 2 for x in xs))
        out["mse_last_over_first"] = mse[-1] / mse[0] if mse[0] else None
        out[f"mse_last{LAST_FRAMES}"] = statistics.fmean(mse[-LAST_FRAMES:])
    extrap = [v for v in (_number(x) for x in m.get("extrap_mse_per_frame") or []) if v is not None]
    if extrap:
        out["extrap_mse_mean"] = statistics.fmean(extrap)
        beyond = extrap[len(mse):] if mse else []
        if beyond:  # generated frames past the trained clip length
            out["extrap_mse_beyond_trained"] = statistics.fmean(beyond)
    return out


def paired_metrics(rows: list[dict], factor: str, baseline: str) -> tuple[dict, list[str]]:
    """{id(row): derived} against the baseline line's row of the same seed, and footnotes.

    sampling_speedup = baseline sample_time_s / this sample_time_s; <metric>_rel_pct = 100 x
    (this - baseline) / |baseline| for mse_mean, psnr_first and every syn_* metric.
    """
    base = {str(r.get("seed")): r for r in rows if str(label_of(r, factor)) == baseline}
    if not base:
        return {}, [f"no baseline line ({factor}={baseline}): speedups not computed."]
    out = {}
    for r in rows:
        b = base.get(str(r.get("seed")))
        if b is None:
            continue
        d = {}
        t, tb = metric_of(r, "sample_time_s"), metric_of(b, "sample_time_s")
        if t and tb:
            d["sampling_speedup"] = tb / t
        names = list(PAIRED_METRICS) + [k for k in SYNTHETIC_KEYS if metric_of(r, k) is not None]
        for m in names:
            v, vb = metric_of(r, m), metric_of(b, m)
            if v is not None and vb:
                d[f"{m}_rel_pct"] = 100.0 * (v - vb) / abs(vb)
        out[id(r)] = d
    return out, [f"sampling_speedup and *_rel_pct: against the {factor}={baseline} run of the "
                 "same seed (end-to-end sample_time_s ratio; percent change of the metric)."]


# ----------------------------------------------------------------------------- baseline rows


def is_baseline(row: dict) -> bool:
    return row.get("kind") == BASELINE_KIND


def _row_time(row: dict) -> tuple[str, str]:
    return str(row.get("date") or ""), str(row.get("commit"))


def merge_by_seed(rows: list[dict]) -> list[dict]:
    """One row per seed: metrics averaged over that seed's rows (every model arm of a sweep may
    write its own, identical, baseline row); lists averaged element-wise when equally long."""
    by_seed: dict = {}
    for r in sorted(rows, key=lambda r: str(r.get("run_id"))):
        by_seed.setdefault(str(r.get("seed")), []).append(r)
    merged = []
    for seed in sorted(by_seed, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if
                                               s.lstrip("-").isdigit() else 0, s)):
        group = by_seed[seed]
        metrics: dict = {}
        for k in sorted({k for r in group for k in (r.get("metrics") or {})}):
            values = [(r.get("metrics") or {}).get(k) for r in group]
            numbers = [v for v in (_number(x) for x in values) if v is not None]
            lists = [v for v in values if isinstance(v, list)]
            if numbers:
                metrics[k] = statistics.fmean(numbers)
            elif lists and len({len(v) for v in lists}) == 1:
                cols = [[_number(x) for x in c] for c in zip(*lists)]
                metrics[k] = [statistics.fmean([x for x in c if x is not None])
                              if any(x is not None for x in c) else None for c in cols]
            else:
                metrics[k] = values[0]
        merged.append({**group[0], "metrics": metrics, "merged_runs": len(group)})
    return merged


def select_baseline(baseline_rows: list[dict], model_rows: list[dict]) -> tuple[list[dict],
                                                                                list[dict], str]:
    """The copy-baseline rows to show beside `model_rows` (ok model rows already selected):
    (ok rows merged one per seed, failed rows, note). Rows of the newest commit among the shown
    models' commits; else of the newest baseline commit, with a note saying so."""
    rows = latest_per_run(baseline_rows)
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return [], [], ""
    newest: dict = {}
    for r in ok:
        c = str(r.get("commit"))
        newest[c] = max(newest.get(c, ""), str(r.get("date") or ""))
    model_commits = {str(r.get("commit")) for r in model_rows}
    shared = [c for c in newest if c in model_commits]
    commit = max(shared or newest, key=lambda c: (newest[c], c))
    chosen = [r for r in ok if str(r.get("commit")) == commit]
    failed = [r for r in rows if r.get("status") != "ok" and str(r.get("commit")) == commit]
    where = "the models' commit" if shared else "no model row shares a commit with them"
    note = (f"{BASELINE_LABEL}: the conditioning frame repeated, scored by the same evaluation "
            f"(kind={BASELINE_KIND} rows of commit {commit[:7]}, {where}; one value per seed); "
            "a reference line, never averaged into a variant.")
    return merge_by_seed(chosen), failed, note


def _per_seed(rows: list[dict], value) -> dict[str, dict]:
    """metric -> seed -> value over `rows` (several rows of one seed averaged)."""
    acc: dict = {}
    for r in rows:
        for m, v in value(r).items():
            if v is not None:
                acc.setdefault(m, {}).setdefault(r.get("seed"), []).append(v)
    return {m: {s: statistics.fmean(vs) for s, vs in d.items()} for m, d in acc.items()}


# ----------------------------------------------------------------------------- summaries


def summarize(name: str, rows: list[dict], only: list[str] | None = None, *,
              all_commits: bool = False, baseline: str | None = None) -> Table:
    """Aggregate the rows of one table (already filtered to it) over seeds; `only` picks metrics.

    kind="baseline" rows become one reference line (BASELINE_LABEL, last) and feed the readings'
    comparison with copy; the claim of CLAIMS[name] is read from the model arms.
    """
    base_rows = [r for r in rows if is_baseline(r)]
    rows = latest_per_run([r for r in rows if not is_baseline(r)])
    factor = factor_of(name, rows) if rows or not base_rows else "variant"
    notes = []
    if not all_commits:
        rows, dropped = newest_commit_only(rows, factor)
        if dropped:
            notes.append(f"{dropped} row(s) of older commits left out (newest commit per "
                         f"{factor} and seed; --all-commits keeps them).")
    ok = [r for r in rows if r.get("status") == "ok"]
    copy_rows, copy_failed, copy_note = select_baseline(base_rows, ok)
    if not any(SAMPLE_METRICS.match(k) for r in copy_rows for k in r["metrics"]):
        copy_rows, copy_failed, copy_note = [], [], ""
    derived = {id(r): per_frame_metrics(r, name in DRIFT_TABLES) for r in ok + copy_rows}
    curves, curve_notes = curve_metrics(ok, factor, baseline or BASELINES.get(name))
    for k, extra in curves.items():
        derived[k].update(extra)
    notes += curve_notes
    if name in PAIRED_BASELINES:
        paired, paired_notes = paired_metrics(ok + copy_rows, factor,
                                              baseline or PAIRED_BASELINES[name])
        for k, extra in paired.items():
            derived[k].update(extra)
        notes += paired_notes
    derived_names = sorted({k for d in derived.values() for k, v in d.items() if v is not None})

    def value(r, m):
        return derived[id(r)].get(m) if m in derived_names else metric_of(r, m)

    names = metric_names(ok + copy_rows)
    head = [m for m in names if m in METRIC_ORDER] + derived_names
    names = head + [m for m in names if m not in head]
    names = [m for m in names if only is None or m in only]
    syn = [m for m in SYNTHETIC_KEYS if m in names]
    syn += [f"extrap_{m}" for m in SYNTHETIC_KEYS if f"extrap_{m}" in names]
    metrics = [m for m in names if m not in syn]
    groups: dict = {}
    for r in ok:
        groups.setdefault(label_of(r, factor), []).append(r)
    lines = []
    numeric = all(isinstance(k, (int, float)) and not isinstance(k, bool) for k in groups)
    labelled = [(str(label), groups[label]) for label in
                sorted(groups, key=None if numeric else str)]  # numbers sort as numbers
    for label, runs in labelled + ([(BASELINE_LABEL, copy_rows)] if copy_rows else []):
        cells = {}
        for m in metrics + syn:
            values = [v for v in (value(r, m) for r in runs) if v is not None]
            cells[m] = mean_std(values) + (f" (n={len(values)})" if len(values) < len(runs) else "")
        lines.append((label, len(runs), cells))
    if copy_rows:
        notes.append(copy_note)
    claim = claims_mod.CLAIMS.get(name)
    readings = []
    if claim is not None:
        def primary(r):
            return {m: value(r, m) for m in claim.metrics}
        readings = claims_mod.readings(name, {label: _per_seed(runs, primary)
                                              for label, runs in labelled},
                                       _per_seed(copy_rows, primary))
    failed = sorted((r for r in rows + copy_failed if r.get("status") != "ok"),
                    key=lambda r: str(r.get("run_id")))
    blocks = [("synthetic VBench-I2V-style metrics (core/metrics/synthetic.py; in [0, 1], "
               "not VBench numbers)", syn)] if syn else []
    used = ok + copy_rows
    return Table(name, factor, metrics, lines, failed, sorted({short_commit(r) for r in used}),
                 len(ok) + sum(r["merged_runs"] for r in copy_rows), notes, blocks,
                 baseline=BASELINE_LABEL if copy_rows else None, baseline_rows=copy_rows,
                 readings=readings)


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k in sorted(value):
            _flatten(f"{prefix}.{k}" if prefix else str(k), value[k], out)
    elif isinstance(value, (str, int, float, bool)) or value is None:
        out[prefix] = value


def summarize_optuna(name: str, rows: list[dict], *, all_commits: bool = False) -> Table:
    """One line per optuna row: its best value and params (nested metrics flattened, dotted)."""
    rows = latest_per_run(rows)
    factor = "variant" if any(value_of(r, "variant") for r in rows) else "run_id"
    notes = []
    if not all_commits:
        rows, dropped = newest_commit_only(rows, factor)
        if dropped:
            notes.append(f"{dropped} row(s) of older commits left out (--all-commits keeps them).")
    ok = [r for r in rows if r.get("status") == "ok"]
    flat = {}
    for r in ok:
        flat[id(r)] = {}
        _flatten("", {k: v for k, v in (r.get("metrics") or {}).items() if not isinstance(v, list)},
                 flat[id(r)])
    metrics = sorted({k for d in flat.values() for k in d})
    lines = []
    for r in sorted(ok, key=lambda r: (str(label_of(r, factor)), str(r.get("run_id")))):
        cells = {m: ("–" if flat[id(r)].get(m) is None else
                     mean_std([v]) if (v := _number(flat[id(r)].get(m))) is not None
                     else str(flat[id(r)].get(m))) for m in metrics}
        lines.append((str(label_of(r, factor)), 1, cells))
    failed = sorted((r for r in rows if r.get("status") != "ok"), key=lambda r: str(r.get("run_id")))
    return Table(name, factor, metrics, lines, failed, sorted({short_commit(r) for r in ok}),
                 len(ok), notes, source_note="best trial of each study", plotted=False)


# ----------------------------------------------------------------------------- reference data


def read_reference(name: str) -> list[dict]:
    """Rows of paper_tables/reference/<name>.csv ([] if absent)."""
    path = REFERENCE_DIR / f"{name}.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def reference_digest() -> str:
    """sha256 prefix of the reference CSVs: names the published data a table was built from."""
    digest = hashlib.sha256()
    for path in sorted(REFERENCE_DIR.glob("*.csv")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


VBENCH_COLUMNS = DIMENSION_KEYS + ("quality", "i2v", "total")


def _pct(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def vbench_table(rows: list[dict], all_commits: bool = False) -> Table:
    """Published VBench-I2V rows + measured rows (official vbench_* and synthetic syn_*)."""
    lines, notes = [], []
    for r in read_reference("vbench_i2v"):
        values = {k: float(r[k]) if r.get(k) else None for k in DIMENSION_KEYS}
        scores = partial_scores(values)
        cells = {k: _pct(values[k]) for k in DIMENSION_KEYS}
        cells.update({k: _pct(scores[k]) for k in ("quality", "i2v", "total")})
        cells["source"] = f"{r['source']} (aggregates recomputed)"
        lines.append((r["model"], 0, cells))
    for r in read_reference("vbench_i2v_aggregates"):
        cells = {k: "–" for k in DIMENSION_KEYS}
        cells.update({k: _pct(_number(float(r[k])) if r.get(k) else None)
                      for k in ("quality", "i2v", "total")})
        cells["source"] = f"{r['source']}, published aggregate"
        lines.append((r["model"], 0, cells))
    num_ref = len(lines)
    measured = [r for r in latest_per_run(rows) if r.get("status") == "ok"
                and r.get("kind") in ABLATION_KINDS + ("bench",)]
    groups: dict = {}
    for r in measured:
        m = r.get("metrics") or {}
        backend = ("vbench" if any(k.startswith(VBENCH_PREFIX) for k in m) else
                   "synthetic" if any(k in m for k in SYNTHETIC_KEYS) else None)
        if backend:
            factor = "variant" if value_of(r, "variant") else (r.get("factor") or "preset")
            groups.setdefault((backend, str(r.get("table")), factor), []).append(r)
    used = []
    baseline_rows: dict = {}
    for r in rows:
        if is_baseline(r) and r.get("table"):
            baseline_rows.setdefault(str(r.get("table")), []).append(r)
    for (backend, table, factor), group in sorted(groups.items()):
        if not all_commits:
            group, _ = newest_commit_only(group, factor)
        by_label: dict = {}
        for r in group:
            by_label.setdefault(str(label_of(r, factor)), []).append(r)
        for label, runs in sorted(by_label.items()):
            used += runs
            lines.append(_measured_line(backend, f"{table}: {label}", runs))
        copy, _, _ = select_baseline(baseline_rows.get(table, []), group)
        if backend == "synthetic" and any(metric_of(r, k) is not None for r in copy
                                          for k in SYNTHETIC_KEYS):
            used += copy
            lines.append(_measured_line(backend, f"{table}: {BASELINE_LABEL}", copy))
    notes.append("Published rows: per-dimension values as printed (see the source column and "
                 "paper_tables/reference/*.csv for full citations); Quality/I2V/Total recomputed "
                 "with core/metrics/aggregate.py (VBench's formula) unless marked published.")
    if any(line[2]["source"].startswith("synthetic") for line in lines):
        notes.append("Synthetic rows: exact ground-truth metrics on the built-in sprites "
                     "(core/metrics/synthetic.py), x100, mean ± sd over seeds. They mirror the "
                     "dimensions but are not VBench scores: no aesthetic dimension and never "
                     "aggregated into Quality/I2V/Total.")
    commits = sorted({short_commit(r) for r in used})
    return Table(VBENCH_TABLE, "model", list(VBENCH_COLUMNS) + ["source"], lines, [], commits,
                 len(used), notes, source_note=f"{num_ref} published reference rows (data "
                 f"{reference_digest()}) + measured rows")


def _measured_line(backend: str, label: str, runs: list[dict]) -> tuple[str, int, dict]:
    cells = {}
    if backend == "vbench":  # official values in percent: aggregate per run, then average
        per_run = []
        for r in runs:
            values = {k: metric_of(r, VBENCH_PREFIX + k) for k in DIMENSION_KEYS}
            per_run.append({**values, **partial_scores(values)})
        for k in VBENCH_COLUMNS:
            vals = [p[k] for p in per_run if p.get(k) is not None]
            cells[k] = mean_std(vals) + (f" (n={len(vals)})" if 0 < len(vals) < len(runs) else "")
        cells["source"] = "vbench (official backend, measured)"
    else:
        by_dim = {dim: key for key, dim in SYNTHETIC_KEYS.items() if dim}
        for k in VBENCH_COLUMNS:
            key = by_dim.get(k)
            vals = [100 * v for v in (metric_of(r, key) for r in runs) if v is not None] if key else []
            cells[k] = mean_std(vals) if vals else "–"
        cells["source"] = "synthetic (measured, not VBench)"
    return label, len(runs), cells


def efficiency_table() -> Table:
    """VideoMAR vs Cosmos I2V: the abstract's ratios beside the quoted absolute numbers."""
    quoted = {r["model"].split(" (")[0]: r for r in read_reference("vbench_i2v_aggregates")}
    mar, cosmos = quoted.get("VideoMAR", {}), quoted.get("Cosmos I2V", {})
    absolute = {"parameters": "params", "training data": "video_data"}
    lines = []
    for r in read_reference("efficiency"):
        key = absolute.get(r["quantity"])
        lines.append((r["quantity"], 0, {
            "VideoMAR": mar.get(key, "–") if key else "–",
            "Cosmos I2V": cosmos.get(key, "–") if key else "–",
            "VideoMAR / Cosmos (%)": r["videomar_vs_cosmos_percent"],
            "source": r["citation"] + (f"; absolute values: {mar.get('citation')}" if key and mar
                                       else "")}))
    for key, label in (("total", "VBench-I2V Total (%)"), ("i2v", "VBench-I2V I2V Score (%)")):
        if mar and cosmos:
            lines.append((label, 0, {"VideoMAR": mar[key], "Cosmos I2V": cosmos[key],
                                     "VideoMAR / Cosmos (%)": "–", "source": mar["citation"]}))
    columns = ["VideoMAR", "Cosmos I2V", "VideoMAR / Cosmos (%)", "source"]
    return Table("efficiency", "quantity", columns, lines,
                 source_note=f"published reference data {reference_digest()}")


# ----------------------------------------------------------------------------- rendering


def header(t: Table, command: str, source: str) -> str:
    commits = ", ".join(t.commits) or "none"
    return (f"Generated by `{command}` from {source}; commit {commits}; {t.num_ok} ok rows, "
            f"{len(t.failed)} failed; {t.source_note}. Do not edit.")


def footnotes(t: Table) -> list[str]:
    notes = []
    if len(t.commits) > 1:
        notes.append(f"WARNING: rows mix {len(t.commits)} commits ({', '.join(t.commits)}); "
                     f"values may not be comparable.")
    notes += t.notes
    for r in t.failed:
        error = (str(r.get("error") or "no error recorded").strip().splitlines() or [""])[-1][:120]
        notes.append(f"failed, not averaged: run {r.get('run_id')} {t.factor}="
                     f"{label_of(r, t.factor)} seed={r.get('seed')}: {error}")
    return notes


def _blocks(t: Table) -> list[tuple[str, list[str]]]:
    return [("", t.metrics)] + [b for b in t.blocks if b[1]]


def _with_n(t: Table) -> bool:
    return any(n for _, n, _ in t.lines)


def to_markdown(t: Table, command: str, source: str) -> str:
    out = [f"_{header(t, command, source)}_"]
    for title, metrics in _blocks(t):
        out += ["", f"**{title}**", ""] if title else [""]
        first = [t.factor] + (["n"] if _with_n(t) else [])
        out += ["| " + " | ".join(first + metrics) + " |",
                "|---|" + "---:|" * (len(first) - 1)
                + "".join("---|" if m in TEXT_COLUMNS else "---:|" for m in metrics)]
        out += ["| " + " | ".join([label] + ([str(n) if n else "–"] if _with_n(t) else [])
                                  + [c.get(m, "–") for m in metrics]) + " |"
                for label, n, c in t.lines]
    for reading in t.readings:  # paragraphs of their own, quoted verbatim by the README
        out += ["", reading]
    notes = footnotes(t)
    return "\n".join(out + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


def tex(s: str) -> str:
    return "".join(LATEX_ESCAPES.get(c, c) for c in s).replace("±", "$\\pm$").replace("–", "--")


def to_latex(t: Table, command: str, source: str) -> str:
    out = [f"% {header(t, command, source)}"]
    for title, metrics in _blocks(t):
        first = [t.factor] + (["n"] if _with_n(t) else [])
        out += ([f"% {tex(title)}"] if title else []) + [
            "\\begin{tabular}{l" + "r" * (len(first) - 1)
            + "".join("l" if m in TEXT_COLUMNS else "r" for m in metrics) + "}", "\\toprule",
            " & ".join(tex(h) for h in first + metrics) + " \\\\", "\\midrule"]
        out += [" & ".join(tex(x) for x in [label] + ([str(n) if n else "–"] if _with_n(t) else [])
                           + [c.get(m, "–") for m in metrics]) + " \\\\"
                for label, n, c in t.lines]
        out += ["\\bottomrule", "\\end{tabular}"]
    out += [f"% {tex(n)}" for n in t.readings]
    out += [f"% {tex(n)}" for n in footnotes(t)]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.hashsalt": "videomar", "figure.max_open_warning": 0})
    return plt


def _save(fig, path: Path, note: str, tight: bool = True) -> None:
    """PNG with fixed metadata (no software version, no time): reruns are byte-identical."""
    plain = note.replace("±", "+/-").replace("–", "-").encode("ascii", "replace").decode()
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None, "Description": plain})
    fig.clf()
    import matplotlib.pyplot as plt
    plt.close(fig)


def _ok_rows(t: Table, rows: list[dict], all_commits: bool) -> list[dict]:
    """The model rows a table averaged (never its baseline rows: those are t.baseline_rows)."""
    ok = [r for r in latest_per_run(rows) if r.get("status") == "ok" and not is_baseline(r)]
    return ok if all_commits else newest_commit_only(ok, t.factor)[0]


def _add_to_legend(ax, handles: list, labels: list) -> None:
    """Append handles to the axis legend (seaborn's, if any), keeping its entries."""
    legend = ax.get_legend()
    old_handles = list(legend.legend_handles) if legend else []
    old_labels = [x.get_text() for x in legend.get_texts()] if legend else []
    ax.legend(old_handles + handles, old_labels + labels, fontsize=7)


def _baseline_hline(ax, values: list[float]) -> None:
    """The copy baseline as a dashed, labelled horizontal reference line (mean over seeds)."""
    if values:
        line = ax.axhline(statistics.fmean(values), color="black", linestyle="--", linewidth=1.2)
        _add_to_legend(ax, [line], [BASELINE_LABEL])


def plot(t: Table, rows: list[dict], path: Path, note: str, all_commits: bool = False) -> bool:
    """Mean ± sd per line with one gray dot per seed; a panel per headline metric."""
    import pandas as pd
    import seaborn as sns

    bench = all(r.get("kind") == "bench" for r in rows)
    shown = ([m for m in t.metrics if THROUGHPUT.search(m)][:6] if bench else
             [m for m in t.metrics if m in METRIC_ORDER] or t.metrics[:4])
    ok = _ok_rows(t, rows, all_commits)
    paired: dict = {}
    if t.name in PAIRED_BASELINES:  # speedup and relative change against the baseline line
        paired, _ = paired_metrics(ok + t.baseline_rows, t.factor, PAIRED_BASELINES[t.name])
        shown = [m for m in PAIRED_PLOT if any(m in d for r in ok for d in [paired.get(id(r), {})])]

    def value(r, m):
        return paired.get(id(r), {}).get(m) if paired else metric_of(r, m)

    data = pd.DataFrame([{"level": str(label_of(r, t.factor)), "metric": m,
                          "value": value(r, m)} for r in ok for m in shown]).dropna()
    shown = [m for m in shown if m in set(data["metric"])] if not data.empty else []
    if not shown:
        return False
    plt = _pyplot()
    order = [label for label, _, _ in t.model_lines()]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), squeeze=False)
    for ax, m in zip(axes[0], shown):
        d = data[data.metric == m]
        if not d.empty:
            sns.pointplot(d, x="level", y="value", order=order, errorbar="sd", capsize=0.2,
                          linestyle="none", err_kws={"linewidth": 1.2}, ax=ax)
            sns.stripplot(d, x="level", y="value", order=order, color="gray", size=3, ax=ax,
                          jitter=False)
        ax.set(title=m, xlabel=t.factor, ylabel="")
        ax.tick_params(axis="x", labelrotation=30)
        if SAMPLE_METRICS.match(m.removesuffix("_rel_pct")):  # not for times, FLOPs, speedups
            _baseline_hline(ax, [v for v in (value(r, m) for r in t.baseline_rows)
                                 if v is not None])
    fig.suptitle(f"{t.name}: mean ± sd over seeds, commit {', '.join(t.commits)}", fontsize=9)
    _save(fig, path, note)
    return True


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True)


def _frame_data(t: Table, ok: list[dict], keys: dict[str, str]):
    import pandas as pd

    return pd.DataFrame([{"line": str(label_of(r, t.factor)), "seed": str(r.get("seed")),
                          "shape": shape, "frame": i + 1, "mse": v}
                         for r in ok for key, shape in keys.items()
                         for i, v in enumerate((r.get("metrics") or {}).get(key) or [])
                         if _number(v) is not None])


def plot_frames(t: Table, rows: list[dict], path: Path, note: str, extrapolation: bool,
                all_commits: bool = False) -> bool:
    """Per-frame MSE vs generated frame index per line (drift), or trained vs extrapolated shape."""
    import seaborn as sns

    keys = {"mse_per_frame": "trained shape"}
    if extrapolation:
        keys["extrap_mse_per_frame"] = "extrapolated shape"
    data = _frame_data(t, _ok_rows(t, rows, all_commits), keys)
    if data.empty or (extrapolation and "extrapolated shape" not in set(data["shape"])):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data, x="frame", y="mse", hue="line", style="shape" if extrapolation else None,
                 errorbar="sd", marker="o", ax=ax,
                 hue_order=[label for label, _, _ in t.model_lines()])
    copy = _frame_data(t, t.baseline_rows, keys)
    handles, labels = [], []
    for shape in ("trained shape", "extrapolated shape"):  # the baseline's per-frame curve
        d = copy[copy["shape"] == shape] if not copy.empty else copy
        if not d.empty:
            means = d.groupby("frame")["mse"].mean()
            handles += ax.plot(means.index, means.values, color="black", linewidth=1.2,
                               linestyle="--" if shape == "trained shape" else "-.")
            labels.append(BASELINE_LABEL + (f", {shape}" if extrapolation else ""))
    if handles:
        _add_to_legend(ax, handles, labels)
    if extrapolation:
        trained = data[data["shape"] == "trained shape"]["frame"].max()
        ax.axvline(trained + 0.5, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{t.name}: per-frame MSE, trained vs extrapolated shape", fontsize=9)
    else:
        ax.set_title(f"{t.name}: per-frame drift (mean ± sd over seeds)", fontsize=9)
    ax.set(xlabel="generated frame", ylabel="MSE vs truth")
    ax.xaxis.set_major_locator(_integer_ticks())
    _save(fig, path, note)
    return True


def plot_curves(t: Table, rows: list[dict], path: Path, note: str, all_commits: bool = False) -> bool:
    """val_loss against training FLOPs, one thin line per seed, coloured by line."""
    import pandas as pd
    import seaborn as sns

    ok = _ok_rows(t, rows, all_commits)
    data = pd.DataFrame([{"line": str(label_of(r, t.factor)), "seed": str(r.get("seed")),
                          "flops": f, "val_loss": v}
                         for r in ok for f, v in zip(*curve_of(r))])
    if data.empty:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data, x="flops", y="val_loss", hue="line", units="seed", estimator=None,
                 marker="o", markersize=3, ax=ax,
                 hue_order=[label for label, _, _ in t.model_lines()])
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels overlap on a 1-decade axis
    ax.set_xlabel("training FLOPs (log scale)")
    ax.set_title(f"{t.name}: held-out loss vs training FLOPs (one line per seed)", fontsize=9)
    _save(fig, path, note)
    return True


# ----------------------------------------------------------------------------- driver


def build(rows: list[dict], only: list[str] | None = None, *, all_commits: bool = False,
          baselines: dict | None = None) -> dict[str, tuple[Table, list[dict]]]:
    """table name -> (summary, its rows) for every table in the results plus the reference tables."""
    by_table: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        kind = r.get("kind")
        if r.get("table") and kind in ABLATION_KINDS + (BASELINE_KIND, "bench", "optuna"):
            family = "ablation" if kind in ABLATION_KINDS + (BASELINE_KIND,) else kind
            by_table.setdefault((str(r["table"]), family), []).append(r)
    names = {}
    for (name, family), rs in sorted(by_table.items()):
        shared = any(n == name and f != family for n, f in by_table)
        if family == "optuna":  # a study's best row owns the table name; its trials go beside it
            names[(name, family)] = name
        elif shared and (name, "optuna") in by_table:
            names[(name, family)] = f"{name}_trials"
        else:
            names[(name, family)] = name if family == "ablation" or not shared else f"{name}_{family}"
    tables = {}
    for (name, family), rs in sorted(by_table.items()):
        out = names[(name, family)]
        if family == "optuna" or name == "optuna":
            tables[out] = (summarize_optuna(out, rs, all_commits=all_commits), rs)
        else:
            shown = only if only or family != "bench" else bench_columns(rs)
            tables[out] = (summarize(name, rs, shown, all_commits=all_commits,
                                     baseline=(baselines or {}).get(name)), rs)
            tables[out][0].name = out
    tables[VBENCH_TABLE] = (vbench_table(rows, all_commits), [])
    if read_reference("efficiency"):
        tables["efficiency"] = (efficiency_table(), [])
    return dict(sorted(tables.items()))


def bench_columns(rows: list[dict]) -> list[str] | None:
    """The metrics a bench table shows: the newest row's declared `columns` (None: all)."""
    declared = [r["columns"] for r in rows if r.get("columns")]
    return ["wall_time_s", *declared[-1]] if declared else None


def write_bench_csv(path: Path, t: Table, rows: list[dict]) -> None:
    """Every scalar metric of the table's rows (its commits), one line per row."""
    used = [r for r in rows if r.get("status") == "ok" and short_commit(r) in t.commits]
    metrics = sorted({k for r in used for k, v in (r.get("metrics") or {}).items()
                      if _number(v) is not None})
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([t.factor, "commit", "date", "wall_time_s", *metrics])
        for r in used:
            m = r.get("metrics") or {}
            out.writerow([label_of(r, t.factor), short_commit(r), r.get("date", ""),
                          r.get("wall_time_s", ""), *[m.get(k, "") for k in metrics]])


def write_table(out: Path, name: str, t: Table, rows: list[dict], command: str, source: str,
                plots: bool, all_commits: bool) -> list[str]:
    """Write <name>.md/.tex and its figures; returns the file suffixes written."""
    stem = out / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    md = to_markdown(t, command, source)
    Path(f"{stem}.md").write_text(md)
    Path(f"{stem}.tex").write_text(to_latex(t, command, source))
    written = [".md", ".tex"]
    if rows and all(r.get("kind") == "bench" for r in rows):
        write_bench_csv(Path(f"{stem}.csv"), t, rows)
        written.append(".csv")
    if not plots or not rows or not t.lines or not t.plotted:
        return written
    note = md.splitlines()[0].strip("_")
    figures = [("", lambda p: plot(t, rows, p, note, all_commits))]
    has = {k for r in rows if not is_baseline(r) for k in (r.get("metrics") or {})}
    if "extrap_mse_per_frame" in has:
        figures.append(("_extrapolation", lambda p: plot_frames(t, rows, p, note, True, all_commits)))
    if t.name in DRIFT_TABLES and "mse_per_frame" in has:
        figures.append(("_drift", lambda p: plot_frames(t, rows, p, note, False, all_commits)))
    if "val_curve" in has:
        figures.append(("_curves", lambda p: plot_curves(t, rows, p, note, all_commits)))
    for suffix, draw in figures:
        if draw(Path(f"{stem}{suffix}.png")):
            written.append(f"{suffix}.png")
    return written


def sun_table(rows: list[dict], command: str, source: str) -> tuple[str, str] | None:
    """sun.md/.tex from the kind="sun" rows of the newest `python bench/sun.py` invocation,
    rendered by bench/sun.py's own functions (same table as `make sun` writes); None without rows."""
    sun_rows = [r for r in rows if r.get("kind") == SUN_KIND]
    if not sun_rows:
        return None
    from bench import sun as sun_bench  # lazy: imports core.sun

    def invocation(r):
        return str((r.get("config") or {}).get("invocation") or r.get("commit"))

    newest = max(sun_rows, key=lambda r: (str(r.get("date") or ""), invocation(r)))
    chosen = [r for r in sun_rows if invocation(r) == invocation(newest)]
    commits = sorted({short_commit(r) for r in chosen})
    header = (f"Generated by `{command}` from {source}: the {len(chosen)} kind={SUN_KIND} rows of "
              f"`python bench/sun.py` invocation {invocation(newest)}, commit "
              f"{', '.join(commits)}. Do not edit.")
    return sun_bench.render_markdown(chosen, header), sun_bench.render_latex(chosen, header)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default=DEFAULT_RESULTS, help="JSONL results table")
    p.add_argument("--out", help="output directory (default: the results file's directory)")
    p.add_argument("--table", action="append", help="only these tables (repeatable)")
    p.add_argument("--metrics", help="comma-separated metric columns (default: every numeric one)")
    p.add_argument("--all-commits", action="store_true",
                   help="aggregate rows of every commit (default: newest per table/variant/seed)")
    p.add_argument("--baseline", action="append", default=[], metavar="TABLE=VARIANT",
                   help=f"baseline line of a val_curve table (default: {BASELINES})")
    p.add_argument("--no-plots", action="store_true", help="skip the .png figures")
    args = p.parse_args(argv)
    baselines = dict(BASELINES)
    for item in args.baseline:
        if "=" not in item:
            p.error(f"--baseline {item!r}: expected TABLE=VARIANT")
        baselines.update([item.split("=", 1)])
    results = Path(args.results)
    if args.results == DEFAULT_RESULTS and not results.exists():
        results = ROOT / DEFAULT_RESULTS  # the default is relative to the repo root
    out = Path(args.out) if args.out else results.parent
    command = " ".join(["python bench/make_tables.py", *argv])
    rows = read_rows(results)
    if not any(r.get("table") for r in rows):
        print(f"no result rows in {results}; nothing written")
        return 0
    tables = build(rows, args.metrics.split(",") if args.metrics else None,
                   all_commits=args.all_commits, baselines=baselines)
    if args.table:
        tables = {k: v for k, v in tables.items() if k in args.table}
    out.mkdir(parents=True, exist_ok=True)
    for name, (t, rs) in tables.items():
        written = write_table(out, name, t, rs, command, args.results, not args.no_plots,
                              args.all_commits)
        if len(t.commits) > 1:
            warnings.warn(f"table {name}: rows mix commits {t.commits}")
        print(f"wrote {out / name}{{{','.join(written)}}}: {t.num_ok} ok rows, {len(t.failed)} failed")
        print(to_markdown(t, command, args.results))
    sun = sun_table(rows, command, args.results) if not args.table or SUN_KIND in args.table else None
    if sun:
        (out / "sun.md").write_text(sun[0])
        (out / "sun.tex").write_text(sun[1])
        print(f"wrote {out / SUN_KIND}{{.md,.tex}}")
        print(sun[0])
    if not args.no_plots and (not args.table or SAMPLES_FIGURE in args.table
                              or samples_mod.TABLE in args.table):
        # only when saved samples exist (not in a fresh clone): a committed picture is kept
        if samples_mod.write(rows, ROOT, out / f"{SAMPLES_FIGURE}.png",
                             lambda fig, path, note: _save(fig, path, note, tight=False)):
            print(f"wrote {out / SAMPLES_FIGURE}.png")
    readings = [(name, r) for name, (t, _) in tables.items() for r in t.readings]
    if readings:
        print("Readings (computed by make tables; quote them verbatim):")
        for name, r in readings:
            print(f"  {name}: {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
