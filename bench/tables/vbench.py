"""Reference tables: `vbench_i2v` (the published VBench-I2V rows of paper_tables/reference/, with
aggregates recomputed by core/metrics/aggregate.py, beside the measured rows) and `efficiency`
(VideoMAR vs Cosmos ratios from the reference data)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from core.metrics.aggregate import DIMENSION_KEYS, partial_scores
from core.metrics.synthetic import KEYS as SYNTHETIC_KEYS
from bench.tables.baseline import select_baseline
from bench.tables.rows import (ABLATION_KINDS, BASELINE_LABEL, Table, is_baseline, label_of,
                               latest_per_run, mean_std, metric_of, newest_commit_only, number,
                               short_commit, value_of)

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "paper_tables" / "reference"
VBENCH_TABLE = "vbench_i2v"
VBENCH_PREFIX = "vbench_"  # official backend metrics in a row: vbench_<dimension>, in percent


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
        cells.update({k: _pct(number(float(r[k])) if r.get(k) else None)
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
            vals = ([100 * v for v in (metric_of(r, key) for r in runs) if v is not None]
                    if key else [])
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
