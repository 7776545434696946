"""The filter report: one static HTML file with inline SVG charts (no server, no JavaScript,
no network), built from the same numbers as `summary.json` and laid out by
`report_templates/filter_report.html.jinja`."""

from __future__ import annotations

from typing import Any

from distillery.reports import BarChart, bar_chart, histogram, length_bins, render

JUDGE_SCORE_BINS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10.0001]
SIMILARITY_BINS = [0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0001]


def _funnel_charts(s: dict[str, Any]) -> dict[str, BarChart]:
    funnel = s["funnel"]
    reasons = sorted(s["dropped_by_rule"].items(), key=lambda kv: -kv[1])
    return {
        "remaining": bar_chart(
            [f["step"] for f in funnel], [f["remaining"] for f in funnel], title="funnel"
        ),
        "rules": bar_chart(
            [k for k, _ in reasons], [v for _, v in reasons], color="#e15759", title="rules"
        ),
    }


def _distributions(s: dict[str, Any]) -> list[tuple[str, BarChart]]:
    """(caption, chart): response lengths, judge scores, categories, nearest neighbours."""
    bins = length_bins(s["lengths"]["response_tokens_before"])
    charts = []
    for key, caption in (
        ("response_tokens_before", "Response length before (tokens)"),
        ("response_tokens_after", "Response length after (tokens)"),
    ):
        charts.append((caption, bar_chart(*histogram(s["lengths"][key], bins), title=key)))
    if s.get("judge") and s["judge"]["scores"]:
        labels, counts = histogram(s["judge"]["scores"], JUDGE_SCORE_BINS, labels_fmt="{:.0f}")
        chart = bar_chart(labels, counts, color="#59a14f", title="judge scores")
        charts.append(("Judge scores (1-10)", chart))
    for key, caption in (
        ("categories_before", "Category mix before filtering"),
        ("categories_after", "Category mix after filtering"),
    ):
        cats = sorted((s.get(key) or {}).items(), key=lambda kv: -kv[1])[:25]
        if cats:
            chart = bar_chart(
                [k for k, _ in cats], [v for _, v in cats], color="#76b7b2", title=key
            )
            charts.append((caption, chart))
    nn = s.get("nearest_neighbour_similarity") or []
    if nn:
        labels, counts = histogram(nn, SIMILARITY_BINS, labels_fmt="{:.2f}")
        chart = bar_chart(labels, counts, color="#f28e2b", title="nearest neighbour")
        charts.append(("Nearest-neighbour similarity (cosine, before dedup)", chart))
    return charts


def render_report(summary: dict[str, Any], samples: dict[str, list[dict[str, Any]]]) -> str:
    """The report page from `summary.json`'s numbers and a sample of dropped rows per rule
    (`{id, instruction, reason, evidence}` each)."""
    return render(
        "filter_report.html.jinja",
        s=summary,
        funnel_charts=_funnel_charts(summary),
        distributions=_distributions(summary),
        samples=[
            (rule, summary["dropped_by_rule"].get(rule, 0), rows) for rule, rows in samples.items()
        ],
    )
