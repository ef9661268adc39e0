"""bench/timing.py: interleaving order, untimed warm-up and prepare, medians and intervals (fake
clock, never wall time)."""

import statistics

import pytest
import torch

from bench import timing


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_methods(clock, costs, calls):
    """Methods that log their call and advance the fake clock by a per-call cost sequence."""
    def make(name):
        it = iter(costs[name])

        def fn():
            calls.append(name)
            clock.now += next(it)
        return fn
    return {name: make(name) for name in costs}


def test_rounds_interleave_in_order_after_untimed_warmup():
    clock, calls = FakeClock(), []
    costs = {"A": [100.0, 2, 3, 4], "B": [50.0, 1, 1, 2]}  # first call is the warm-up
    prepared = []

    def prepare(name):
        prepared.append(name)
        clock.now += 1000.0  # untimed setup must not count
    times = timing.interleaved_times(fake_methods(clock, costs, calls), repeats=3, warmup=1,
                                     prepare=prepare, clock=clock)
    assert calls == ["A", "B"] * 4 and prepared == calls
    assert times == {"A": [2, 3, 4], "B": [1, 1, 2]}


def test_compare_pairs_rounds_and_reports_speedup_intervals():
    times = {"ref": [10.0, 20.0, 10.0, 10.0, 12.0], "fast": [1.0, 2.0, 1.0, 2.0, 1.0]}
    out = timing.compare(times, "ref")
    assert out["fast"]["speedup_rounds"] == [10.0, 10.0, 10.0, 5.0, 12.0]
    sp = out["fast"]["speedup"]
    assert sp["median"] == 10.0 and (sp["lo"], sp["hi"]) == (5.0, 12.0)
    assert sp["coverage"] == pytest.approx(1 - 2 / 32)  # n = 5: the full range, 93.75 %
    assert out["ref"]["speedup"]["median"] == 1.0
    assert out["fast"]["seconds"]["median"] == 1.0
    with pytest.raises(ValueError, match="reference"):
        timing.compare(times, "other")
    with pytest.raises(ValueError, match="rounds"):
        timing.paired_ratios([1.0, 2.0], [1.0])


@pytest.mark.parametrize("n", [1, 2, 5, 6, 9, 20, 51])
def test_interval_contains_the_median_and_narrows_with_n(n):
    g = torch.Generator().manual_seed(n)
    values = torch.rand(n, generator=g).tolist()
    s = timing.median_interval(values)
    assert s["lo"] <= s["median"] <= s["hi"] and s["n"] == n
    assert s["median"] == statistics.median(values)
    assert s["lo"] in values and s["hi"] in values
    if n >= 9:  # enough rounds for a 95 % order-statistic interval strictly inside the range
        assert s["coverage"] >= 0.95
        assert (s["lo"], s["hi"]) != (min(values), max(values))
    else:
        assert (s["lo"], s["hi"]) == (min(values), max(values))


def test_coverage_matches_the_binomial_and_inputs_are_checked():
    s = timing.median_interval(list(range(9)))  # k = 2: 1 - 2 * (1 + 9) / 512
    assert (s["lo"], s["hi"]) == (1, 7) and s["coverage"] == pytest.approx(1 - 20 / 512)
    for bad in ({"repeats": 0}, {"warmup": -1}):
        with pytest.raises(ValueError, match="repeats"):
            timing.interleaved_times({"A": lambda: None}, **bad)
    with pytest.raises(ValueError, match="at least one"):
        timing.median_interval([])


def test_time_methods_restores_the_thread_count():
    before = torch.get_num_threads()
    out = timing.time_methods({"A": lambda: None, "B": lambda: None}, "A", threads=(1,),
                              repeats=2, warmup=0)
    assert set(out) == {1} and set(out[1]) == {"A", "B"}
    assert torch.get_num_threads() == before
    assert timing.fmt({"median": 1.0, "lo": 0.5, "hi": 2.0}, ".1f", "x") == "1.0x [0.5, 2.0]"
