"""HTML reports from the Jinja templates in distillery/report_templates (autoescaped)."""

from __future__ import annotations

import html
import re

from distillery.filter.report import render_report
from distillery.reports import bar_chart, environment, histogram, render


def summary(**extra: object) -> dict:
    base = {
        "input": "in.jsonl",
        "rows_in": 3,
        "rows_kept": 1,
        "rows_dropped": 2,
        "steps": ["heuristics"],
        "wall_time_s": 0.1,
        "funnel": [{"step": "input", "in": 3, "dropped": 0, "remaining": 3, "seconds": 0}],
        "dropped_by_rule": {"refusal": 2},
        "lengths": {"response_tokens_before": [1, 2, 3], "response_tokens_after": [2]},
        "categories_after": {},
    }
    return {**base, **extra}


def test_templates_ship_with_the_package() -> None:
    names = set(environment().list_templates())
    assert {
        "filter_report.html.jinja",
        "eval_report.html.jinja",
        "eval_compare.html.jinja",
        "demo_index.html.jinja",
    } <= names


def test_row_text_is_escaped_and_evidence_cut_before_escaping() -> None:
    evidence = {"nearest": "a<b " * 300}
    row = {
        "id": "r1",
        "instruction": "<script>alert(1)</script>",
        "reason": "x",
        "evidence": evidence,
    }
    page = render_report(summary(input="<in>.jsonl"), {"refusal": [row]})
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<code>&lt;in&gt;.jsonl</code>" in page
    *_, cell = re.findall(r"<td><pre>(.*?)</pre></td>", page, flags=re.S)
    # the first 600 characters of the evidence, escaped whole (no entity cut in half)
    assert html.unescape(cell) == str(evidence)[:600]


def test_bar_chart_scales_to_the_largest_value() -> None:
    chart = bar_chart(["a", "b"], [5, 10], width=520)
    assert [b.width for b in chart.bars] == [135.0, 270.0]  # (520 - 190 - 60) * share
    svg = render("_charts.html.jinja", chart=chart)  # macros only: renders nothing
    assert svg.strip() == ""
    assert histogram([0.1, 0.5, 1.0], [0, 0.5, 1.0]) == (["0-0.5", "0.5-1"], [1.0, 2.0])


def test_filter_report_shows_judge_failure_categories_before_and_resume() -> None:
    judge = {
        "model": "openai:gpt-4o-mini",
        "generator_models": [],
        "same_family": False,
        "parse_failures": 3,
        "judged": 10,
        "parse_failure_rate": 0.3,
        "reasked": 4,
        "scores": [7.0],
        "max_parse_failure_rate": 0.1,
        "parse_failure_exceeded": True,
        "raw_verdicts": {"journals": "journal/judge_attempt*.jsonl"},
    }
    page = render_report(
        summary(
            judge=judge,
            categories_before={"coding_python": 2, "(none)": 1},
            categories_after={"coding_python": 1},
            resumed=True,
            invocations=2,
        ),
        {},
    )
    assert "Judge failed:" in page and "bound 10%" in page
    assert "journal/judge_attempt*.jsonl" in page and "exited with code 3" in page
    assert "Category mix before filtering" in page and "(none)" in page
    assert "Resumed" in page and "2 invocations" in page
    quiet = render_report(summary(judge={**judge, "parse_failure_exceeded": False}), {})
    assert "Judge failed:" not in quiet and "Resumed" not in quiet
