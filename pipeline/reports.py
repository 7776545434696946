"""HTML reports: static pages (inline SVG charts, no JavaScript, no network) rendered from the
Jinja templates in `report_templates/` (package data), with autoescaping on.

Stages build the numbers (`BarChart`s from `bar_chart`, `histogram`, `length_bins`) and call
`render(TEMPLATE, **context)`; the templates only lay them out. Shared by the filter report,
the eval report and comparison, and the demo's index page, so no stage imports another's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2


@dataclass(frozen=True)
class Bar:
    label: str
    value: str  # formatted
    y: int  # top of its row
    width: float  # length of the bar


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars with labels and values; drawn by `_charts.html.jinja`'s `bar` macro."""

    bars: list[Bar]
    title: str
    color: str
    width: int
    height: int
    label_width: int = 190
    row_height: int = 24


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    width: int = 520,
    color: str = "#4e79a7",
    value_fmt: str = "{:,.0f}",
    title: str = "",
) -> BarChart:
    """The geometry of a bar chart: bars scaled to the largest value. The label column
    widens for long labels (about 7 px per character at 12 px) so none is clipped."""
    row_h, pad = 24, 60
    label_w = max([190, *(7 * len(str(label)) + 12 for label in labels)])
    width = max(width, label_w + pad + 120)
    top = max(values) if values and max(values) > 0 else 1.0
    bars = [
        Bar(
            str(label),
            value_fmt.format(value),
            5 + i * row_h,
            (width - label_w - pad) * value / top,
        )
        for i, (label, value) in enumerate(zip(labels, values, strict=True))
    ]
    height = max(1, len(values)) * row_h + 10
    return BarChart(bars, title, color, width, height, label_w, row_h)


@dataclass(frozen=True)
class Series:
    """One line of a `LineChart`: its legend label, colour, and points in pixels."""

    label: str
    color: str
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class LineChart:
    """Lines over shared axes with ticks and a legend below; drawn by `_charts`' `line`."""

    series: list[Series]
    title: str
    width: int
    height: int
    box: tuple[int, int, int, int]  # plot area: left, top, right, bottom
    x_ticks: list[tuple[float, str]]  # (pixel, label)
    y_ticks: list[tuple[float, str]]
    x_label: str
    y_label: str


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k apart) covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(math.ceil((high - first) / step - 1e-9) + 1)]


PALETTE = ("#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#9c755f")


def line_chart(
    lines: Mapping[str, Sequence[tuple[float, float]]],
    *,
    width: int = 760,
    height: int = 320,
    x_label: str = "step",
    y_label: str = "",
    title: str = "",
) -> LineChart:
    """The geometry of a line chart of `label -> [(x, y), ...]` (empty lines are left out);
    the legend sits under the x axis, one entry per row, so no label is clipped."""
    kept = {k: list(v) for k, v in lines.items() if v}
    xs = [x for pts in kept.values() for x, _ in pts] or [0.0, 1.0]
    ys = [y for pts in kept.values() for _, y in pts] or [0.0, 1.0]
    x_ticks, y_ticks = _ticks(min(xs), max(xs)), _ticks(min(ys), max(ys))
    box = (70, 12, width - 20, height - 48)
    left, top, right, bottom = box

    def px(x: float) -> float:
        return left + (right - left) * (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])

    def py(y: float) -> float:
        return bottom - (bottom - top) * (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])

    series = [
        Series(label, PALETTE[i % len(PALETTE)], [(px(x), py(y)) for x, y in pts])
        for i, (label, pts) in enumerate(kept.items())
    ]
    return LineChart(
        series,
        title,
        width,
        height + 20 * len(series),
        box,
        [(px(t), f"{t:g}") for t in x_ticks],
        [(py(t), f"{t:.4g}") for t in y_ticks],
        x_label,
        y_label,
    )


def histogram(
    values: Sequence[float], bins: Sequence[float], *, labels_fmt: str = "{:g}"
) -> tuple[list[str], list[float]]:
    """Counts of `values` per bin [bins[i], bins[i+1]) (the last bin includes its upper edge)."""
    counts = [0.0] * (len(bins) - 1)
    for v in values:
        for i in range(len(bins) - 1):
            last = i == len(bins) - 2
            if bins[i] <= v < bins[i + 1] or (last and v == bins[-1]):
                counts[i] += 1
                break
    labels = [
        f"{labels_fmt.format(bins[i])}-{labels_fmt.format(bins[i + 1])}"
        for i in range(len(bins) - 1)
    ]
    return labels, counts


def length_bins(values: Sequence[int]) -> list[float]:
    """Roughly doubling bin edges for token counts, up to the largest value."""
    top = max(values, default=1)
    edges = [0.0, 10, 25, 50, 100, 200, 400, 800, 1600, 3200]
    edges = [e for e in edges if e < top] + [float(top)]
    return edges if len(edges) > 1 else [0.0, 1.0]


def _fmt(value: Any, spec: str) -> str:
    """`{{ x|fmt('.1%') }}`: Python's format mini-language in templates."""
    return format(value, spec)


def _rate(interval: Any, spec: str = ".1%") -> str:
    """`{{ x|rate }}`: a rate with its 95% interval and n (`distillery.stats.describe`)."""
    from distillery.stats import describe

    return describe(interval, spec)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("distillery", "report_templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["rate"] = _rate
    return env


def render(template: str, **context: Any) -> str:
    """Render `report_templates/TEMPLATE` with `context` (every value escaped)."""
    return environment().get_template(template).render(**context)
