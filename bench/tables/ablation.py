"""Ablation tables: the rows of one table (train/eval rows and their copy-baseline rows) summed up
as one line per variant, "mean ± std" over seeds, with the derived metrics its table_spec asks for
(drift, val_curve baseline, paired line) and the readings of its claim."""

from __future__ import annotations

import statistics

from core.metrics.synthetic import KEYS as SYNTHETIC_KEYS
from bench.tables import readings as claims_mod
from bench.tables.baseline import select_baseline
from bench.tables.derived import curve_metrics, paired_metrics, per_frame_metrics
from bench.tables.rows import (BASELINE_LABEL, METRIC_ORDER, SAMPLE_METRICS, Table, factor_of,
                               is_baseline, label_of, latest_per_run, mean_std, metric_names,
                               metric_of, newest_commit_only, short_commit)
from bench.tables.spec import spec_for


def _per_seed(rows: list[dict], value) -> dict[str, dict]:
    """metric -> seed -> value over `rows` (several rows of one seed averaged)."""
    acc: dict = {}
    for r in rows:
        for m, v in value(r).items():
            if v is not None:
                acc.setdefault(m, {}).setdefault(r.get("seed"), []).append(v)
    return {m: {s: statistics.fmean(vs) for s, vs in d.items()} for m, d in acc.items()}


def summarize(name: str, rows: list[dict], only: list[str] | None = None, *,
              all_commits: bool = False, baseline: str | None = None) -> Table:
    """Aggregate the rows of one table (already filtered to it) over seeds; `only` picks metrics.

    kind="baseline" rows become one reference line (BASELINE_LABEL, last) and feed the readings'
    comparison with copy; the table_spec of `name` (bench/tables/spec.py) says which derived
    metrics to add and which claim to read from the model arms. `baseline` overrides its
    val_curve baseline line and its paired line.
    """
    spec = spec_for(name)
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
    derived = {id(r): per_frame_metrics(r, spec.drift) for r in ok + copy_rows}
    curves, curve_notes = curve_metrics(ok, factor, baseline or spec.baseline)
    for k, extra in curves.items():
        derived[k].update(extra)
    notes += curve_notes
    if spec.paired:
        paired, paired_notes = paired_metrics(ok + copy_rows, factor, baseline or spec.paired)
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
    claim = spec.claim
    readings = []
    if claim is not None:
        def primary(r):
            return {m: value(r, m) for m in claim.metrics}
        readings = claims_mod.readings(name, {label: _per_seed(runs, primary)
                                              for label, runs in labelled},
                                       _per_seed(copy_rows, primary), {name: claim})
    if spec.targets:
        wanted = {t.metric for t in spec.targets}
        per_arm = {label: _per_seed(runs, lambda r: {m: value(r, m) for m in wanted})
                   for label, runs in labelled}
        readings += [claims_mod.target_line(t, per_arm) for t in spec.targets]
    failed = sorted((r for r in rows + copy_failed if r.get("status") != "ok"),
                    key=lambda r: str(r.get("run_id")))
    blocks = [("synthetic VBench-I2V-style metrics (core/metrics/synthetic.py; in [0, 1], "
               "not VBench numbers)", syn)] if syn else []
    used = ok + copy_rows
    return Table(name, factor, metrics, lines, failed, sorted({short_commit(r) for r in used}),
                 len(ok) + sum(r["merged_runs"] for r in copy_rows), notes, blocks,
                 baseline=BASELINE_LABEL if copy_rows else None, baseline_rows=copy_rows,
                 readings=readings)
