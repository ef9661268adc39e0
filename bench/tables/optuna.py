"""Optuna tables: one line per kind="optuna" row (a study's best trial): its best value and
params, nested metrics flattened to dotted columns."""

from __future__ import annotations

from bench.tables.rows import (Table, label_of, latest_per_run, mean_std, newest_commit_only,
                               number, short_commit, value_of)


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
                     mean_std([v]) if (v := number(flat[id(r)].get(m))) is not None
                     else str(flat[id(r)].get(m))) for m in metrics}
        lines.append((str(label_of(r, factor)), 1, cells))
    failed = sorted((r for r in rows if r.get("status") != "ok"),
                    key=lambda r: str(r.get("run_id")))
    return Table(name, factor, metrics, lines, failed, sorted({short_commit(r) for r in ok}),
                 len(ok), notes, source_note="best trial of each study", plotted=False)
