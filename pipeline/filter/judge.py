"""LLM-as-judge: pointwise rubric scores (1-10) with explicit parse statuses.

`parse_verdict` never invents a score: it returns status `ok` with the score, `refusal` when
the judge declined, or `parse_error` with the reason. Unparsable verdicts are re-asked up to
`max_parse_retries` times (a fresh request each time, not a cache hit); what is still
unparsable is reported, and the row is dropped with the raw verdict as evidence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from distillery.generate.parse import ParseFailure, json_object
from distillery.prompts import render
from distillery.records import LLMCall
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, JournalRow, run_job
from distillery.teacher.types import ChatRequest

_FRACTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")
_SCORE_LINE = re.compile(r"\bscore\b\W{0,3}(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?", re.I)
_REFUSAL = re.compile(
    r"\b(?:i can(?:no|')t|i am unable to|i won't|i'm not able to)\b.{0,40}\b(?:evaluate|rate|score|judge|assess)",
    re.I,
)


@dataclass
class Verdict:
    status: str  # ok | parse_error | refusal
    score: float | None = None
    explanation: str = ""
    error: str = ""


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise ParseFailure("score is a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        fraction = _FRACTION.match(value)
        if fraction:
            return float(fraction.group(1)) * 10.0 / float(fraction.group(2))
        try:
            return float(value.strip())
        except ValueError:
            raise ParseFailure(f"score {value!r} is not a number") from None
    raise ParseFailure(f"score has type {type(value).__name__}")


def parse_verdict(text: str) -> Verdict:
    if not text.strip():
        return Verdict("parse_error", error="empty verdict")
    try:
        data = json_object(text)
    except ParseFailure:
        data = None
    if data is not None:
        if "score" not in data:
            return Verdict("parse_error", error="JSON without a 'score' field")
        try:
            score = _number(data["score"])
        except ParseFailure as exc:
            return Verdict("parse_error", error=str(exc))
        explanation = str(data.get("explanation", ""))
    else:
        if _REFUSAL.search(text):
            return Verdict("refusal", error="the judge declined to score")
        matches = _SCORE_LINE.findall(text)
        values = {float(m[0]) * (10.0 / float(m[1]) if m[1] else 1.0) for m in matches}
        if len(values) != 1:
            return Verdict("parse_error", error="no JSON and no single 'score: N' in the verdict")
        score, explanation = values.pop(), text.strip()[:500]
    if not 1.0 <= score <= 10.0:
        return Verdict("parse_error", error=f"score {score:g} outside 1-10")
    return Verdict("ok", score=score, explanation=explanation)


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
