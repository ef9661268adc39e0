"""The claim of every ablation table, and its reading decided by a paired t-test across seeds.

Each claim is declared once, in its ablation's YAML (table_spec.claim, read by spec.py). A
reading compares the claim arm with the reference arm on the seeds both have, per primary metric:
the mean of the per-seed differences (claim - reference), its 95 % t-interval and the two-sided
paired t-test p-value. Verdict: `supports` when the interval excludes 0 in the claimed direction,
`contradicts` when it excludes 0 in the opposite direction, `inconclusive` otherwise (or with
fewer than 2 seeds). Each arm is also compared, the same way, with the `copy` baseline (the
conditioning frame repeated) on the metrics the baseline has: an arm that does not beat copy has
not learned the task, and the reading is then about models that have not learned it.
"""

from __future__ import annotations

import math
import statistics

from bench.tables import spec
from bench.tables.spec import Claim, Target
from bench.tables.stats import Paired, paired_test


def declared_claims() -> dict[str, Claim]:
    """table -> its claim, as the ablation YAMLs declare them (table_spec.claim; spec.py)."""
    return {name: s.claim for name, s in spec.load().items() if s.claim is not None}


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
             claims: dict[str, Claim] | None = None) -> list[str]:
    """The reading lines of a table: arms = label -> metric -> seed -> value, baseline = metric ->
    seed -> value of the copy baseline (None or {} without baseline rows); claims = table -> claim
    (default: the declared ones). [] without a claim."""
    claim = (declared_claims() if claims is None else claims).get(table)
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


def _interval(values: list[float]) -> Paired:
    """Mean of `values` with its 95 % t-interval (a one-sample test against 0)."""
    return paired_test(values, [0.0] * len(values))


def target_line(target: Target, arms: dict[str, dict[str, dict]]) -> str:
    """ "Target (sunbb_dpm4, sampling_speedup >= 8): met — mean 10.1 [9.2, 11.0], 3 seeds."

    met / not met / inconclusive from the 95 % t-interval over seeds: at_least and
    ratio_at_least are met when the interval lies above the bound and not met when it lies
    below; within_noise is met when the interval of the paired difference lies inside +- bound
    standard deviations of the reference's values over seeds, and not met when it lies outside.
    """
    t = target
    rule = {"at_least": f"{t.metric} >= {t.bound:g}",
            "ratio_at_least": f"{t.metric} / {t.reference}'s >= {t.bound:g}",
            "within_noise": f"{t.metric} within {t.bound:g} sd of {t.reference}'s over seeds"}
    head = f"Target ({t.arm}: {t.text}; {rule[t.rule]})"
    own = arms.get(t.arm, {}).get(t.metric, {})
    ref = arms.get(t.reference, {}).get(t.metric, {}) if t.reference else {}
    seeds = sorted(set(own) & set(ref), key=str) if t.reference else sorted(own, key=str)
    if not seeds:
        return f"{head}: not computed — no seed has {t.metric} for {t.arm}" + (
            f" and {t.reference}." if t.reference else ".")
    if t.rule == "within_noise":
        r = paired_test([own[s] for s in seeds], [ref[s] for s in seeds])
        margin = t.bound * statistics.stdev(ref[s] for s in seeds) if len(seeds) > 1 else math.nan
        inside, outside = (r.lo >= -margin and r.hi <= margin), (r.lo > margin or r.hi < -margin)
        detail = f"{describe(r)}, margin +-{margin:.3g}"
    else:
        values = [own[s] / ref[s] if t.reference else own[s] for s in seeds]
        r = _interval(values)
        inside, outside = r.lo >= t.bound, r.hi < t.bound
        d = _decimals((r.hi - r.lo) / 2 or r.mean)
        detail = (f"mean {r.mean:.{d}f} [{r.lo:.{d}f}, {r.hi:.{d}f}]" if r.n > 1
                  else f"{r.mean:.3g}, no test")
    word = ("inconclusive" if r.n < 2 or math.isnan(r.lo) else
            "met" if inside else "not met" if outside else "inconclusive")
    return f"{head}: {word} — {detail}, {_seeds(r.n)}."
