"""Derived metrics of ablation rows: the val_curve summaries (same-compute quality, same-quality
compute against the baseline line), per-frame drift and extrapolation, and paired metrics against
one line of the same seed (speedup, relative change)."""

from __future__ import annotations

import statistics

from core.metrics.synthetic import KEYS as SYNTHETIC_KEYS
from bench.tables.rows import label_of, metric_of, number

LAST_FRAMES = 4  # mse_last4: mean MSE over the last generated frames (drift tables)
PAIRED_METRICS = ("mse_mean", "psnr_first")  # plus every syn_* metric present


def _interp(x: float, xs: list[float], ys: list[float]):
    """Linear interpolation of y at x on a polyline sorted by xs; None outside its range."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def curve_of(row: dict) -> tuple[list[float], list[float]]:
    """(flops, val_loss) of a row's `val_curve`, sorted by FLOPs, finite points only."""
    points = []
    for p in (row.get("metrics") or {}).get("val_curve") or []:
        if not isinstance(p, dict):
            continue
        f, v = number(p.get("flops")), number(p.get("val_loss"))
        if f is not None and v is not None:
            points.append((f, v))
    points.sort()
    return [p[0] for p in points], [p[1] for p in points]


def flops_to_reach(flops: list[float], losses: list[float], target: float):
    """The first FLOPs at which the curve reaches `target` (linear between points), else None."""
    for i, (f, v) in enumerate(zip(flops, losses)):
        if v <= target:
            if i == 0:
                return f
            f0, v0 = flops[i - 1], losses[i - 1]
            return f0 + (f - f0) * (v0 - target) / (v0 - v)
    return None


def curve_metrics(rows: list[dict], factor: str, baseline: str | None) -> tuple[dict, list[str]]:
    """{id(row): derived metrics} for val_curve rows, and the footnotes explaining them."""
    curves = {id(r): curve_of(r) for r in rows}
    curves = {k: c for k, c in curves.items() if c[0]}
    if not curves:
        return {}, []
    budget = min(c[0][-1] for c in curves.values())
    out = {k: {"final_flops": c[0][-1], "val_loss_at_equal_flops": _interp(budget, *c)}
           for k, c in curves.items()}
    notes = [f"val_loss_at_equal_flops: each run's val_curve at {budget:.4g} FLOPs, the largest "
             "budget every run reached (same-compute quality)."]
    base = [curves[id(r)] for r in rows if id(r) in curves and str(label_of(r, factor)) == baseline]
    if base:
        target = statistics.fmean(c[1][-1] for c in base)
        for k, c in curves.items():
            out[k]["flops_to_baseline_val_loss"] = flops_to_reach(*c, target)
        notes.append(f"flops_to_baseline_val_loss: training FLOPs until val_loss <= {target:.4g}, "
                     f"the final val_loss of the baseline {factor}={baseline} (same-quality "
                     "compute; – or n<runs: not reached).")
    else:
        notes.append(f"no baseline line ({factor}={baseline}) among the rows: same-quality compute "
                     "not computed (pass --baseline TABLE=VARIANT).")
    return out, notes


def per_frame_metrics(row: dict, drift: bool) -> dict:
    """Drift of mse_per_frame (slope per frame) and the extrapolation summaries of a row."""
    m = row.get("metrics") or {}
    out = {}
    mse = [v for v in (number(x) for x in m.get("mse_per_frame") or []) if v is not None]
    if drift and len(mse) >= 2:
        xs = range(len(mse))
        mx, my = statistics.fmean(xs), statistics.fmean(mse)
        out["mse_drift_per_frame"] = (sum((x - mx) * (y - my) for x, y in zip(xs, mse))
                                      / sum((x - mx) ** 2 for x in xs))
        out["mse_last_over_first"] = mse[-1] / mse[0] if mse[0] else None
        out[f"mse_last{LAST_FRAMES}"] = statistics.fmean(mse[-LAST_FRAMES:])
    extrap = [v for v in (number(x) for x in m.get("extrap_mse_per_frame") or []) if v is not None]
    if extrap:
        out["extrap_mse_mean"] = statistics.fmean(extrap)
        beyond = extrap[len(mse):] if mse else []
        if beyond:  # generated frames past the trained clip length
            out["extrap_mse_beyond_trained"] = statistics.fmean(beyond)
    return out


def paired_metrics(rows: list[dict], factor: str, baseline: str) -> tuple[dict, list[str]]:
    """{id(row): derived} against the baseline line's row of the same seed, and footnotes.

    sampling_speedup = baseline sample_time_s / this sample_time_s; <metric>_rel_pct = 100 x
    (this - baseline) / |baseline| for mse_mean, psnr_first and every syn_* metric.
    """
    base = {str(r.get("seed")): r for r in rows if str(label_of(r, factor)) == baseline}
    if not base:
        return {}, [f"no baseline line ({factor}={baseline}): speedups not computed."]
    out = {}
    for r in rows:
        b = base.get(str(r.get("seed")))
        if b is None:
            continue
        d = {}
        t, tb = metric_of(r, "sample_time_s"), metric_of(b, "sample_time_s")
        if t and tb:
            d["sampling_speedup"] = tb / t
        names = list(PAIRED_METRICS) + [k for k in SYNTHETIC_KEYS if metric_of(r, k) is not None]
        for m in names:
            v, vb = metric_of(r, m), metric_of(b, m)
            if v is not None and vb:
                d[f"{m}_rel_pct"] = 100.0 * (v - vb) / abs(vb)
        out[id(r)] = d
    return out, [f"sampling_speedup and *_rel_pct: against the {factor}={baseline} run of the "
                 "same seed (end-to-end sample_time_s ratio; percent change of the metric)."]
