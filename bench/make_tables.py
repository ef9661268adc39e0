"""Regenerate every paper table and figure from the results table. Never edit the outputs by hand.

    python bench/make_tables.py [RESULTS] [--out DIR] [--table NAME]... [--all-commits]
                                [--baseline TABLE=VARIANT]... [--metrics a,b] [--no-plots]

This file is the command line; the tables are built by bench/tables/ (pure functions turn rows into
tables, as lm-evaluation-harness `make_table`; main() only reads, writes and prints). What an
ablation table shows comes from its YAML's `table_spec` block (ablations/conf/ablation/<name>.yaml,
bench/tables/spec.py): the line label rule, val_curve baseline line, paired line, drift columns,
legacy label column, sample picture and claim. Outputs in --out (default: the results file's
directory), per table `<table>.md`, `<table>.tex` and seaborn figures `<table>*.png`:

- ablation tables (kind train/eval rows, grouped by their `table`; tables/ablation.py): one line
  per variant (`config.variant`; older rows without it fall back to table_spec.factor / the row's
  `factor` column), cells "mean ± sample std" over seeds; the synthetic `syn_*` metrics get a
  second block. Derived columns (tables/derived.py): per-frame drift (table_spec.drift),
  extrapolation error (rows with `extrap_mse_per_frame`), for `val_curve` rows the FLOPs to reach
  the baseline line's final val_loss (table_spec.baseline; same-quality compute) and val_loss at
  the largest budget every run reached (same-compute quality), and speedup and relative change
  against the table_spec.paired line of the same seed. Figures (tables/plots.py): metric per
  variant with seed error bars, extrapolation curves, per-frame drift, val_loss vs training FLOPs.
- the `copy` baseline (kind="baseline" rows: the conditioning frame repeated, scored like a model,
  written beside the model rows; tables/baseline.py): one line "copy (baseline)" per sample table
  (rows of the newest commit, one value per seed, never averaged into a variant) and a dashed
  reference line in every sample figure (its per-frame curve in the drift and extrapolation
  figures).
- readings: every table whose table_spec declares a claim gets "Reading (...)" lines decided by a
  paired t-test across seeds (claim arm vs reference arm, and each arm vs copy;
  tables/readings.py), in the .md, as .tex comments, and printed at the end; the README quotes
  them verbatim.
- `samples_<table>.png` (the README's samples_attn.png): conditioning frame + truth and the
  rollouts of the lines table_spec.samples names (tables/samples.py), when the runs' saved samples
  exist; otherwise it is left as is.
- `sun.md`/`.tex`: the kind="sun" rows of the newest `python bench/sun.py` invocation, rendered
  by bench/sun.py's own table code (tables/build.py).
- `optuna` rows (kind="optuna"): one line per study with the best params and value; tables whose
  table_spec says per_run (the study's trials) one line per row (tables/optuna.py).
- kind="bench" rows (kv_cache, flops, cost, ...): the columns the bench declares (the row's
  `columns`, its HEADLINE) per variant, every scalar metric in <name>.csv beside it, and a
  throughput figure when they have `*_per_s` / `*speedup*` metrics (tables/bench_tables.py).
- `vbench_i2v`: the published VBench-I2V rows of paper_tables/reference/ (with citations and
  aggregates recomputed by core/metrics/aggregate.py) beside the measured rows; synthetic
  (`syn_*`) rows are never aggregated, official `vbench_<dim>` rows (percent) are
  (tables/vbench.py).
- `efficiency`: VideoMAR vs Cosmos ratios from the reference data.

By default only rows from the newest commit of each (table, variant, seed) are used (rows of
older code are counted in a footnote); --all-commits keeps every commit and flags the mix.
Failed runs are footnoted, never averaged. Reruns are byte-identical: everything is sorted, no
dates are written, and PNG metadata carries no software version or time.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from core.results import read_rows  # noqa: E402
from bench.tables import plots, samples as samples_mod, spec as specs  # noqa: E402
# The API of `make tables` (tests and notebooks/results.ipynb use it as `mt.<name>`).
from bench.tables.ablation import summarize  # noqa: E402,F401
from bench.tables.build import SUN_KIND, build, sun_table, write_table  # noqa: E402,F401
from bench.tables.optuna import summarize_optuna  # noqa: E402,F401
from bench.tables.render import to_latex, to_markdown  # noqa: E402,F401
from bench.tables.rows import (BASELINE_LABEL, Table, factor_of, label_of,  # noqa: E402,F401
                               latest_per_run, mean_std)
from bench.tables.vbench import efficiency_table, vbench_table  # noqa: E402,F401

DEFAULT_RESULTS = "paper_tables/runs.jsonl"


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
                   help="baseline line of a val_curve (or paired) table (default: its "
                   "table_spec.baseline in ablations/conf/ablation/<table>.yaml)")
    p.add_argument("--no-plots", action="store_true", help="skip the .png figures")
    args = p.parse_args(argv)
    declared = specs.load()
    baselines = {name: s.baseline for name, s in declared.items() if s.baseline}
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
        print(f"wrote {out / name}{{{','.join(written)}}}: {t.num_ok} ok rows, "
              f"{len(t.failed)} failed")
        print(to_markdown(t, command, args.results))
    want_sun = not args.table or SUN_KIND in args.table
    sun = sun_table(rows, command, args.results) if want_sun else None
    if sun:
        (out / "sun.md").write_text(sun[0])
        (out / "sun.tex").write_text(sun[1])
        print(f"wrote {out / SUN_KIND}{{.md,.tex}}")
        print(sun[0])
    for name, spec in declared.items():  # sample pictures, as table_spec.samples declares them
        figure = f"samples_{name}"
        wanted = not args.table or figure in args.table or name in args.table
        # only when saved samples exist (not in a fresh clone): a committed picture is kept
        if spec.samples and wanted and not args.no_plots and samples_mod.write(
                rows, ROOT, out / f"{figure}.png",
                lambda fig, path, note: plots._save(fig, path, note, tight=False),
                name, spec.samples):
            print(f"wrote {out / figure}.png")
    readings = [(name, r) for name, (t, _) in tables.items() for r in t.readings]
    if readings:
        print("Readings (computed by make tables; quote them verbatim):")
        for name, r in readings:
            print(f"  {name}: {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
