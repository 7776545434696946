"""Sample sizes and 95% intervals for every rate a report quotes (no SciPy needed).

A rate over 6 prompts or 9 pairs is not a number to quote bare; each report shows it as
`62.5% [30.6-86.3%] n=8`. One `Interval` type carries the estimate, n, the bounds and the
method, and `as_dict()` is how summaries store it (`{"value", "n", "low", "high", "method"}`).

- `proportion(k, n)`: Wilson score interval (Wilson 1927). Unlike the normal (Wald) interval
  it stays inside [0, 1] and keeps its coverage at 0/n, n/n and small n.
- `win_rate(wins, ties, losses)`: a tie counts as half a win (the score 1, 1/2, 0 averaged);
  the Wilson interval of that score. A tie has less variance than a coin flip, so with ties
  the interval is conservative (a little wide), never too narrow.
- `paired_proportions(a, b)`: two models' 0/1 scores on the same items (student - base):
  Agresti-Min's interval from the discordant items (paired, so item difficulty cancels).
- `mean(values)` and `paired_difference(a, b)`: a normal-approximation interval of a mean
  (sample standard deviation, z = 1.96), and of the mean per-item difference for scores that
  are not 0/1. Below about 30 items this is narrower than a t interval would be; reports show
  n beside it. When every item scored the same there is no interval (the normal one would
  have zero width, e.g. a judge that gave every row 8 reads "8.00 [8.00-8.00]").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


@dataclass(frozen=True)
class Interval:
    """An estimate with its sample size and 95% interval (None where n is 0)."""

    value: float | None
    n: int
    low: float | None
    high: float | None
    method: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "n": self.n,
            "low": self.low,
            "high": self.high,
            "method": self.method,
        }


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n` (n > 0)."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson: successes {successes} outside [0, {n}]")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes: float, n: int) -> Interval:
    """`successes / n` with its Wilson interval; an empty sample has no estimate."""
    if n == 0:
        return Interval(None, 0, None, None, "wilson")
    low, high = wilson(successes, n)
    return Interval(successes / n, n, low, high, "wilson")


def win_rate(wins: int, ties: int, losses: int) -> Interval:
    """(wins + ties / 2) / n over the judged pairs, with the Wilson interval of that score."""
    n = wins + ties + losses
    method = "wilson; a tie counts as half a win"
    if n == 0:
        return Interval(None, 0, None, None, method)
    score = wins + 0.5 * ties
    low, high = wilson(score, n)
    return Interval(score / n, n, low, high, method)


def mean(values: Sequence[float]) -> Interval:
    """The mean of per-item scores with a normal-approximation interval (sample sd)."""
    n = len(values)
    if n == 0:
        return Interval(None, 0, None, None, "normal")
    m = math.fsum(values) / n
    if n == 1:
        return Interval(m, 1, None, None, "normal")
    var = math.fsum((v - m) ** 2 for v in values) / (n - 1)
    if var == 0:  # every item scored the same: a zero-width interval would claim certainty
        return Interval(m, n, None, None, "normal; no spread in the sample, no interval")
    half = Z95 * math.sqrt(var / n)
    return Interval(m, n, m - half, m + half, "normal")


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a - b) over items scored by both, with the normal interval of the differences."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} scores against {len(b)}")
    diff = mean([x - y for x, y in zip(a, b, strict=True)])
    return Interval(diff.value, diff.n, diff.low, diff.high, "normal, paired by item")


def paired_proportions(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a) - mean(b) for 0/1 scores of the same items: the estimate (b10 - b01) / n and
    Agresti and Min's (2005) interval, the Wald interval after adding 1/2 to each cell of the
    2x2 table - never the zero-width interval the plain one gives when no item differs."""
    if len(a) != len(b):
        raise ValueError(f"paired_proportions: {len(a)} scores against {len(b)}")
    method = "agresti-min, paired by item"
    n = len(a)
    if n == 0:
        return Interval(None, 0, None, None, method)
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n2, b10, b01 = n + 2, only_a + 0.5, only_b + 0.5
    centre = (b10 - b01) / n2
    half = Z95 * math.sqrt((b10 + b01) - (b10 - b01) ** 2 / n2) / n2
    return Interval(
        (only_a - only_b) / n, n, max(-1.0, centre - half), min(1.0, centre + half), method
    )


def describe(interval: Interval | dict[str, Any] | None, fmt: str = ".1%") -> str:
    """`62.5% [30.6-86.3%] n=8` (`{{ x|rate }}` in report templates); `n/a (n=0)` when empty."""
    if interval is None:
        return "n/a"
    d = interval.as_dict() if isinstance(interval, Interval) else interval
    if d.get("value") is None:
        return f"n/a (n={d.get('n', 0)})"
    text = format(d["value"], fmt)
    if d.get("low") is not None and d.get("high") is not None:
        dash = " to " if d["low"] < 0 else "–"  # "-16.3% to +16.3%", not "-16.3%–+16.3%"
        text += f" [{format(d['low'], fmt)}{dash}{format(d['high'], fmt)}]"
    return f"{text} n={d['n']:,}"
