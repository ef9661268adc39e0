"""Regenerate paper_tables/<table>.{md,tex,png} from the results table. Never edit those by hand.

    python bench/make_tables.py [RESULTS] [--out DIR] [--table NAME]... [--no-plots]

Pure functions turn rows into tables (lm-evaluation-harness `make_table`); main() only reads,
writes and prints. A table aggregates the train/eval rows whose `table` field names it: one line
per value of the ablation's factor column (FACTORS, else the rows' `factor` field), one column per
numeric metric, cells "mean ± sample std" over seeds. Failed runs are footnoted, never averaged.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/make_tables.py` works without an installed package
from core.results import read_rows  # noqa: E402

DEFAULT_RESULTS = "paper_tables/runs.jsonl"
FACTORS = {"attn": "attn"}  # table -> column whose value labels a table line; add ablations here
METRIC_ORDER = ("val_loss", "mse_mean", "psnr_first", "wall_time_s")  # then the rest, sorted
TOP_LEVEL_METRICS = ("wall_time_s",)  # metrics stored beside `metrics`, not inside it
KINDS = ("train", "eval")
LATEX_ESCAPES = {c: "\\" + c for c in "&%$#_{}"}


@dataclass
class Table:
    name: str
    factor: str
    metrics: list[str]
    lines: list[tuple[str, int, dict[str, str]]]  # (factor value, n ok runs, metric -> cell)
    failed: list[dict] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)  # short shas, "+dirty" marked
    num_ok: int = 0


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


def metric_of(row: dict, name: str):
    value = row.get(name) if name in TOP_LEVEL_METRICS else (row.get("metrics") or {}).get(name)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if is_number and math.isfinite(value) else None


def metric_names(rows: list[dict]) -> list[str]:
    """Scalar metrics present in any row: METRIC_ORDER first, then alphabetical."""
    names = {k for r in rows for k, v in (r.get("metrics") or {}).items()
             if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    names |= {k for k in TOP_LEVEL_METRICS if any(metric_of(r, k) is not None for r in rows)}
    return [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))


def factor_of(name: str, rows: list[dict]) -> str:
    if name in FACTORS:
        return FACTORS[name]
    named = sorted({r["factor"] for r in rows if r.get("factor")})
    if len(named) > 1:
        raise ValueError(f"table {name!r}: rows name different factors {named}")
    if not named:
        warnings.warn(f"table {name!r}: no factor known (add it to FACTORS); grouping by preset")
    return named[0] if named else "preset"


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


def summarize(name: str, rows: list[dict], only: list[str] | None = None) -> Table:
    """Aggregate the rows of one table (already filtered to it) over seeds; `only` picks metrics."""
    rows = latest_per_run(rows)
    ok = [r for r in rows if r.get("status") == "ok"]
    factor = factor_of(name, rows)
    metrics = [m for m in metric_names(ok) if only is None or m in only]
    groups: dict = {}
    for r in ok:
        label = value_of(r, factor)
        label = label if isinstance(label, (str, int, float, type(None))) else str(label)
        groups.setdefault(label, []).append(r)
    lines = []
    numeric = all(isinstance(k, (int, float)) and not isinstance(k, bool) for k in groups)
    for label in sorted(groups, key=None if numeric else str):  # numbers sort as numbers
        runs, cells = groups[label], {}
        for m in metrics:
            values = [v for v in (metric_of(r, m) for r in runs) if v is not None]
            cells[m] = mean_std(values) + (f" (n={len(values)})" if len(values) < len(runs) else "")
        lines.append((str(label), len(runs), cells))
    commits = sorted({str(r.get("commit", "unknown"))[:7] + ("+dirty" if r.get("dirty") else "")
                      for r in ok})
    failed = sorted((r for r in rows if r.get("status") != "ok"),
                    key=lambda r: str(r.get("run_id")))
    return Table(name, factor, metrics, lines, failed, commits, len(ok))


def header(t: Table, command: str, source: str) -> str:
    commits = ", ".join(t.commits) or "none"
    return (f"Generated by `{command}` from {source}; commit {commits}; {t.num_ok} ok rows, "
            f"{len(t.failed)} failed; mean ± sample std over seeds. Do not edit.")


def footnotes(t: Table) -> list[str]:
    notes = []
    if len(t.commits) > 1:
        notes.append(f"WARNING: rows mix {len(t.commits)} commits ({', '.join(t.commits)}); "
                     f"values may not be comparable.")
    for r in t.failed:
        error = (str(r.get("error") or "no error recorded").strip().splitlines() or [""])[-1][:120]
        notes.append(f"failed, not averaged: run {r.get('run_id')} {t.factor}="
                     f"{value_of(r, t.factor)} seed={r.get('seed')}: {error}")
    return notes


def to_markdown(t: Table, command: str, source: str) -> str:
    out = [f"_{header(t, command, source)}_", "",
           "| " + " | ".join([t.factor, "n", *t.metrics]) + " |",
           "|" + "---|" + "---:|" * (len(t.metrics) + 1)]
    out += ["| " + " | ".join([label, str(n), *(c[m] for m in t.metrics)]) + " |"
            for label, n, c in t.lines]
    notes = footnotes(t)
    return "\n".join(out + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


def tex(s: str) -> str:
    return "".join(LATEX_ESCAPES.get(c, c) for c in s).replace("±", "$\\pm$").replace("–", "--")


def to_latex(t: Table, command: str, source: str) -> str:
    out = [f"% {header(t, command, source)}",
           "\\begin{tabular}{l" + "r" * (len(t.metrics) + 1) + "}", "\\toprule",
           " & ".join(tex(h) for h in [t.factor, "n", *t.metrics]) + " \\\\", "\\midrule"]
    out += [" & ".join(tex(x) for x in [label, str(n), *(c[m] for m in t.metrics)]) + " \\\\"
            for label, n, c in t.lines]
    out += ["\\bottomrule", "\\end{tabular}"] + [f"% {tex(n)}" for n in footnotes(t)]
    return "\n".join(out) + "\n"


def plot(t: Table, rows: list[dict], path: Path) -> None:
    """Mean ± sd per factor value with one gray dot per seed; a panel per headline metric."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    shown = [m for m in t.metrics if m in METRIC_ORDER] or t.metrics[:4]
    ok = [r for r in latest_per_run(rows) if r.get("status") == "ok"]
    data = pd.DataFrame([{"level": str(value_of(r, t.factor)), "metric": m,
                          "value": metric_of(r, m)} for r in ok for m in shown]).dropna()
    order = [label for label, _, _ in t.lines]
    panels = max(1, len(shown))
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.2), squeeze=False)
    for ax, m in zip(axes[0], shown):
        d = data[data.metric == m]
        if not d.empty:
            sns.pointplot(d, x="level", y="value", order=order, errorbar="sd", capsize=0.2,
                          linestyle="none", err_kws={"linewidth": 1.2}, ax=ax)
            sns.stripplot(d, x="level", y="value", order=order, color="gray", size=3, ax=ax)
        ax.set(title=m, xlabel=t.factor, ylabel="")
    fig.suptitle(f"{t.name}: mean ± sd over seeds, commit {', '.join(t.commits)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build(rows: list[dict], only: list[str] | None = None) -> dict[str, tuple[Table, list[dict]]]:
    """table name -> (summary, its rows), from all rows of the results table."""
    by_table: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("kind") in KINDS and r.get("table"):
            by_table.setdefault(str(r["table"]), []).append(r)
    return {name: (summarize(name, rs, only), rs) for name, rs in sorted(by_table.items())}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default=DEFAULT_RESULTS, help="JSONL results table")
    p.add_argument("--out", help="output directory (default: the results file's directory)")
    p.add_argument("--table", action="append", help="only these tables (repeatable)")
    p.add_argument("--metrics", help="comma-separated metric columns (default: every numeric one)")
    p.add_argument("--no-plots", action="store_true", help="skip the .png figures")
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.results == DEFAULT_RESULTS and not results.exists():
        results = ROOT / DEFAULT_RESULTS  # the default is relative to the repo root
    out = Path(args.out) if args.out else results.parent
    command = " ".join(["python bench/make_tables.py", *argv])
    tables = build(read_rows(results), args.metrics.split(",") if args.metrics else None)
    if args.table:
        tables = {k: v for k, v in tables.items() if k in args.table}
    if not tables:
        print(f"no train/eval rows in {results}; nothing written")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, (t, rows) in tables.items():
        stem = str(out / re.sub(r"[^A-Za-z0-9_.-]", "_", name))
        Path(stem + ".md").write_text(to_markdown(t, command, args.results))
        Path(stem + ".tex").write_text(to_latex(t, command, args.results))
        written = [".md", ".tex"]
        if not args.no_plots and t.lines:
            plot(t, rows, Path(stem + ".png"))
            written.append(".png")
        if len(t.commits) > 1:
            warnings.warn(f"table {name}: rows mix commits {t.commits}")
        print(f"wrote {stem}{{{','.join(written)}}}: {t.num_ok} ok rows, {len(t.failed)} failed")
        print(to_markdown(t, command, args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
