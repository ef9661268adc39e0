"""Rows -> tables -> files: `build` routes every row to its table (ablation, optuna, bench) and
adds the reference tables; `write_table` writes a table's .md/.tex (.csv for bench tables) and
figures; `sun_table` renders sun.md/.tex with bench/sun.py's own code."""

from __future__ import annotations

import re
from pathlib import Path

from bench.tables.ablation import summarize
from bench.tables.bench_tables import bench_columns, write_bench_csv
from bench.tables.optuna import summarize_optuna
from bench.tables.plots import plot, plot_curves, plot_frames
from bench.tables.render import to_latex, to_markdown
from bench.tables.rows import ABLATION_KINDS, BASELINE_KIND, Table, is_baseline, short_commit
from bench.tables.spec import spec_for
from bench.tables.vbench import VBENCH_TABLE, efficiency_table, read_reference, vbench_table

SUN_KIND = "sun"  # SpeedUpNet testbed rows (bench/sun.py): sun.md/.tex rendered by its own code


def build(rows: list[dict], only: list[str] | None = None, *, all_commits: bool = False,
          baselines: dict | None = None) -> dict[str, tuple[Table, list[dict]]]:
    """table name -> (summary, its rows) for every table in the results plus the reference
    tables. `baselines`: table -> the val_curve baseline (or paired) line, over its table_spec's."""
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
            own = family == "ablation" or not shared
            names[(name, family)] = name if own else f"{name}_{family}"
    tables = {}
    for (name, family), rs in sorted(by_table.items()):
        out = names[(name, family)]
        if family == "optuna" or spec_for(name).per_run:
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
        figures.append(("_extrapolation",
                        lambda p: plot_frames(t, rows, p, note, True, all_commits)))
    if spec_for(t.name).drift and "mse_per_frame" in has:
        figures.append(("_drift", lambda p: plot_frames(t, rows, p, note, False, all_commits)))
    if "val_curve" in has:
        figures.append(("_curves", lambda p: plot_curves(t, rows, p, note, all_commits)))
    for suffix, draw in figures:
        if draw(Path(f"{stem}{suffix}.png")):
            written.append(f"{suffix}.png")
    return written


def sun_table(rows: list[dict], command: str, source: str) -> tuple[str, str] | None:
    """sun.md/.tex from the kind="sun" rows of the newest `python bench/sun.py` invocation,
    rendered by bench/sun.py's own functions (same table as `make sun` writes); None without
    rows."""
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

