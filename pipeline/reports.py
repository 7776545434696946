"""HTML reports: static pages (inline SVG charts, no JavaScript, no network) rendered from the
Jinja templates in `report_templates/` (package data), with autoescaping on.

Stages build the numbers (`BarChart`s from `bar_chart`, `histogram`, `length_bins`) and call
`render(TEMPLATE, **context)`; the templates only lay them out. Shared by the filter report,
the eval report and comparison, and the demo's index page, so no stage imports another's.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """The geometry of a bar chart: bars scaled to the largest value."""
    row_h, label_w, pad = 24, 190, 60
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
    return env


def render(template: str, **context: Any) -> str:
    """Render `report_templates/TEMPLATE` with `context` (every value escaped)."""
    return environment().get_template(template).render(**context)
