"""LLM-as-judge: pointwise rubric scores (1-10) with explicit parse statuses.

`parse_verdict` (`distillery.verdicts`) never invents a score: it returns status `ok` with the
score, `refusal` when the judge declined, or `parse_error` with the reason (a verdict stating
two different scores is one). Unparsable verdicts are re-asked up to
`max_parse_retries` times (a fresh request each time, not a cache hit); what is still
unparsable is reported, and the row is dropped with the raw verdict as evidence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from distillery.prompts import render
from distillery.records import LLMCall
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, JournalRow, run_job
from distillery.teacher.types import ChatRequest
from distillery.verdicts import Verdict, parse_verdict

__all__ = ["Judged", "Verdict", "judge_rows", "parse_verdict"]


@dataclass
class Judged:
    verdict: Verdict
    attempts: int
    trace: list[LLMCall]
    raw: str | None


async def judge_rows(
    teacher: Teacher,
    rows: list[tuple[str, str, str]],
    journal_dir,
    max_parse_retries: int,
    quiet: bool,
) -> dict[str, Judged]:
    """Score (id, user turn, response) rows; re-ask unparsable verdicts."""
    results: dict[str, Judged] = {}
    pending = list(rows)
    for attempt in range(max_parse_retries + 1):
        if not pending:
            break
        items = []
        for row_id, user, response in pending:
            rendered = render("judge_quality", instruction=user, response=response)
            request = ChatRequest(
                messages=[{"role": "user", "content": rendered.text}],
                purpose="judge:quality",
                template=rendered.template,
                cache_salt=f"attempt{attempt}" if attempt else "",
            )
            items.append(JobItem(row_id, request))
        done = await run_job(
            teacher, items, journal_dir / f"judge_attempt{attempt}.jsonl", quiet=quiet
        )
        retry = []
        for row_id, user, response in pending:
            row: JournalRow = done.rows[row_id]
            trace = [
                *(results[row_id].trace if row_id in results else []),
                *([row.trace] if row.trace else []),
            ]
            raw = (
                row.response if row.status == "ok" else (row.trace.response if row.trace else None)
            )
            verdict = (
                parse_verdict(raw or "")
                if row.status == "ok"
                else Verdict("parse_error", error=row.error or "failed")
            )
            results[row_id] = Judged(verdict, attempt + 1, trace, raw)
            if verdict.status != "ok":
                retry.append((row_id, user, response))
        pending = retry
    return results


def verdict_json(v: Verdict) -> str:
    return json.dumps({"status": v.status, "score": v.score, "error": v.error})
