"""Bench tables (kind="bench" rows: kv_cache, flops, cost, ...): the columns the bench declares
(the row's `columns`, its HEADLINE) in the table, every scalar metric in <name>.csv beside it."""

from __future__ import annotations

import csv
from pathlib import Path

from bench.tables.rows import Table, label_of, number, short_commit


def bench_columns(rows: list[dict]) -> list[str] | None:
    """The metrics a bench table shows: the newest row's declared `columns` (None: all)."""
    declared = [r["columns"] for r in rows if r.get("columns")]
    return ["wall_time_s", *declared[-1]] if declared else None


def write_bench_csv(path: Path, t: Table, rows: list[dict]) -> None:
    """Every scalar metric of the table's rows (its commits), one line per row."""
    used = [r for r in rows if r.get("status") == "ok" and short_commit(r) in t.commits]
    metrics = sorted({k for r in used for k, v in (r.get("metrics") or {}).items()
                      if number(v) is not None})
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([t.factor, "commit", "date", "wall_time_s", *metrics])
        for r in used:
            m = r.get("metrics") or {}
            out.writerow([label_of(r, t.factor), short_commit(r), r.get("date", ""),
                          r.get("wall_time_s", ""), *[m.get(k, "") for k in metrics]])
