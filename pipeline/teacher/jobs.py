"""Running many requests as one resumable job.

`run_job` sends every pending item through the teacher with a pool of workers, appends each
finished item to a journal as soon as it is done, and shows progress. Every entry carries
the fingerprint of the work that produced it (`Teacher.fingerprint`: the request's cache key
and its template hash). After `kill -9` the same call skips every item the journal holds as
`ok` *for the same fingerprint*, retries the ones recorded `failed`, and re-sends at most the
requests that were in flight (those usually hit the cache too). An item whose request changed
(other messages, teacher, sampling parameters, template) is done again, never served from an
entry made for another request; unchanged requests still cost nothing through the cache.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from distillery.errors import BudgetStop
from distillery.jsonl import Journal
from distillery.teacher.engine import Teacher
from distillery.teacher.pricing import request_tokens
from distillery.teacher.types import CallResult, ChatRequest


@dataclass
class JobItem:
    id: str
    request: ChatRequest


@dataclass
class JobResult:
    rows: dict[str, CallResult] = field(default_factory=dict)  # last entry per id
    skipped: int = 0  # already done, for the same request, before this run
    changed: int = 0  # done before for another request (messages, teacher, params): redone

    @property
    def failed(self) -> list[CallResult]:
        return [r for r in self.rows.values() if r.status != "ok"]


@dataclass
class Projection:
    pending: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    max_cost_usd: float

    def line(self, spec: str) -> str:
        return (
            f"{self.pending} requests to send to {spec}: ~{self.input_tokens:,} input and "
            f"~{self.output_tokens:,} output tokens, projected ${self.cost_usd:.2f} "
            f"(at most ${self.max_cost_usd:.2f} if every answer reaches max_tokens)"
        )


def project(teacher: Teacher, items: Sequence[JobItem]) -> Projection:
    """Cost before the job starts, from prompt sizes and the expected answer length."""
    out_each = teacher.config.expected_output_tokens or max(1, teacher.config.max_tokens // 4)
    n_in = sum(request_tokens(it.request) for it in items)
    return Projection(
        pending=len(items),
        input_tokens=n_in,
        output_tokens=out_each * len(items),
        cost_usd=sum(teacher.estimate_cost(it.request, out_each) for it in items),
        max_cost_usd=sum(teacher.estimate_cost(it.request) for it in items),
    )


class _Lines:
    """A file for tqdm that turns its redraws (`\r` + meter) into whole lines, for logs."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


LOG_FORMAT = "{n_fmt}/{total_fmt} done, {rate_fmt}, elapsed {elapsed}, ETA {remaining}{postfix}"


def progress_bar(
    total: int, unit: str, desc: str = "", every_s: float = 10.0, postfix: str = ""
) -> Any:
    """A tqdm bar on stderr: live on a terminal (redrawn at most every 0.2 s); otherwise - CI
    logs, a redirected stderr - a plain line at most every `every_s` seconds and one at the
    end."""
    from tqdm import tqdm  # ~30 ms: not on the --quiet path

    live = sys.stderr.isatty()
    return tqdm(
        total=total,
        unit=unit,
        desc=desc or None,
        file=sys.stderr if live else _Lines(sys.stderr),
        mininterval=0.2 if live else every_s,
        miniters=None if live else 1,  # a log line is due by time only
        bar_format=None if live else ("{desc}: " if desc else "") + LOG_FORMAT,
        dynamic_ncols=live,
        ascii=not live,
        postfix=postfix or None,
    )


class Progress:
    """Progress of a job through tqdm: done/total, rate, elapsed and ETA, plus the teacher's
    tokens, $, cache hits, retries and failures as the postfix. On a terminal a live bar
    (redrawn at most every 0.2 s); otherwise - CI logs, a redirected stderr - a plain line at
    most every `every_s` seconds and one at the end; nothing when `quiet`."""

    def __init__(
        self, total: int, teacher: Teacher, quiet: bool = False, every_s: float = 10.0
    ) -> None:
        self.teacher = teacher
        self.bar: Any = None
        if quiet:
            return
        self.bar = progress_bar(total, "req", every_s=every_s, postfix=self.postfix())

    def postfix(self) -> str:
        s = self.teacher.stats
        return (
            f"tokens {s.input_tokens:,} in / {s.output_tokens:,} out, ${s.spent_usd:.4f}, "
            f"cache hits {s.cache_hits}, retries {s.retries}, failed {s.failed}"
        )

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix(), refresh=False)
            self.bar.close()


def read_journal(path: Path) -> dict[str, CallResult]:
    """The last entry per id, whatever request produced it."""
    rows: dict[str, CallResult] = {}
    for obj in Journal(path).read():
        row = CallResult.model_validate(obj)
        rows[row.id] = row  # the last entry wins: a later success replaces a failure
    return rows


def matching_entries(path: Path, fingerprints: dict[str, str]) -> tuple[dict[str, CallResult], int]:
    """The last journal entry per id among those made for the same request
    (`fingerprints`: id -> fingerprint), and how many ids have only entries made for
    another request (`ok` ones: work that changed and is done again)."""
    rows: dict[str, CallResult] = {}
    stale: set[str] = set()
    for obj in Journal(path).read():
        row = CallResult.model_validate(obj)
        wanted = fingerprints.get(row.id)
        if wanted is not None and row.fingerprint == wanted:
            rows[row.id] = row  # the last entry wins: a later success replaces a failure
        elif wanted is not None and row.status == "ok":
            stale.add(row.id)
    return rows, len(stale - rows.keys())


def start_job(
    teacher: Teacher,
    items: Sequence[JobItem],
    journal_path: Path,
    on_projection: Callable[[Projection], None] | None = None,
) -> tuple[dict[str, str], JobResult, list[JobItem]]:
    """What a job still has to do: each item's fingerprint (id -> fingerprint), the result
    so far (the journal's entries for the same requests, `skipped` and `changed` counted)
    and the items not yet `ok`, whose projection goes to `on_projection`."""
    fingerprints = {it.id: teacher.fingerprint(it.request) for it in items}
    rows, changed = matching_entries(journal_path, fingerprints)
    result = JobResult(rows=rows, changed=changed)
    pending = [it for it in items if it.id not in rows or rows[it.id].status != "ok"]
    result.skipped = len(items) - len(pending)
    if on_projection is not None:
        on_projection(project(teacher, pending))
    return fingerprints, result, pending


async def run_job(
    teacher: Teacher,
    items: Sequence[JobItem],
    journal_path: Path,
    *,
    quiet: bool = False,
    fsync: bool = False,
    on_projection: Callable[[Projection], None] | None = None,
    role: str = "",
    on_answer: Callable[[], None] | None = None,
) -> JobResult:
    """Complete every item not already `ok` in the journal for the same request (its
    fingerprint). Item ids must be unique. `result.rows` holds the items' entries only.
    `role` names the caller's role for the teacher's per-role counters (`stats_for`).
    `on_answer` is called after each answer is in the journal (to save the counters so far).

    Raises `BudgetStop` once the teacher's `max_cost_usd` is reached, after the requests in
    flight have finished and the journal holds them."""
    fingerprints, result, pending = start_job(teacher, items, journal_path, on_projection)
    progress = Progress(len(pending), teacher, quiet=quiet)
    queue: asyncio.Queue[JobItem] = asyncio.Queue()
    for item in pending:
        queue.put_nowait(item)
    stop = asyncio.Event()
    budget_stop: list[BudgetStop] = []

    with Journal(journal_path, fsync=fsync) as journal:

        async def worker() -> None:
            while not stop.is_set():
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    answer = await teacher.complete(item.request, role=role)
                except BudgetStop as exc:
                    budget_stop.append(exc)
                    stop.set()
                    return
                row = answer.model_copy(
                    update={"id": item.id, "fingerprint": fingerprints[item.id]}
                )
                journal.append(row)
                result.rows[item.id] = row
                progress.tick()
                if on_answer is not None:
                    on_answer()

        workers = [
            asyncio.create_task(worker())
            for _ in range(min(len(pending), teacher.config.concurrency))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            progress.close()
    if budget_stop:  # raised only now: every finished request is in the journal
        budget_stop[0].partial = result
        raise budget_stop[0]
    return result
