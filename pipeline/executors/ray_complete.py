"""Teacher calls on Ray: `run_job` with the requests answered by a pool of actors.

    result = await run_job_on_ray(teacher, items, journal_path, ray_config=config.ray, ...)

The driver keeps what makes a job exactly-once: it reads the journal (`jobs.start_job`:
items already `ok` for the same request are skipped), hands the pending items out in chunks
of `ray.chunk_size`, and appends each answer to the one journal when its chunk comes back.
Each `TeacherWorker` actor runs the existing engine (`Teacher.complete`: cache, retries,
cost accounting) on its chunk. One `SharedBudget` actor holds the limits for all of them:
the concurrency (`teacher.concurrency` requests in flight over the whole cluster), the
RPM/TPM buckets and `max_cost_usd` (a request's worst case is reserved there before it is
sent, so no actor can cross the cap). The response cache is the teacher's SQLite file,
shared by the actors on one machine (on several, point `teacher.cache_path` at a shared disk).

A worker that dies is restarted by Ray and its chunk retried (`max_restarts`,
`max_task_retries`); the answers it had not returned are asked again (most from the cache),
and since only the driver writes the journal, no row is written twice. After the driver is
killed, the same command resumes from the journal as a local run does.

What was sent is counted where a killed worker cannot lose it: the `SharedBudget` keeps the
job's ledger (requests sent, tokens, dollars), and the driver adds it to its teacher's
counters as chunks come back (and at least every `SAVE_EVERY_S`); a chunk brings only the
counts of what was not sent (cache hits, shared answers, retries, failures). A request is
counted as sent when its slot is granted, and charged what it really used when its answer
comes back. One in flight when its worker was killed may or may not have reached the server
and been paid for: it is counted as sent, at the worst case the cost reservation assumes
(`max_tokens` output tokens, input tokens estimated at ~4 characters each, their price).
So `requests_sent` exceeds what the server received by at most the requests in flight at
the kill, and is never short of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distillery.errors import BudgetStop
from distillery.executors.config import RayConfig
from distillery.executors.session import connect
from distillery.jsonl import Journal
from distillery.records import Usage
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import (
    JobItem,
    JobResult,
    Progress,
    Projection,
    start_job,
)
from distillery.teacher.limits import rate_buckets
from distillery.teacher.outcome import Stats
from distillery.teacher.pricing import request_tokens
from distillery.teacher.types import CallResult, ChatRequest, RawCompletion

WORKER_PREFIX = "distillery-teacher-"  # named actors, so an operator (or a test) finds them
# what the `SharedBudget` counts for all workers (a killed one's requests included)
LEDGER = ("sent", "input_tokens", "output_tokens", "spent_usd")
SAVE_EVERY_S = 1.0  # the driver's counters are saved at least this often while work is sent


class SharedBudget:
    """One concurrency, rate and cost budget for every teacher actor (an async Ray actor),
    and the job's ledger of what was sent (`ledger`: requests, tokens, dollars).

    What a worker holds (slots, each with its request's worst case; reserved dollars) is
    kept by its incarnation, so when Ray restarts a worker that died holding some, `join`
    (from the new one's constructor) frees them and charges each request it had in flight at
    its worst case."""

    def __init__(self, config: TeacherConfig) -> None:
        self.slots = asyncio.Semaphore(config.concurrency)
        self.buckets = rate_buckets(config)
        self.cap = config.max_cost_usd
        self.ledger_stats = Stats()  # sent, input_tokens, output_tokens, spent_usd (LEDGER)
        self.tickets = 0
        self.held: dict[str, dict[int, Usage]] = {}  # incarnation -> ticket -> worst case
        self.reserved: dict[str, float] = {}  # incarnation -> dollars held for its requests
        self.current: dict[str, str] = {}  # worker -> its live incarnation

    def join(self, worker: str, incarnation: str) -> None:
        """A (re)started worker holds nothing; what an earlier incarnation held is freed,
        and each request it had in flight counted at its worst case."""
        dead = self.current.get(worker)
        self.current[worker] = incarnation
        self.held[incarnation], self.reserved[incarnation] = {}, 0.0
        if dead is not None:
            for worst in self.held.pop(dead, {}).values():
                self._charge(worst)
                self.slots.release()
            self.reserved.pop(dead, None)

    async def acquire(self, incarnation: str, worst: Usage) -> int | None:
        """Wait for the rate limits and a free slot of `teacher.concurrency`; the request is
        counted as sent from here. Its ticket, for `release` (None: asked by a dead worker)."""
        for _, bucket in self.buckets:
            await bucket.wait()
        await self.slots.acquire()
        if incarnation not in self.held:  # its worker died meanwhile
            self.slots.release()
            return None
        self.tickets += 1
        self.held[incarnation][self.tickets] = worst
        self.ledger_stats.add(sent=1)
        for kind, bucket in self.buckets:
            bucket.charge(kind == "requests")  # its tokens when known (`_charge`)
        return self.tickets

    def release(self, incarnation: str, ticket: int | None, used: Usage) -> None:
        """The request `ticket` is answered (or failed) having used `used`."""
        held = self.held.get(incarnation, {})
        if ticket is None or held.pop(ticket, None) is None:  # charged at `join` already
            return
        self.slots.release()
        self._charge(used)

    def _charge(self, used: Usage) -> None:
        self.ledger_stats.add(
            input_tokens=used.input_tokens,
            output_tokens=used.output_tokens,
            spent_usd=used.cost_usd,
        )
        n = {"requests": 0, "input": used.input_tokens, "output": used.output_tokens}
        for kind, bucket in self.buckets:
            bucket.charge(n[kind])

    def reserve(self, incarnation: str, estimate: float) -> bool:
        """Hold a request's worst-case cost; False when it could cross `max_cost_usd`."""
        held = sum(self.reserved.values())
        if self.cap is not None and self.ledger_stats.spent_usd + held + estimate > self.cap:
            return False
        if incarnation in self.reserved:
            self.reserved[incarnation] += estimate
        return True

    def settle(self, incarnation: str, estimate: float) -> None:
        if incarnation in self.reserved:
            self.reserved[incarnation] = max(0.0, self.reserved[incarnation] - estimate)

    def ledger(self, final: bool = False) -> Stats:
        """What was sent so far, over every worker (the `LEDGER` counters). `final`: the job
        is over (its workers are about to be killed), so what is still in flight is charged
        at its worst case."""
        if final:
            for held in self.held.values():
                for worst in held.values():
                    self._charge(worst)
                held.clear()
        return self.ledger_stats


class BudgetedTeacher(Teacher):
    """The engine with its budget checks made against the `SharedBudget` actor too, and
    what it sends counted there."""

    def __init__(self, config: TeacherConfig, budget: Any, incarnation: str) -> None:
        super().__init__(config)
        self.budget, self.incarnation = budget, incarnation

    async def _send_with_retries(
        self, request: ChatRequest, started: float, role: str
    ) -> tuple[CallResult, RawCompletion | None]:
        """Reserve the worst case in the shared budget first (`BudgetStop` when it could
        cross `max_cost_usd`), then send; the reservation is freed when it is answered."""
        estimate = self.estimate_cost(request)
        if not await self.budget.reserve.remote(self.incarnation, estimate):
            cap = self.config.max_cost_usd
            raise BudgetStop(f"teacher {self.spec}: max_cost_usd={cap:g} reached")
        try:
            return await super()._send_with_retries(request, started, role)
        finally:
            await self.budget.settle.remote(self.incarnation, estimate)

    async def _send(
        self, request: ChatRequest, params: dict[str, Any], usage: list[Usage], role: str
    ) -> RawCompletion:
        """One HTTP exchange inside a slot of the shared budget, which counts it."""
        worst = Usage(
            input_tokens=request_tokens(request),
            output_tokens=params["max_tokens"],
            cost_usd=self.estimate_cost(request),
        )
        ticket = await self.budget.acquire.remote(self.incarnation, worst)
        before = len(usage)
        try:
            return await super()._send(request, params, usage, role)
        finally:  # awaited: the chunk returns only once the ledger holds its requests
            await self.budget.release.remote(self.incarnation, ticket, sum(usage[before:], Usage()))


class TeacherWorker:
    """A Ray actor answering chunks of job items, each with a fresh `BudgetedTeacher`
    (so its counters are the chunk's; what it sends is counted in the `SharedBudget`)."""

    def __init__(self, config: TeacherConfig, budget: Any, role: str, name: str) -> None:
        import ray

        self.config, self.budget, self.role, self.name = config, budget, role, name
        self.incarnation = uuid.uuid4().hex
        ray.get(budget.join.remote(name, self.incarnation))  # what a dead one held

    async def answer(self, chunk: list[JobItem]) -> tuple[list[CallResult], dict[str, float], bool]:
        """(answers with their item ids, the engine's counters for them but those of the
        ledger, budget reached)."""
        teacher = await BudgetedTeacher(self.config, self.budget, self.incarnation).start(
            preflight=False
        )
        answers: list[CallResult] = []
        stopped = False

        async def one(item: JobItem) -> None:
            nonlocal stopped
            if stopped:
                return
            try:
                answer = await teacher.complete(item.request, role=self.role)
            except BudgetStop:
                stopped = True
                return
            answers.append(answer.model_copy(update={"id": item.id}))

        try:
            await asyncio.gather(*(one(item) for item in chunk))
        finally:
            await teacher.aclose()
        counts = {k: v for k, v in asdict(teacher.stats).items() if k not in LEDGER}
        return answers, counts, stopped


def _start_actors(
    ray: Any, config: TeacherConfig, ray_config: RayConfig, role: str
) -> tuple[Any, list[Any]]:
    """The budget actor and `ray.workers` teacher actors (restarted by Ray when they die)."""
    budget = ray.remote(SharedBudget).options(max_concurrency=10_000).remote(config)
    worker = ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=2)(TeacherWorker)
    run = uuid.uuid4().hex[:8]
    names = [f"{WORKER_PREFIX}{run}-{k}" for k in range(ray_config.workers)]
    workers = [worker.options(name=n).remote(config, budget, role, n) for n in names]
    return budget, workers


class _Counted:
    """The part of the `SharedBudget`'s ledger already added to the driver teacher's counters
    (under `role`)."""

    def __init__(self, teacher: Teacher, role: str) -> None:
        self.teacher, self.role, self.stats = teacher, role, Stats()

    def add(self, ledger: Stats) -> bool:
        """Count what `ledger` holds beyond what was counted; True when there was some."""
        delta = {name: getattr(ledger, name) - getattr(self.stats, name) for name in LEDGER}
        self.teacher.accounts.add(self.role, **delta)
        self.stats.add(**delta)
        return any(delta.values())


def _journal(
    journal: Journal,
    answers: list[CallResult],
    fingerprints: dict[str, str],
    result: JobResult,
    progress: Progress,
    on_answer: Callable[[], None] | None,
) -> None:
    """A chunk's answers into the journal and `result`, each with its work's fingerprint."""
    for answer in answers:
        row = answer.model_copy(update={"fingerprint": fingerprints[answer.id]})
        journal.append(row)
        result.rows[row.id] = row
        progress.tick()
        if on_answer is not None:
            on_answer()


async def run_job_on_ray(
    teacher: Teacher,
    items: Sequence[JobItem],
    journal_path: Path,
    *,
    ray_config: RayConfig,
    quiet: bool = False,
    fsync: bool = False,
    on_projection: Callable[[Projection], None] | None = None,
    role: str = "",
    on_answer: Callable[[], None] | None = None,
) -> JobResult:
    """`jobs.run_job` with the requests answered on Ray. `teacher` is the driver's started
    client: its fingerprints name the work, its counters receive the workers' counts.
    `on_answer` (which saves the counters so far) is also called when no chunk came back for
    `SAVE_EVERY_S` but more was sent, so a killed driver's record lags by no more."""
    fingerprints, result, pending = start_job(teacher, items, journal_path, on_projection)
    if not pending:
        return result
    ray = connect(ray_config)
    budget, workers = _start_actors(ray, teacher.config, ray_config, role)
    size = ray_config.chunk_size
    chunks = [list(pending[lo : lo + size]) for lo in range(0, len(pending), size)]
    progress = Progress(len(pending), teacher, quiet=quiet)
    stopped = False
    in_flight: dict[Any, int] = {}  # ObjectRef -> worker index
    counted = _Counted(teacher, role)

    def submit(k: int) -> None:
        if chunks and not stopped:
            in_flight[workers[k].answer.remote(chunks.pop(0))] = k

    try:
        with Journal(journal_path, fsync=fsync) as journal:
            for k in range(len(workers)):
                submit(k)
                submit(k)  # two chunks per actor: one answered while the next is sent
            while in_flight:
                done, _ = await asyncio.to_thread(
                    ray.wait, list(in_flight), num_returns=1, timeout=SAVE_EVERY_S
                )
                if not done:  # nothing back for a while: save what was sent meanwhile
                    if counted.add(await budget.ledger.remote()) and on_answer is not None:
                        on_answer()
                    continue
                k = in_flight.pop(done[0])
                answers, counts, budget_hit = ray.get(done[0])
                teacher.accounts.add(role, **counts)
                counted.add(await budget.ledger.remote())
                _journal(journal, answers, fingerprints, result, progress, on_answer)
                stopped = stopped or budget_hit
                submit(k)
    finally:
        with contextlib.suppress(Exception):  # an interrupted job: what it had sent too
            counted.add(ray.get(budget.ledger.remote(final=True), timeout=10))
        progress.close()
        for actor in (*workers, budget):
            ray.kill(actor)
    if stopped:
        stop = BudgetStop(
            f"teacher {teacher.spec}: max_cost_usd={teacher.config.max_cost_usd:g} reached"
        )
        stop.partial = result
        raise stop
    return result
