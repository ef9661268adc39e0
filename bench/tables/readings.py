"""The claim of every ablation table, and its reading decided by a paired t-test across seeds.

CLAIMS is the one place the claims are defined. A reading compares the claim arm with the
reference arm on the seeds both have, per primary metric: the mean of the per-seed differences
(claim - reference), its 95 % t-interval and the two-sided paired t-test p-value. Verdict:
`supports` when the interval excludes 0 in the claimed direction, `contradicts` when it excludes 0
in the opposite direction, `inconclusive` otherwise (or with fewer than 2 seeds). Each arm is also
compared, the same way, with the `copy` baseline (the conditioning frame repeated) on the metrics
the baseline has: an arm that does not beat copy has not learned the task, and the reading is
then about models that have not learned it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from bench.tables.stats import Paired, paired_test


class Claim(NamedTuple):
    claim: str  # the arm (line label) the claim is about
    reference: str  # the arm it is compared with
    metrics: tuple[str, ...]  # primary metric(s), each read separately
    lower_is_better: bool  # the claimed direction: the claim arm's value is lower (or higher)
    text: str  # the claim in words


# table -> its claim. Metric names are row metrics or make_tables' derived metrics
# (val_loss_at_equal_flops, extrap_mse_mean, mse_last4, mse_drift_per_frame).
CLAIMS: dict[str, Claim] = {
    "attn": Claim("causal", "full", ("mse_mean", "dist_energy"), True,
                  "temporal causality beats full attention"),
    "curriculum": Claim("on", "off", ("val_loss_at_equal_flops", "dist_energy"), True,
                        "a short-to-long frame curriculum is better at equal training FLOPs"),
    "resolution": Claim("progressive", "fixed", ("val_loss_at_equal_flops", "dist_energy"), True,
                        "progressive resolution is better at equal training FLOPs"),
    "rope": Claim("rope3d", "learned", ("extrap_mse_mean", "extrap_dist_energy"), True,
                  "3D RoPE extrapolates to longer and larger videos than trained"),
    "temperature": Claim("progressive", "constant", ("mse_last4", "mse_drift_per_frame",
                                                     "dist_energy"), True,
                         "a progressive (decreasing) temperature limits drift in long rollouts"),
    "sampler": Claim("iter8_cfg1", "iter2_cfg1", ("mse_mean", "dist_energy"), True,
                     "more masked iterations per frame (8 vs 2, no CFG) generate better frames, "
                     "as in MAR"),
    "window": Claim("w2", "w0", ("mse_mean", "dist_energy"), True,
                    "not a paper claim: a temporal window W = 2 vs unlimited context "
                    "(contradicts = the window costs quality)"),
    "sun_head": Claim("sun4", "ddpm100_cfg", ("mse_mean", "dist_energy", "sample_time_s"), True,
                      "a 4-step SpeedUpNet head matches MAR's 100-step DDPM head with CFG, faster"),
}
BASELINE = "copy"  # how readings name the baseline


def _decimals(width: float) -> int:
    """Decimals showing 2 significant digits of `width` (as make_tables' mean ± std cells)."""
    if not width or not math.isfinite(width):
        return 4
    return min(8, max(0, 1 - math.floor(math.log10(float(f"{abs(width):.1e}")))))


def fmt_signed(x: float, digits: int) -> str:
    if abs(x) >= 1e5:
        return f"{x:+.3g}"
    if abs(x) < 0.5 * 10.0 ** -digits:  # no "-0.000"
        x = 0.0
    return f"{x:+.{digits}f}"


def fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def describe(r: Paired) -> str:
    """ "diff -0.0021 [-0.0035, -0.0007], p = 0.02" (n < 2: the difference only)."""
    if r.n < 2:
        return f"diff {fmt_signed(r.mean, _decimals(r.mean))}, no test"
    d = _decimals((r.hi - r.lo) / 2 or r.mean)
    return (f"diff {fmt_signed(r.mean, d)} [{fmt_signed(r.lo, d)}, {fmt_signed(r.hi, d)}], "
            f"{fmt_p(r.p)}")


def verdict(r: Paired, lower_is_better: bool) -> str:
    """supports / contradicts / inconclusive: where the interval of claim - reference lies."""
    if r.n < 2 or math.isnan(r.lo):
        return "inconclusive"
    better = r.hi < 0 if lower_is_better else r.lo > 0
    worse = r.lo > 0 if lower_is_better else r.hi < 0
    return "supports" if better else "contradicts" if worse else "inconclusive"


def paired(a: dict, b: dict) -> tuple[Paired, list]:
    """Paired test of the values of a against b (dicts seed -> value) on their common seeds."""
    seeds = sorted(set(a) & set(b), key=str)
    return paired_test([a[s] for s in seeds], [b[s] for s in seeds]), seeds


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def against_baseline(arm: str, values: dict, base: dict, lower_is_better: bool) -> tuple[str, bool]:
    """ "causal loses to copy (diff +0.0055 [...], p = 0.01, 3 seeds)" and whether it beats copy."""
    r, _ = paired(values, base)
    if r.n == 0:
        return f"{arm}: no seed shared with {BASELINE}", False
    v = verdict(r, lower_is_better)
    word = {"supports": "beats", "contradicts": "loses to", "inconclusive": "does not beat"}[v]
    return f"{arm} {word} {BASELINE} ({describe(r)}, {_seeds(r.n)})", v == "supports"


def readings(table: str, arms: dict[str, dict[str, dict]], baseline: dict[str, dict] | None,
             claims: dict[str, Claim] = CLAIMS) -> list[str]:
    """The reading lines of a table: arms = label -> metric -> seed -> value, baseline = metric ->
    seed -> value of the copy baseline (None or {} without baseline rows). [] without a claim."""
    claim = claims.get(table)
    if claim is None:
        return []
    direction = "lower" if claim.lower_is_better else "higher"
    lines = [f"Claim ({table}): {claim.text}; {claim.claim} vs {claim.reference}, {direction} is "
             f"better; paired t-test over seeds, 95 % interval of the mean difference "
             f"({claim.claim} - {claim.reference})."]
    missing = [a for a in (claim.claim, claim.reference) if a not in arms]
    if missing:
        return lines + [f"Reading ({', '.join(claim.metrics)}, {claim.claim} vs {claim.reference}"
                        f"): not computed — no ok rows of {' and '.join(missing)}."]
    losers = []
    for m in claim.metrics:
        a, b = arms[claim.claim].get(m, {}), arms[claim.reference].get(m, {})
        r, _ = paired(a, b)
        head = f"Reading ({m}, {claim.claim} vs {claim.reference}, paired over {_seeds(r.n)})"
        if r.n == 0:
            lines.append(f"{head}: not computed — no seed has {m} for both arms.")
            continue
        text = f"{head}: {verdict(r, claim.lower_is_better)} — {describe(r)}"
        base = (baseline or {}).get(m) or {}
        if base:
            parts = []
            for arm in (claim.claim, claim.reference):
                part, beats = against_baseline(arm, arms[arm].get(m, {}), base,
                                               claim.lower_is_better)
                parts.append(part)
                if not beats:
                    losers.append(f"{arm} ({m})")
            text += "; vs " + BASELINE + ": " + "; ".join(parts)
        lines.append(text + ".")
    if losers:
        lines.append(f"Caution: {', '.join(losers)} not better than the {BASELINE} baseline (the "
                     "conditioning frame repeated): the reading compares models that have not "
                     "learned the task.")
    return lines
