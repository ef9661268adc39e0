"""The `copy` baseline rows (kind="baseline": the conditioning frame repeated, scored like a model
and written beside the model rows): which of them a table shows, merged one per seed."""

from __future__ import annotations

import statistics

from bench.tables.rows import BASELINE_KIND, BASELINE_LABEL, latest_per_run, number


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
            numbers = [v for v in (number(x) for x in values) if v is not None]
            lists = [v for v in values if isinstance(v, list)]
            if numbers:
                metrics[k] = statistics.fmean(numbers)
            elif lists and len({len(v) for v in lists}) == 1:
                cols = [[number(x) for x in c] for c in zip(*lists)]
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
