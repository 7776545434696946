"""`distillery complete`: run a JSONL of chat requests through a teacher.

Reads `{"id": ..., "messages": [...], ...}` rows (OpenAI chat format; other fields are
carried through) and writes one row per input, in input order:
`{id, response, finish_reason, usage, model, error, ...carried fields}` - `response` is null
and `error` says why for items that failed after all retries. Re-running the same command
resumes from the journal beside the output; cached answers cost nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from distillery.config import Section, save_resolved_config
from distillery.errors import BudgetStop, UserError
from distillery.jsonl import iter_json_lines, write_jsonl
from distillery.records import chat_messages
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, JobResult, read_journal, run_job
from distillery.teacher.types import ChatRequest
from pydantic import Field

EXIT_SOME_FAILED = 1


class CompleteConfig(Section):
    """`distillery complete` settings."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="the teacher to run")
    input: str | None = Field(None, description="input JSONL: {id, messages, ...} per line")
    output: str | None = Field(None, description="output JSONL, one row per input row")
    quiet: bool = Field(False, description="no live progress; a summary line at the end")
    fsync_journal: bool = Field(
        False, description="fsync every journal line (survives power loss, slower)"
    )


def read_requests(path: Path) -> list[tuple[JobItem, dict[str, Any]]]:
    """Validate every row before any request is sent; errors name `file:line`."""
    items: list[tuple[JobItem, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_json_lines(path):
        where = f"{path}:{lineno}"
        if "id" not in obj or not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
            raise UserError(f"{where}: field 'id' must be a string or an integer")
        item_id = str(obj["id"])
        if item_id in seen:
            raise UserError(f"{where}: duplicate id {item_id!r} (first at line {seen[item_id]})")
        seen[item_id] = lineno
        clean = chat_messages(obj.get("messages"), where)
        extra = {k: v for k, v in obj.items() if k not in ("id", "messages")}
        items.append((JobItem(item_id, ChatRequest(messages=clean, purpose="complete")), extra))
    if not items:
        raise UserError(f"{path}: no rows")
    return items


def journal_path(output: Path) -> Path:
    return output.parent / f".{output.name}.journal"


async def _run(
    config: CompleteConfig, items: list[tuple[JobItem, dict[str, Any]]], output: Path
) -> int:
    teacher = await Teacher(config.teacher).start()
    stopped: BudgetStop | None = None
    try:
        result = await run_job(
            teacher,
            [it for it, _ in items],
            journal_path(output),
            quiet=config.quiet,
            fsync=config.fsync_journal,
            on_projection=lambda p: print(p.line(teacher.spec)),
        )
    except BudgetStop as exc:
        stopped, result = exc, JobResult(rows=read_journal(journal_path(output)))
    finally:
        await teacher.aclose()
    fields = ("id", "response", "finish_reason", "usage", "model", "error")
    rows = (
        {
            **result.rows[it.id].model_dump(include=set(fields)),
            **{k: v for k, v in extra.items() if k not in fields},
        }
        for it, extra in items
        if it.id in result.rows
    )
    written = write_jsonl(output, rows)
    stats = teacher.stats
    print(
        f"wrote {written}/{len(items)} rows to {output} ({result.skipped} already done, "
        f"{stats.cache_hits} cache hits, {stats.sent} requests sent, ${stats.spent_usd:.4f} spent, "
        f"{len(result.failed)} failed)"
    )
    if stopped is not None:
        raise BudgetStop(
            f"{stopped}; {len(items) - written} rows not done. Raise teacher.max_cost_usd "
            "(or --max-cost-usd) and re-run the same command to finish."
        )
    if result.failed:
        print(
            f"{len(result.failed)} rows failed after retries (see their 'error'); re-run to retry them."
        )
        return EXIT_SOME_FAILED
    return 0


def run_complete(config: CompleteConfig) -> int:
    if not config.input or not config.output:
        raise UserError("complete needs --input IN.jsonl and --output OUT.jsonl")
    output = Path(config.output)
    items = read_requests(Path(config.input))
    save_resolved_config(config, output.parent, f"{output.stem}.config.yaml")
    return asyncio.run(_run(config, items, output))
