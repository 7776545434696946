"""distillery.stats: the intervals reports quote, against published and hand-computed values."""

from __future__ import annotations

import math

import pytest
from distillery import stats


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (8, 10, 0.4902, 0.9433),  # by hand: centre 0.71674, half-width 0.22658
    ],
)
def test_wilson_matches_published_bounds(k: int, n: int, low: float, high: float) -> None:
    got = stats.wilson(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_at_the_edges_is_closed_form() -> None:
    z2 = stats.Z95**2
    assert stats.wilson(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert stats.wilson(10, 10) == pytest.approx((10 / (10 + z2), 1.0))


def test_proportion_carries_n_and_method_and_empty_has_no_estimate() -> None:
    r = stats.proportion(3, 6)
    assert (r.value, r.n, r.method) == (0.5, 6, "wilson")
    assert r.low is not None and r.high is not None and r.low < 0.5 < r.high
    assert stats.proportion(0, 0).as_dict() == {
        "value": None, "n": 0, "low": None, "high": None, "method": "wilson"
    }  # fmt: skip
    with pytest.raises(ValueError):
        stats.wilson(7, 6)


def test_win_rate_counts_a_tie_as_half_a_win() -> None:
    r = stats.win_rate(wins=3, ties=2, losses=1)
    assert r.n == 6 and r.value == pytest.approx(4 / 6)
    assert (r.low, r.high) == pytest.approx(stats.wilson(4, 6))
    assert "tie" in r.method
    # all ties: one half, an interval around it (not a degenerate point)
    t = stats.win_rate(0, 9, 0)
    assert t.value == 0.5 and t.low is not None and t.low < 0.5


def test_paired_difference_by_hand() -> None:
    # differences 1, 0, 0, 1: mean 0.5, sd sqrt(1/3), se sqrt(1/12)
    r = stats.paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
    half = stats.Z95 * math.sqrt(1 / 12)
    assert r.value == 0.5 and r.n == 4
    assert (r.low, r.high) == pytest.approx((0.5 - half, 0.5 + half))
    assert (r.low, r.high) == pytest.approx((-0.0658, 1.0658), abs=5e-5)
    with pytest.raises(ValueError):
        stats.paired_difference([1], [1, 0])


def test_describe_shows_the_interval_and_n() -> None:
    assert stats.describe(stats.proportion(8, 10)) == "80.0% [49.0%–94.3%] n=10"
    assert stats.describe(stats.proportion(0, 0).as_dict()) == "n/a (n=0)"
    assert stats.describe(stats.mean([0.25])) == "25.0% n=1"
    diff = stats.paired_proportions([0] * 10, [0] * 10)
    assert stats.describe(diff, "+.1%") == "+0.0% [-16.3% to +16.3%] n=10"


def test_paired_proportions_agresti_min_by_hand() -> None:
    # 20 items: 5 right only for a, 2 right only for b. Cells + 1/2: 5.5 and 2.5 of 22;
    # centre 3/22 = 0.13636, se = sqrt(8 - 9/22) / 22 = 0.125235, half-width 0.24546
    a = [1] * 5 + [0] * 2 + [1] * 6 + [0] * 7
    b = [0] * 5 + [1] * 2 + [1] * 6 + [0] * 7
    r = stats.paired_proportions(a, b)
    assert r.value == pytest.approx(3 / 20) and r.n == 20
    assert (r.low, r.high) == pytest.approx((-0.10910, 0.38182), abs=5e-5)
    # no item differs: an interval around 0, not a point (the plain paired one would be
    # [0, 0], so paired_difference gives none)
    same = stats.paired_proportions([0] * 10, [0] * 10)
    assert same.value == 0 and same.low == pytest.approx(-same.high) and same.high > 0.15
    assert stats.paired_difference([0] * 10, [0] * 10).high is None


def test_a_mean_without_spread_has_no_interval() -> None:
    """A judge that gave every row 8 is not "8.00 [8.00-8.00]": no interval, n shown."""
    same = stats.mean([8.0, 8.0, 8.0])
    assert (same.value, same.n, same.low, same.high) == (8.0, 3, None, None)
    assert stats.describe(same, ".2f") == "8.00 n=3"
    diff = stats.paired_difference([0.5, 0.75], [0.25, 0.5])  # every item up by 0.25
    assert diff.value == 0.25 and diff.low is None and "paired" in diff.method
