"""`make tables` (bench/make_tables.py is its command line), one file per concern:

- spec.py: each ablation table's metadata, read from the `table_spec` block of its YAML
  (ablations/conf/ablation/<name>.yaml): label rule, baseline/paired lines, drift, claim, ...;
- rows.py: which rows a table uses (newest commit, last row per run), line labels, the Table;
- baseline.py: the `copy` baseline rows shown beside a table, merged one per seed;
- derived.py: val_curve, per-frame drift/extrapolation and paired metrics;
- ablation.py: an ablation table summed up over seeds, with its derived metrics and readings;
- optuna.py, bench_tables.py, vbench.py: Optuna studies, kind=bench tables (+ CSV), the
  VBench-I2V and efficiency reference tables;
- render.py, plots.py: Markdown/LaTeX and the seaborn figures;
- build.py: rows -> tables -> files (and sun.md through bench/sun.py's own code);
- stats.py: Student-t distribution and the paired t-test (standard library only, no scipy);
- readings.py: the reading line of a table's claim, decided from a paired test across seeds;
- samples.py: a table's sample picture (conditioning frame, truth, the declared lines' rollouts).
"""
