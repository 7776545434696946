"""The filter's outputs, written together at the end of a run so that they describe the same
rows: `kept.jsonl`, `dropped.jsonl`, `kept_dataset/`, `config.yaml`, `summary.json`,
`report.html`. Also the judge's loud failure: too many unparsable verdicts end the run with
exit code 3 and a line saying how many and where their raw text is."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import TYPE_CHECKING, Any

from distillery.config import save_resolved_config
from distillery.export import save_hf_dataset
from distillery.filter.conversations import turn_counts
from distillery.filter.decontam import certificate
from distillery.filter.report import render_report
from distillery.filter.rows import is_multi_turn
from distillery.filter.tag_rules import tag_counts
from distillery.jsonl import atomic_write_text, write_jsonl
from distillery.records import Record
from distillery.runstate import RunDir
from distillery.teacher.outcome import COUNTERS

# the judge's counters recorded per invocation (`Run._judge`) and summed in summary.json

if TYPE_CHECKING:
    from distillery.filter.run import Run

EXIT_JUDGE_FAILED = 3


def _dropped(run: Run) -> list[Record]:
    return [
        run.rows[i].model_copy(
            update={
                "dropped_by": run.drops[i],
                "meta": {**run.rows[i].meta, "filter_step": run.step_of[i]},
            }
        )
        for i in sorted(run.drops)
    ]


def _judge_summary(run: Run) -> dict[str, Any] | None:
    """The judge's figures, with the parse-failure rate against its bound and where the raw
    text of the failed verdicts is."""
    if run.judge_info is None:
        return None
    bound = run.config.judge.max_parse_failure_rate
    rate = run.judge_info["parse_failure_rate"]
    return {
        **run.judge_info,
        "max_parse_failure_rate": bound,
        "parse_failure_exceeded": rate > bound,
        "raw_verdicts": {
            "dropped": "dropped.jsonl: rows with dropped_by.rule judge_parse_error or "
            "judge_refusal, raw text in dropped_by.evidence.raw (judge_failed: the call "
            "itself failed, its error in dropped_by.reason)",
            "journals": "journal/judge_attempt*.jsonl",
        },
    }


def _samples(run: Run, dropped: list[Record], rules: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Up to five dropped rows per rule, for the report."""
    rng = random.Random(run.config.seed)
    samples: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        of_rule = [d for d in dropped if d.dropped_by and d.dropped_by.rule == rule]
        samples[rule] = [
            {
                "id": d.id,
                "instruction": d.instruction,
                "reason": d.dropped_by.reason if d.dropped_by else "",
                "evidence": json.dumps(
                    d.dropped_by.evidence if d.dropped_by else {}, ensure_ascii=False
                ),
            }
            for d in rng.sample(of_rule, min(5, len(of_rule)))
        ]
    return samples


def _decontam_summary(
    run: Run, funnel: list[dict[str, Any]], dropped: list[Record]
) -> dict[str, Any] | None:
    """The contamination certificate (method, thresholds, items checked and rows removed per
    eval set), when the decontam step ran."""
    config = run.config
    if "decontam" not in config.steps:
        return None
    rows_checked = next((f["in"] for f in funnel if f["step"] == "decontam"), None)
    return certificate(
        config.decontam,
        config.against,
        run.evals,
        [d.dropped_by for d in dropped if d.dropped_by],
        rows_checked,
        config.semantic.model,
        multi_turn=any(is_multi_turn(r) for r in run.rows),
    )


def write_outputs(run: Run, funnel: list[dict[str, Any]], wall_s: float, rundir: RunDir) -> int:
    """Write every output; returns the exit code (0, or 3 when the judge failed too often)."""
    rows, out, config = run.rows, run.out, run.config
    kept = [rows[i] for i in run.alive]
    dropped = _dropped(run)
    write_jsonl(out / "kept.jsonl", kept)
    write_jsonl(out / "dropped.jsonl", dropped)
    if kept:
        save_hf_dataset(kept, out / "kept_dataset")
    save_resolved_config(config, out)
    judge = _judge_summary(run)
    summary: dict[str, Any] = {
        "input": str(config.input),
        "steps": config.steps,
        "rows_in": len(rows),
        "rows_kept": len(kept),
        "rows_dropped": len(dropped),
        "demo": any(r.demo for r in rows),
        "funnel": funnel,
        "dropped_by_rule": dict(Counter(d.dropped_by.rule for d in dropped if d.dropped_by)),
        "near": getattr(run, "near_stats", None),
        "decontam": _decontam_summary(run, funnel, dropped),
        "judge": judge,
        "lengths": {
            "response_tokens_before": [len((r.response or "").split()) for r in rows],
            "response_tokens_after": [len((r.response or "").split()) for r in kept],
        },
        "categories_before": dict(Counter(r.category or "(none)" for r in rows)),
        "categories_after": dict(Counter(r.category or "(none)" for r in kept)),
        # {user turns: rows}; a single-turn row has 1
        "turns_per_conversation": {"before": turn_counts(rows), "after": turn_counts(kept)},
        # LLM tags (meta.tags: Magpie rows): {tag: {value: rows}}, empty when no row has tags
        "tags": {"before": tag_counts(rows), "after": tag_counts(kept)},
        "nearest_neighbour_similarity": [round(x, 4) for x in run.nearest],
        "resumed": rundir.resumed,
        "invocations": len(list(rundir.previous())) + 1,
        # the judge's requests, tokens and dollars over every invocation of this run
        "judge_usage": rundir.totals(*COUNTERS) if "judge" in config.steps else None,
        "wall_time_s": round(wall_s, 2),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    samples = _samples(run, dropped, sorted(summary["dropped_by_rule"]))
    report = render_report(
        summary, samples, rows=rows, kept=kept, config=config.model_dump(mode="json")
    )
    atomic_write_text(out / "report.html", report)
    print(
        f"kept {len(kept):,} of {len(rows):,} rows -> {out}/kept.jsonl; report: {out}/report.html"
    )
    if judge is not None and judge["parse_failure_exceeded"]:
        print(
            f"judge failed: {judge['parse_failures']} of {judge['judged']} verdicts could not be "
            f"parsed ({judge['parse_failure_rate']:.0%} > judge.max_parse_failure_rate "
            f"{judge['max_parse_failure_rate']:g}); raw text: {out}/dropped.jsonl "
            f"(dropped_by.evidence.raw) and {out}/journal/judge_attempt*.jsonl"
        )
        return EXIT_JUDGE_FAILED
    return 0
