"""Seaborn figures of a table: metric per line with seed dots (or the paired metrics of a table
with a paired line, or throughput for bench tables), per-frame drift / extrapolation curves and
val_loss vs training FLOPs; the copy baseline as a dashed reference line. PNG metadata carries no
software version or time, so reruns are byte-identical."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from bench.tables.derived import curve_of, paired_metrics
from bench.tables.rows import (BASELINE_LABEL, METRIC_ORDER, SAMPLE_METRICS, Table, is_baseline,
                               label_of, latest_per_run, metric_of, newest_commit_only, number)
from bench.tables.spec import spec_for

DPI = 120
PAIRED_PLOT = ("sampling_speedup", "mse_mean_rel_pct", "psnr_first_rel_pct",
               "syn_i2v_background_rel_pct", "syn_imaging_quality_rel_pct",
               "syn_dynamic_degree_rel_pct")  # the panels of a paired table's figure
THROUGHPUT = re.compile(r"(per_s|speedup)")  # bench metrics shown in the throughput figure


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.hashsalt": "videomar", "figure.max_open_warning": 0})
    return plt


def _save(fig, path: Path, note: str, tight: bool = True) -> None:
    """PNG with fixed metadata (no software version, no time): reruns are byte-identical."""
    plain = note.replace("±", "+/-").replace("–", "-").encode("ascii", "replace").decode()
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None, "Description": plain})
    fig.clf()
    import matplotlib.pyplot as plt
    plt.close(fig)


def _ok_rows(t: Table, rows: list[dict], all_commits: bool) -> list[dict]:
    """The model rows a table averaged (never its baseline rows: those are t.baseline_rows)."""
    ok = [r for r in latest_per_run(rows) if r.get("status") == "ok" and not is_baseline(r)]
    return ok if all_commits else newest_commit_only(ok, t.factor)[0]


def _add_to_legend(ax, handles: list, labels: list) -> None:
    """Append handles to the axis legend (seaborn's, if any), keeping its entries."""
    legend = ax.get_legend()
    old_handles = list(legend.legend_handles) if legend else []
    old_labels = [x.get_text() for x in legend.get_texts()] if legend else []
    ax.legend(old_handles + handles, old_labels + labels, fontsize=7)


def _baseline_hline(ax, values: list[float]) -> None:
    """The copy baseline as a dashed, labelled horizontal reference line (mean over seeds)."""
    if values:
        line = ax.axhline(statistics.fmean(values), color="black", linestyle="--", linewidth=1.2)
        _add_to_legend(ax, [line], [BASELINE_LABEL])


def plot(t: Table, rows: list[dict], path: Path, note: str, all_commits: bool = False) -> bool:
    """Mean ± sd per line with one gray dot per seed; a panel per headline metric."""
    import pandas as pd
    import seaborn as sns

    bench = all(r.get("kind") == "bench" for r in rows)
    shown = ([m for m in t.metrics if THROUGHPUT.search(m)][:6] if bench else
             [m for m in t.metrics if m in METRIC_ORDER] or t.metrics[:4])
    ok = _ok_rows(t, rows, all_commits)
    paired: dict = {}
    against = spec_for(t.name).paired
    if against:  # speedup and relative change against the table's paired line
        paired, _ = paired_metrics(ok + t.baseline_rows, t.factor, against)
        shown = [m for m in PAIRED_PLOT if any(m in d for r in ok for d in [paired.get(id(r), {})])]

    def value(r, m):
        return paired.get(id(r), {}).get(m) if paired else metric_of(r, m)

    data = pd.DataFrame([{"level": str(label_of(r, t.factor)), "metric": m,
                          "value": value(r, m)} for r in ok for m in shown]).dropna()
    shown = [m for m in shown if m in set(data["metric"])] if not data.empty else []
    if not shown:
        return False
    plt = _pyplot()
    order = [label for label, _, _ in t.model_lines()]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), squeeze=False)
    for ax, m in zip(axes[0], shown):
        d = data[data.metric == m]
        if not d.empty:
            sns.pointplot(d, x="level", y="value", order=order, errorbar="sd", capsize=0.2,
                          linestyle="none", err_kws={"linewidth": 1.2}, ax=ax)
            sns.stripplot(d, x="level", y="value", order=order, color="gray", size=3, ax=ax,
                          jitter=False)
        ax.set(title=m, xlabel=t.factor, ylabel="")
        ax.tick_params(axis="x", labelrotation=30)
        if SAMPLE_METRICS.match(m.removesuffix("_rel_pct")):  # not for times, FLOPs, speedups
            _baseline_hline(ax, [v for v in (value(r, m) for r in t.baseline_rows)
                                 if v is not None])
    fig.suptitle(f"{t.name}: mean ± sd over seeds, commit {', '.join(t.commits)}", fontsize=9)
    _save(fig, path, note)
    return True


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True)


def _frame_data(t: Table, ok: list[dict], keys: dict[str, str]):
    import pandas as pd

    return pd.DataFrame([{"line": str(label_of(r, t.factor)), "seed": str(r.get("seed")),
                          "shape": shape, "frame": i + 1, "mse": v}
                         for r in ok for key, shape in keys.items()
                         for i, v in enumerate((r.get("metrics") or {}).get(key) or [])
                         if number(v) is not None])


def plot_frames(t: Table, rows: list[dict], path: Path, note: str, extrapolation: bool,
                all_commits: bool = False) -> bool:
    """Per-frame MSE vs generated frame index per line (drift), or trained vs extrapolated shape."""
    import seaborn as sns

    keys = {"mse_per_frame": "trained shape"}
    if extrapolation:
        keys["extrap_mse_per_frame"] = "extrapolated shape"
    data = _frame_data(t, _ok_rows(t, rows, all_commits), keys)
    if data.empty or (extrapolation and "extrapolated shape" not in set(data["shape"])):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data, x="frame", y="mse", hue="line", style="shape" if extrapolation else None,
                 errorbar="sd", marker="o", ax=ax,
                 hue_order=[label for label, _, _ in t.model_lines()])
    copy = _frame_data(t, t.baseline_rows, keys)
    handles, labels = [], []
    for shape in ("trained shape", "extrapolated shape"):  # the baseline's per-frame curve
        d = copy[copy["shape"] == shape] if not copy.empty else copy
        if not d.empty:
            means = d.groupby("frame")["mse"].mean()
            handles += ax.plot(means.index, means.values, color="black", linewidth=1.2,
                               linestyle="--" if shape == "trained shape" else "-.")
            labels.append(BASELINE_LABEL + (f", {shape}" if extrapolation else ""))
    if handles:
        _add_to_legend(ax, handles, labels)
    if extrapolation:
        trained = data[data["shape"] == "trained shape"]["frame"].max()
        ax.axvline(trained + 0.5, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"{t.name}: per-frame MSE, trained vs extrapolated shape", fontsize=9)
    else:
        ax.set_title(f"{t.name}: per-frame drift (mean ± sd over seeds)", fontsize=9)
    ax.set(xlabel="generated frame", ylabel="MSE vs truth")
    ax.xaxis.set_major_locator(_integer_ticks())
    _save(fig, path, note)
    return True


def plot_curves(t: Table, rows: list[dict], path: Path, note: str,
                all_commits: bool = False) -> bool:
    """val_loss against training FLOPs, one thin line per seed, coloured by line."""
    import pandas as pd
    import seaborn as sns

    ok = _ok_rows(t, rows, all_commits)
    data = pd.DataFrame([{"line": str(label_of(r, t.factor)), "seed": str(r.get("seed")),
                          "flops": f, "val_loss": v}
                         for r in ok for f, v in zip(*curve_of(r))])
    if data.empty:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data, x="flops", y="val_loss", hue="line", units="seed", estimator=None,
                 marker="o", markersize=3, ax=ax,
                 hue_order=[label for label, _, _ in t.model_lines()])
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels overlap on a 1-decade axis
    ax.set_xlabel("training FLOPs (log scale)")
    ax.set_title(f"{t.name}: held-out loss vs training FLOPs (one line per seed)", fontsize=9)
    _save(fig, path, note)
    return True
