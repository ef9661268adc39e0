"""Honest timing of competing methods: warm-up, interleaved repeats, medians with intervals.

    times = interleaved_times({"ref": run_ref, "fast": run_fast}, repeats=5)
    summary = compare(times, reference="ref")          # seconds and speedups, median [lo, hi]
    by_threads = time_methods(methods, "ref", threads=(1, 2))   # the same at each thread count

Every round calls each method once, in the given order (A B A B ...), after `warmup` untimed
rounds, so drift and bursts of load on a shared machine hit every method alike. A speedup is
the median of per-round ratios (reference seconds / method seconds of the same round). Intervals
are distribution-free order-statistic intervals for the median: [x_(k), x_(n+1-k)] with the
largest k whose binomial coverage P(k <= B <= n-k), B ~ Bin(n, 1/2), reaches `confidence`; when
n is too small for that (n = 5 gives at most 93.75 %), the full range and its true coverage are
reported. The interval always contains the median. `prepare(name)` runs untimed before each call
(e.g. to install an adapter).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Mapping, Sequence

import torch

DEFAULT_CONFIDENCE = 0.95


def interleaved_times(methods: Mapping[str, Callable[[], object]], *, repeats: int = 5,
                      warmup: int = 1, prepare: Callable[[str], None] | None = None,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each method's call in each of `repeats` interleaved rounds (warm-up excluded)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    if not methods:
        raise ValueError("no methods to time")
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(warmup + repeats):
        for name, fn in methods.items():
            if prepare is not None:
                prepare(name)
            start = clock()
            fn()
            elapsed = clock() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def median_interval(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> dict:
    """{"median", "lo", "hi", "n", "coverage"}: the median and its order-statistic interval."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_interval needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    k = 1
    for cand in range((n + 1) // 2, 0, -1):  # largest k (1-based) reaching the confidence
        if _coverage(n, cand) >= confidence:
            k = cand
            break
    return {"median": statistics.median(xs), "lo": xs[k - 1], "hi": xs[n - k], "n": n,
            "coverage": _coverage(n, k)}


def _coverage(n: int, k: int) -> float:
    """P(x_(k) <= true median <= x_(n+1-k)) = 1 - 2 P(Bin(n, 1/2) <= k - 1)."""
    tail = sum(math.comb(n, i) for i in range(k)) / 2 ** n
    return max(0.0, 1.0 - 2.0 * tail)


def paired_ratios(numer: Sequence[float], denom: Sequence[float]) -> list[float]:
    """numer[i] / denom[i] per round (both from the same interleaved rounds)."""
    if len(numer) != len(denom):
        raise ValueError(f"{len(numer)} vs {len(denom)} rounds: ratios pair calls of one round")
    return [a / b for a, b in zip(numer, denom)]


def compare(times: Mapping[str, Sequence[float]], reference: str,
            confidence: float = DEFAULT_CONFIDENCE) -> dict[str, dict]:
    """name -> {"seconds": median_interval, "speedup": median_interval of per-round
    reference/method ratios, "speedup_rounds": those ratios}."""
    if reference not in times:
        raise ValueError(f"reference {reference!r} is not among the timed methods {list(times)}")
    out = {}
    for name, values in times.items():
        ratios = paired_ratios(times[reference], values)
        out[name] = {"seconds": median_interval(values, confidence),
                     "speedup": median_interval(ratios, confidence), "speedup_rounds": ratios}
    return out


def time_methods(methods: Mapping[str, Callable[[], object]], reference: str, *,
                 threads: Sequence[int] = (1, 2), repeats: int = 5, warmup: int = 1,
                 prepare: Callable[[str], None] | None = None,
                 confidence: float = DEFAULT_CONFIDENCE) -> dict[int, dict[str, dict]]:
    """compare(interleaved_times(...)) at each torch thread count; the count is restored after."""
    before = torch.get_num_threads()
    out = {}
    try:
        for n in threads:
            torch.set_num_threads(n)
            times = interleaved_times(methods, repeats=repeats, warmup=warmup, prepare=prepare)
            out[n] = compare(times, reference, confidence)
    finally:
        torch.set_num_threads(before)
    return out


def fmt(summary: Mapping[str, float], spec: str = ".2f", unit: str = "") -> str:
    """'median<unit> [lo, hi]' of a median_interval result."""
    return f"{summary['median']:{spec}}{unit} [{summary['lo']:{spec}}, {summary['hi']:{spec}}]"
