"""LLM-as-judge, shared by the stages that judge: pointwise rubric scores (the filter's
`judge` step) and pairwise verdicts in both orders (eval's win rate, the demo).

Pointwise (`judge_rows`; call `judge_quality` for an (instruction, response) pair,
`judge_conversation` for a conversation with more than one assistant turn, judged whole with
its own prompt): `parse_verdict` (`distillery.verdicts`) never invents a score: it returns status `ok` with the score, `refusal` when the judge declined, or
`parse_error` with the reason (a verdict stating two different scores is one). Unparsable
verdicts are re-asked up to `max_parse_retries` times (a fresh request each time, not a
cache hit); what is still unparsable is returned as such, with the raw verdict.

Pairwise (`judge_pairs`, call `judge_pairwise`): every pair is judged twice, once with the
student as A and once as B, and each verdict is mapped to the student's view. A verdict that
cannot be parsed (`parse_winner`) is `None` for that order, never a default.
Neutral: imports no stage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from distillery import calls
from distillery.records import LLMCall
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, JobResult, run_job
from distillery.teacher.types import ChatRequest
from distillery.verdicts import ParseFailure, Verdict

__all__ = ["JudgeRow", "Judged", "PairResult", "Verdict", "judge_pairs", "judge_rows"]


@dataclass(frozen=True)
class JudgeRow:
    """One row to score: an (instruction, response) pair, or, when `turns` holds more than
    one (user, assistant) turn, the whole conversation (after its `system_prompt`, if any)."""

    id: str
    instruction: str = ""
    response: str = ""
    turns: tuple[tuple[str, str], ...] = ()
    system_prompt: str = ""

    @property
    def call(self) -> calls.Call[Verdict]:
        return calls.JUDGE_CONVERSATION if len(self.turns) > 1 else calls.JUDGE_QUALITY

    def request(self, cache_salt: str) -> ChatRequest:
        if self.call is calls.JUDGE_QUALITY:
            return calls.JUDGE_QUALITY.request(
                instruction=self.instruction, response=self.response, cache_salt=cache_salt
            )
        turns = [{"user": user, "assistant": answer} for user, answer in self.turns]
        return calls.JUDGE_CONVERSATION.request(
            system_prompt=self.system_prompt, turns=turns, cache_salt=cache_salt
        )


@dataclass
class Judged:
    """A row's pointwise verdict, how many times it was asked, its calls and the raw text."""

    verdict: Verdict
    attempts: int
    trace: list[LLMCall]
    raw: str | None


async def judge_rows(
    teacher: Teacher,
    rows: Sequence[JudgeRow | tuple[str, str, str]],
    journal_dir: Path,
    max_parse_retries: int,
    quiet: bool,
    on_answer: Callable[[], None] | None = None,
    job: Callable[..., Awaitable[JobResult]] = run_job,
) -> dict[str, Judged]:
    """Score rows (`JudgeRow`s, or (id, user turn, response) pairs); re-ask unparsable
    verdicts. A call that failed (the engine already retried it: e.g. a prompt over the
    judge's context) is a `failed` verdict, not re-asked. Journals:
    `journal_dir/judge_attempt{N}.jsonl`. `job` answers the requests (`run_job`, or
    `run_job_on_ray` bound to a Ray config: the same journal and answers)."""
    results: dict[str, Judged] = {}
    pending = [r if isinstance(r, JudgeRow) else JudgeRow(*r) for r in rows]
    for attempt in range(max_parse_retries + 1):
        if not pending:
            break
        salt = f"attempt{attempt}" if attempt else ""
        items = [JobItem(row.id, row.request(salt)) for row in pending]
        journal = journal_dir / f"judge_attempt{attempt}.jsonl"
        done = await job(teacher, items, journal, quiet=quiet, on_answer=on_answer)
        retry = []
        for row in pending:
            result = done.rows[row.id]
            before = results[row.id].trace if row.id in results else []
            verdict = (
                row.call.parsed(result)  # parse_verdict: a status, never raises
                if result.ok
                else Verdict("failed", error=result.error or "failed")
            )
            results[row.id] = Judged(verdict, attempt + 1, [*before, result.trace], result.text)
            if verdict.status not in ("ok", "failed"):
                retry.append(row)
        pending = retry
    return results


@dataclass
class PairResult:
    id: str
    first: str | None  # with the student as A: "student" | "baseline" | "tie" | None (failed)
    second: str | None  # with the student as B
    student_len: int
    baseline_len: int

    @property
    def outcome(self) -> str | None:
        if self.first is None or self.second is None:
            return None
        return self.first if self.first == self.second else "tie"

    @property
    def flipped(self) -> bool:
        return self.first is not None and self.second is not None and self.first != self.second


def _student_view(winner: str, student_is_a: bool) -> str:
    if winner == "tie":
        return "tie"
    return "student" if (winner == "A") == student_is_a else "baseline"


async def judge_pairs(
    judge: Teacher,
    rows: list[tuple[str, str, str, str]],
    journal: Path,
    quiet: bool = True,
    job: Callable[..., Awaitable[JobResult]] = run_job,
) -> list[PairResult]:
    """rows: (id, user turn, student response, baseline response); both orders judged
    (`job` as in `judge_rows`)."""
    items = []
    for row_id, user, student, baseline in rows:
        for order, (a, b) in (("ab", (student, baseline)), ("ba", (baseline, student))):
            request = calls.JUDGE_PAIRWISE.request(instruction=user, response_a=a, response_b=b)
            items.append(JobItem(f"{row_id}:{order}", request))
    done = await job(judge, items, journal, quiet=quiet)
    results = []
    for row_id, _, student, baseline in rows:
        views: list[str | None] = []
        for order in ("ab", "ba"):
            try:
                winner = calls.JUDGE_PAIRWISE.parsed(done.rows[f"{row_id}:{order}"])
                views.append(_student_view(winner, order == "ab"))
            except ParseFailure:
                views.append(None)
        results.append(
            PairResult(row_id, views[0], views[1], len(student.split()), len(baseline.split()))
        )
    return results
