"""Shared state of one generate run: teachers per role, journals, rejected rows, counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.errors import BudgetStop  # noqa: F401  (generate.run imports it from here)
from distillery.generate.config import GenerateConfig
from distillery.prompts import Rendered, render
from distillery.records import Drop, LLMCall, Message, Record, Usage
from distillery.seeds import SeedTask
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, JournalRow, run_job
from distillery.teacher.types import ChatRequest


@dataclass
class GenContext:
    config: GenerateConfig
    run_dir: Path
    seeds: list[SeedTask]
    teachers: dict[str, Teacher]  # role -> teacher: instructions, evolution, responses
    rejected: list[Record] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def demo(self) -> bool:
        return any(t.config.backend == "fake" for t in self.teachers.values())

    def request(
        self, rendered: Rendered, purpose: str, system: Rendered | None = None
    ) -> ChatRequest:
        messages = [{"role": "user", "content": rendered.text}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system.text})
        return ChatRequest(messages=messages, purpose=purpose, template=rendered.template)

    async def call(self, role: str, stage: str, items: list[JobItem]) -> dict[str, JournalRow]:
        """Run `items` through the role's teacher with a per-stage journal (resumable)."""
        if not items:
            return {}
        teacher = self.teachers[role]
        journal = self.run_dir / "journal" / f"{stage}.jsonl"
        result = await run_job(teacher, items, journal, quiet=self.config.quiet)
        self.counts[f"calls:{stage}"] += len(items)
        return result.rows  # a budget stop raised `BudgetStop` above, journal flushed

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


def failed_drop(row: JournalRow) -> Drop:
    """A teacher call that failed after all retries, as a rejection with its evidence."""
    return Drop(
        rule="teacher_failed",
        reason=row.error or "failed",
        evidence={
            "finish_reason": row.finish_reason,
            "raw": (row.trace.response if row.trace else None),
        },
    )
