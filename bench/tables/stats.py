"""Student-t distribution and the paired t-test, standard library only (scipy is not a dependency).

The two-sided tail of Student's t with df degrees of freedom is the regularized incomplete beta
function: P(|T| > t) = I_x(df/2, 1/2) with x = df / (df + t^2). I_x is evaluated with the
continued fraction of Numerical Recipes (`betacf`, modified Lentz), quantiles by bisection on the
tail, so results are deterministic and accurate to ~1e-12 (tests/test_tables_stats.py checks
known values).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

_EPS = 1e-15
_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x={x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail P(|T| >= |t|) of Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t)."""
    tail = t_sf2(t, df) / 2.0
    return 1.0 - tail if t >= 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (0 < q < 1), by bisection on the tail."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_ppf: q={q} outside (0, 1)")
    if q == 0.5:
        return 0.0
    target = 2.0 * min(q, 1.0 - q)  # two-sided tail at |t|
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) > target:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_sf2(mid, df) > target else (lo, mid)
    t = (lo + hi) / 2.0
    return t if q > 0.5 else -t


@dataclass(frozen=True)
class Paired:
    """A paired comparison: differences a - b over matched seeds."""

    n: int
    mean: float
    lo: float  # confidence interval of the mean difference (nan when n < 2)
    hi: float
    p: float  # two-sided p-value of H0: mean difference = 0 (nan when n < 2)
    level: float = 0.95


def paired_test(a: list[float], b: list[float], level: float = 0.95) -> Paired:
    """Paired t-test of a against b (same order = same seed): mean of a - b, its t-interval, p.

    With n < 2 there is no test (interval and p are nan). With identical differences (zero
    spread) the interval collapses to the mean and p is 0 (1 when the difference is 0).
    """
    if len(a) != len(b):
        raise ValueError(f"paired_test: {len(a)} vs {len(b)} values")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, level)
    mean = statistics.fmean(diffs)
    if n < 2:
        return Paired(1, mean, math.nan, math.nan, math.nan, level)
    se = statistics.stdev(diffs) / math.sqrt(n)
    if se == 0.0 or se < 1e-12 * max(abs(x) for x in diffs):  # identical differences
        return Paired(n, mean, mean, mean, 0.0 if mean else 1.0, level)
    half = t_ppf(0.5 + level / 2.0, n - 1) * se
    return Paired(n, mean, mean - half, mean + half, t_sf2(mean / se, n - 1), level)
