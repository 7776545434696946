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
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
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
from distillery.teacher.types import CallResult, ChatRequest, RawCompletion

WORKER_PREFIX = "distillery-teacher-"  # named actors, so an operator (or a test) finds them


class SharedBudget:
    """One concurrency, rate and cost budget for every teacher actor (an async Ray actor).

    What each worker holds (slots, reserved dollars) is kept by its name, so a worker that
    died holding some gives them back when Ray restarts it (`forget`, from its constructor)."""

    def __init__(self, config: TeacherConfig) -> None:
        self.slots = asyncio.Semaphore(config.concurrency)
        self.buckets = rate_buckets(config)
        self.cap = config.max_cost_usd
        self.spent_usd = 0.0
        self.held: Counter[str] = Counter()  # worker -> slots
        self.reserved: dict[str, float] = {}  # worker -> dollars held for requests in flight
        self.current: dict[str, str] = {}  # worker -> its live incarnation

    async def acquire(self, worker: str, incarnation: str) -> None:
        """Wait for the rate limits and a free slot of `teacher.concurrency`."""
        for _, bucket in self.buckets:
            await bucket.wait()
        await self.slots.acquire()
        if self.current.get(worker) != incarnation:  # asked by a worker that died meanwhile
            self.slots.release()
            return
        self.held[worker] += 1

    def release(self, worker: str, input_tokens: int, output_tokens: int) -> None:
        if self.held[worker] > 0:  # not after `forget`
            self.held[worker] -= 1
            self.slots.release()
        used = {"requests": 1, "input": input_tokens, "output": output_tokens}
        for kind, bucket in self.buckets:
            bucket.charge(used[kind])

    def reserve(self, worker: str, estimate: float) -> bool:
        """Hold a request's worst-case cost; False when it could cross `max_cost_usd`."""
        held = sum(self.reserved.values())
        if self.cap is not None and self.spent_usd + held + estimate > self.cap:
            return False
        self.reserved[worker] = self.reserved.get(worker, 0.0) + estimate
        return True

    def settle(self, worker: str, estimate: float, spent: float) -> None:
        if worker in self.reserved:
            self.reserved[worker] = max(0.0, self.reserved[worker] - estimate)
        self.spent_usd += spent

    def forget(self, worker: str, incarnation: str) -> None:
        """A (re)started worker holds nothing: free what an earlier incarnation held."""
        self.current[worker] = incarnation
        for _ in range(self.held.pop(worker, 0)):
            self.slots.release()
        self.reserved.pop(worker, None)


class BudgetedTeacher(Teacher):
    """The engine with its budget checks made against the `SharedBudget` actor too."""

    def __init__(self, config: TeacherConfig, budget: Any, worker: str, incarnation: str) -> None:
        super().__init__(config)
        self.budget, self.worker, self.incarnation = budget, worker, incarnation

    async def _send_with_retries(
        self, request: ChatRequest, started: float, role: str
    ) -> tuple[CallResult, RawCompletion | None]:
        """Reserve the worst case in the shared budget first (`BudgetStop` when it could
        cross `max_cost_usd`), then send; settle with what was spent."""
        estimate = self.estimate_cost(request)
        if not await self.budget.reserve.remote(self.worker, estimate):
            cap = self.config.max_cost_usd
            raise BudgetStop(f"teacher {self.spec}: max_cost_usd={cap:g} reached")
        spent = 0.0
        try:
            result, raw = await super()._send_with_retries(request, started, role)
            spent = result.usage.cost_usd
            return result, raw
        finally:
            await self.budget.settle.remote(self.worker, estimate, spent)

    async def _send(
        self, request: ChatRequest, params: dict[str, Any], usage: list[Usage], role: str
    ) -> RawCompletion:
        await self.budget.acquire.remote(self.worker, self.incarnation)
        before = len(usage)
        try:
            return await super()._send(request, params, usage, role)
        finally:
            new = usage[before:]
            self.budget.release.remote(
                self.worker, sum(u.input_tokens for u in new), sum(u.output_tokens for u in new)
            )


class TeacherWorker:
    """A Ray actor answering chunks of job items, each with a fresh `BudgetedTeacher`
    (so its counters are the chunk's)."""

    def __init__(self, config: TeacherConfig, budget: Any, role: str, name: str) -> None:
        import ray

        self.config, self.budget, self.role, self.name = config, budget, role, name
        self.incarnation = uuid.uuid4().hex
        ray.get(budget.forget.remote(name, self.incarnation))  # what a dead one held

    async def answer(self, chunk: list[JobItem]) -> tuple[list[CallResult], dict[str, float], bool]:
        """(answers with their item ids, the engine's counters for them, budget reached)."""
        teacher = await BudgetedTeacher(
            self.config, self.budget, self.name, self.incarnation
        ).start(preflight=False)
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
        return answers, asdict(teacher.stats), stopped


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
    client: its fingerprints name the work, its counters receive the workers' counts."""
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

    def submit(k: int) -> None:
        if chunks and not stopped:
            in_flight[workers[k].answer.remote(chunks.pop(0))] = k

    try:
        with Journal(journal_path, fsync=fsync) as journal:
            for k in range(len(workers)):
                submit(k)
                submit(k)  # two chunks per actor: one answered while the next is sent
            while in_flight:
                done, _ = await asyncio.to_thread(ray.wait, list(in_flight), num_returns=1)
                k = in_flight.pop(done[0])
                answers, counts, budget_hit = ray.get(done[0])
                teacher.accounts.add(role, **counts)
                for answer in answers:
                    row = answer.model_copy(update={"fingerprint": fingerprints[answer.id]})
                    journal.append(row)
                    result.rows[row.id] = row
                    progress.tick()
                    if on_answer is not None:
                        on_answer()
                stopped = stopped or budget_hit
                submit(k)
    finally:
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
