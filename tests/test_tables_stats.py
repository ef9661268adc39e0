"""bench/tables/stats.py: Student-t values and the paired t-test against known values."""

import math

import pytest

from bench.tables import stats


@pytest.mark.parametrize("df, expected", [(1, 12.706204736174698), (2, 4.302652729749464),
                                          (4, 2.7764451051977987), (9, 2.2621571627982053),
                                          (29, 2.045229642132703)])
def test_t_quantile_matches_tables(df, expected):
    assert stats.t_ppf(0.975, df) == pytest.approx(expected, rel=1e-10)
    assert stats.t_ppf(0.025, df) == pytest.approx(-expected, rel=1e-10)
    assert stats.t_cdf(expected, df) == pytest.approx(0.975, abs=1e-12)


def test_t_tail_known_values():
    # two-sided P(|T| >= 2) (scipy.stats.t.sf(2, df) * 2)
    assert stats.t_sf2(2.0, 5) == pytest.approx(0.10193947882985835, rel=1e-10)
    assert stats.t_sf2(2.0, 1) == pytest.approx(0.2951672353008665, rel=1e-10)  # 1 - 2 atan(2)/pi
    assert stats.t_sf2(0.0, 3) == 1.0
    assert stats.betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, rel=1e-12)  # 1 - 0.6^4 - 4*0.4*0.6^3


def test_paired_test_known_case():
    a, b = [0.031, 0.035, 0.029, 0.040], [0.033, 0.036, 0.032, 0.041]
    r = stats.paired_test(a, b)  # scipy.stats.ttest_rel(a, b): t = -3.6556, df = 3
    assert r.n == 4 and r.mean == pytest.approx(-0.00175)
    assert r.p == pytest.approx(0.03535284700251753, rel=1e-9)
    assert (r.lo, r.hi) == pytest.approx((-0.0032734801808288133, -0.00022651981917118477),
                                         rel=1e-9)


def test_paired_test_degenerate_cases():
    assert stats.paired_test([], []).n == 0
    one = stats.paired_test([1.0], [0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.p) and math.isnan(one.lo)
    same = stats.paired_test([1.0, 2.0], [0.5, 1.5])  # identical differences: no spread
    assert (same.lo, same.hi, same.p) == (0.5, 0.5, 0.0)
    zero = stats.paired_test([1.0, 2.0], [1.0, 2.0])
    assert zero.p == 1.0 and zero.mean == 0.0
    with pytest.raises(ValueError):
        stats.paired_test([1.0], [1.0, 2.0])


def test_against_scipy_when_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 7, 30, 200):
        for t in (0.1, 1.0, 2.5, 8.0):
            assert stats.t_sf2(t, df) == pytest.approx(2 * scipy_stats.t.sf(t, df), rel=1e-9)
        assert stats.t_ppf(0.9, df) == pytest.approx(scipy_stats.t.ppf(0.9, df), rel=1e-9)
