"""The filter report: one static HTML file with inline SVG charts (no server, no JavaScript,
no network), built from the same numbers as `summary.json` and laid out by
`report_templates/filter_report.html.jinja`.

Besides summary.json it reads the survival per origin, evolution operation and round and a
sample of kept rows (counted and picked row by row by `filter.rowstats`, or made here from the
rows) and the resolved config (the thresholds in force). Every rate on the page is shown with
its n and 95% Wilson interval (`distillery.stats`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from distillery.filter.rowstats import KEPT_SHOWN, Survival
from distillery.records import Record
from distillery.reports import BarChart, bar_chart, histogram, length_bins, render
from distillery.stats import proportion

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
    """(caption, chart): response lengths, judge scores, categories, user turns per
    conversation (when any row has more than one), LLM tags (when rows have them), nearest
    neighbours."""
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
    turns = s.get("turns_per_conversation") or {}
    if any(int(n) > 1 for n in turns.get("before", {})):  # shown when there are conversations
        for key in ("before", "after"):
            counts = turns[key]
            chart = bar_chart(list(counts), list(counts.values()), color="#b07aa1", title="turns")
            charts.append((f"User turns per conversation {key} filtering", chart))
    tags = s.get("tags") or {}
    for tag in ("input_quality", "difficulty", "task_category"):  # rows with LLM tags (Magpie)
        for key in ("before", "after"):
            found = (tags.get(key) or {}).get(tag, {})
            if found:
                values = list(found)[:25]
                chart = bar_chart(values, [found[v] for v in values], color="#edc948", title=tag)
                charts.append((f"Tag {tag.replace('_', ' ')} {key} filtering", chart))
    nn = s.get("nearest_neighbour_similarity") or []
    if nn:
        labels, counts = histogram(nn, SIMILARITY_BINS, labels_fmt="{:.2f}")
        chart = bar_chart(labels, counts, color="#f28e2b", title="nearest neighbour")
        charts.append(("Nearest-neighbour similarity (cosine, before dedup)", chart))
    return charts


def _survival_table(seen: Counter[str], kept: Counter[str]) -> list[dict[str, Any]]:
    """Per group: rows in, rows kept and the kept share (an `Interval` dict), largest first."""
    return [
        {"name": name, "in": n, "kept": kept[name], "rate": proportion(kept[name], n).as_dict()}
        for name, n in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def survival_tables(counts: Survival) -> dict[str, list[dict[str, Any]]]:
    """How many rows of each kind came through the filter: by origin (every evolved row
    together), by evolution operation (`evol:OPERATION`) and by evolution round (only when
    some row was evolved)."""
    seen, kept = counts.seen, counts.kept
    evolved = bool(seen["operation"])
    return {
        "origin": _survival_table(seen["origin"], kept["origin"]),
        "operation": _survival_table(seen["operation"], kept["operation"]),
        "round": _survival_table(seen["round"], kept["round"]) if evolved else [],
    }


def survival(rows: Iterable[Record], kept: Iterable[Record]) -> dict[str, list[dict[str, Any]]]:
    """`survival_tables` of `rows`, a row counted as kept when its id is among `kept`'s."""
    ids = {r.id for r in kept}
    counts = Survival()
    for row in rows:
        counts.add(row, row.id in ids)
    return survival_tables(counts)


def kept_shown(picked: Iterable[Record]) -> list[dict[str, Any]]:
    """The kept rows the report shows, as its template reads them."""
    return [
        {
            "id": r.id,
            "origin": r.origin,
            "category": r.category or "(none)",
            "score": r.scores.get("judge"),
            "instruction": r.instruction,
            "response": r.response or "",
            "turns": len(r.messages),
        }
        for r in picked
    ]


def kept_samples(kept: Sequence[Record], seed: int, k: int = KEPT_SHOWN) -> list[dict[str, Any]]:
    """Up to `k` kept rows, drawn with the run's seed: what the filter let through."""
    return kept_shown(random.Random(seed).sample(list(kept), min(k, len(kept))))


def thresholds(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The settings of each step that ran, as (step, setting, value): numbers and switches,
    lists one item a line, the judge's model by its spec (its client settings are in
    config.yaml); decontam also lists the eval sets it checked against."""
    out = []
    for step in config.get("steps", []):
        settings = dict(config.get(step) or {})
        if step == "decontam":
            settings = {"against": config.get("against", []), **settings}
        for key, value in settings.items():
            if isinstance(value, Mapping):
                if "spec" not in value:
                    continue
                key, value = f"{key}.spec", value["spec"]
            if isinstance(value, list):
                value = "\n".join(map(str, value)) if value else "(none)"
            out.append({"step": step, "key": key, "value": "none" if value is None else value})
    return out


def _rates(s: dict[str, Any]) -> dict[str, Any]:
    """The page's rates with their n and interval: kept share, each step's drop share, each
    rule's share of the input, the judge's parse failures."""
    judge = s.get("judge") or {}
    return {
        "kept": proportion(s["rows_kept"], s["rows_in"]).as_dict(),
        "steps": [proportion(f["dropped"], f["in"]).as_dict() for f in s["funnel"]],
        "rules": {
            rule: proportion(n, s["rows_in"]).as_dict() for rule, n in s["dropped_by_rule"].items()
        },
        "parse_failures": proportion(judge["parse_failures"], judge["judged"]).as_dict()
        if judge
        else None,
    }


def render_report(
    summary: dict[str, Any],
    samples: dict[str, list[dict[str, Any]]],
    *,
    rows: Sequence[Record] = (),
    kept: Sequence[Record] = (),
    config: Mapping[str, Any] | None = None,
    counts: Survival | None = None,
    picked: Sequence[Record] | None = None,
) -> str:
    """The report page from `summary.json`'s numbers, a sample of dropped rows per rule
    (`{id, instruction, reason, evidence}` each), the survival `counts` and the `picked` kept
    rows (`rowstats`: what `filter.outputs` passes) - or else the input `rows` and the `kept`
    rows, from which both are made here - and the resolved `config` (as JSON: the
    thresholds)."""
    config = config or {}
    tables = survival(rows, kept) if counts is None else survival_tables(counts)
    seed = int(config.get("seed", 0))
    shown = kept_samples(kept, seed) if picked is None else kept_shown(picked)
    return render(
        "filter_report.html.jinja",
        s=summary,
        rates=_rates(summary),
        funnel_charts=_funnel_charts(summary),
        distributions=_distributions(summary),
        samples=[
            (rule, summary["dropped_by_rule"].get(rule, 0), of_rule)
            for rule, of_rule in samples.items()
        ],
        survival=tables,
        kept_samples=shown,
        thresholds=thresholds(config),
    )
