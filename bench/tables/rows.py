"""Rows of the results table: which rows a table uses (newest commit per line and seed, the last
row per run) and how a row is labelled and read; the Table a summary fills; "mean ± std" cells."""

from __future__ import annotations

import math
import re
import statistics
import warnings
from dataclasses import dataclass, field

from bench.tables.spec import spec_for

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
    # more blocks after the first, (title, metrics) each
    blocks: list[tuple[str, list[str]]] = field(default_factory=list)
    source_note: str = "mean ± sample std over seeds"
    plotted: bool = True  # optuna studies have no seeds to plot
    baseline: str | None = None  # label of the copy-baseline line (the last line), if shown
    baseline_rows: list[dict] = field(default_factory=list, repr=False)  # one per seed
    readings: list[str] = field(default_factory=list)  # computed claim readings (bench/tables)

    def model_lines(self) -> list[tuple[str, int, dict[str, str]]]:
        return [line for line in self.lines if line[0] != self.baseline]


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


def number(value):
    """A finite int/float as float; None for anything else (bools, NaN, strings, None)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if is_number and math.isfinite(value) else None


def metric_of(row: dict, name: str):
    if name in TOP_LEVEL_METRICS:
        return number(row.get(name))
    return number((row.get("metrics") or {}).get(name))


def metric_names(rows: list[dict]) -> list[str]:
    """Scalar metrics present in any row: METRIC_ORDER first, then alphabetical."""
    names = {k for r in rows for k, v in (r.get("metrics") or {}).items()
             if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    names |= {k for k in TOP_LEVEL_METRICS if any(metric_of(r, k) is not None for r in rows)}
    return [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))


def factor_of(name: str, rows: list[dict]) -> str:
    """The column labelling lines: "variant" when rows carry config.variant, else the table's
    declared legacy column (table_spec.factor), else the rows' own `factor`."""
    if any(value_of(r, "variant") not in (None, "") for r in rows):
        return "variant"
    if spec_for(name).factor:
        return spec_for(name).factor
    named = sorted({r["factor"] for r in rows if r.get("factor")})
    if len(named) > 1:
        raise ValueError(f"table {name!r}: rows name different factors {named}")
    if not named:
        warnings.warn(f"table {name!r}: no variant or factor known (declare table_spec.factor in "
                      "its ablations/conf/ablation/*.yaml); grouping by preset")
    return named[0] if named else "preset"


def label_of(row: dict, factor: str) -> str:
    """A row's line label: config.variant, else its table's older factor column, else its preset.

    Rows written before `variant` existed are labelled through their table's table_spec.factor
    or their own `factor` column, so they land on the same line as newer rows of the setting.
    """
    legacy = [spec_for(str(row.get("table"))).factor, row.get("factor"), factor]
    for key in ["variant"] + [k for k in legacy if k and k != "variant"] + ["preset"]:
        value = value_of(row, key)
        if value not in (None, ""):
            return value if isinstance(value, (str, int, float)) else str(value)
    return "–"


def short_commit(row: dict) -> str:
    return str(row.get("commit", "unknown"))[:7] + ("+dirty" if row.get("dirty") else "")


def newest_commit_only(rows: list[dict], factor: str) -> tuple[list[dict], int]:
    """Rows of the newest commit (by row date) per (table, label, seed), and how many were left
    out."""
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


def is_baseline(row: dict) -> bool:
    return row.get("kind") == BASELINE_KIND
