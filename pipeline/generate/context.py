"""Shared state of one generate run: teachers per role, journals, rejected rows, counters."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery import calls
from distillery.errors import BudgetStop  # noqa: F401  (generate.run imports it from here)
from distillery.generate.categories import CategoryModel
from distillery.generate.config import GenerateConfig
from distillery.generate.rows import GenRow
from distillery.prompts import render
from distillery.records import Drop, LLMCall, Message, Record, Usage
from distillery.runstate import RunDir
from distillery.seeds import SeedTask
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, JobResult, run_job
from distillery.teacher.types import CallResult

if TYPE_CHECKING:
    from distillery.generate.magpie import MagpieTemplate


@dataclass
class GenContext:
    config: GenerateConfig
    run_dir: Path
    seeds: list[SeedTask]
    teachers: dict[str, Teacher]  # role -> teacher: instructions, evolution, responses
    rejected: list[Record] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    run: RunDir | None = None  # this invocation's counters are recorded there after each call
    categories: CategoryModel | None = None  # categories for new base rows (None: no category)
    # role -> this invocation's teacher stats for that role's calls only
    role_stats: dict[str, Counter[str]] = field(default_factory=dict)
    magpie: MagpieTemplate | None = None  # the Magpie model's chat template (method magpie)
    # answers a stage's requests: `run_job`, or `run_job_on_ray` with `executor: ray`
    job: Callable[..., Awaitable[JobResult]] = run_job

    def __post_init__(self) -> None:
        """`executor: ray`: Ray installed and its cluster reachable before any request."""
        if self.config.executor == "ray" and self.job is run_job:
            from distillery.executors.ray_complete import run_job_on_ray
            from distillery.executors.session import connect

            connect(self.config.ray)
            self.job = functools.partial(run_job_on_ray, ray_config=self.config.ray)

    @property
    def demo(self) -> bool:
        return any(t.config.backend == "fake" for t in self.teachers.values())

    async def call(self, stage: str, items: list[JobItem]) -> dict[str, CallResult]:
        """Run `items` through the teacher of their calls' role (`distillery.calls`) with a
        per-stage journal, `journal/<stage>.jsonl` (resumable)."""
        if not items:
            return {}
        role = calls.role_of([item.request for item in items])
        teacher = self.teachers[role]
        journal = self.run_dir / "journal" / f"{stage}.jsonl"
        try:
            result = await self.job(
                teacher,
                items,
                journal,
                quiet=self.config.quiet,
                role=role,
                on_answer=lambda: self._record_stats(role, teacher),
            )
        finally:
            self._record_stats(role, teacher)
        self.counts[f"calls:{stage}"] += len(items)
        return result.rows  # a budget stop raised `BudgetStop` above, journal flushed

    def _record_stats(self, role: str, teacher: Teacher) -> None:
        """This invocation's counters of `role`'s calls (the teacher counts roles sharing one
        client apart), recorded in the run directory after every call."""
        self.role_stats[role] = Counter(teacher.stats_for(role).counters())
        if self.run is not None:
            self.run.record(
                **{
                    f"{r}.{k}": v
                    for r, counter in self.role_stats.items()
                    for k, v in counter.items()
                }
            )

    def categorise(self, rows: list[GenRow]) -> None:
        """Set `category` (and `meta.category_similarity`) on new base rows that have none."""
        todo = [r for r in rows if r.category is None]
        if self.categories is None or not todo:
            return
        found = self.categories.assign([(r.instruction, r.input) for r in todo])
        for row, hit in zip(todo, found, strict=True):
            if hit is not None:
                row.category = hit[0]
                row.meta["category_similarity"] = hit[1]

    def reject(
        self,
        stage: str,
        item_id: str,
        instruction: str,
        drop: Drop,
        *,
        origin: str = "self_instruct",
        input: str = "",
        parent_ids: list[str] | None = None,
        trace: list[LLMCall] | None = None,
        round: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Keep a rejected candidate as data, with the rule and its evidence."""
        self.counts[f"rejected:{stage}:{drop.rule}"] += 1
        user = render("user_turn", instruction=instruction or "(empty)", input=input).text
        self.rejected.append(
            Record(
                id=item_id,
                instruction=instruction,
                input=input,
                messages=[Message(role="user", content=user)],
                origin=origin,
                parent_ids=parent_ids or [],
                round=round,
                dropped_by=drop,
                trace=trace or [],
                usage=sum((c.usage for c in trace or []), Usage()),
                demo=self.demo,
                meta={"stage": stage, **(meta or {})},
            )
        )


def failed_drop(row: CallResult) -> Drop:
    """A teacher call that failed after all retries, as a rejection with its evidence:
    `cut_off` when the answer kept running to max_tokens, else `teacher_failed`."""
    return Drop(
        rule="cut_off" if row.finish_reason == "length" else "teacher_failed",
        reason=row.error or "failed",
        evidence={"finish_reason": row.finish_reason, "raw": row.text},
    )
