"""`distillery complete`: run a JSONL of chat requests through a teacher.

Reads `{"id": ..., "messages": [...], ...}` rows (OpenAI chat format; other fields are
carried through) and writes one row per input, in input order:
`{id, response, finish_reason, usage, model, error, raw_response, ...carried fields}` -
`response` is null, `error` says why and `raw_response` holds the last raw answer (a cut-off
text, say) for items that failed after all retries.

Beside `OUT.jsonl` the run keeps `OUT.jsonl.run/` (a `runstate.RunDir`): the journal, the
identity of the settings that shape the answers, one line per invocation, the lock and
`manifest.json`; `OUT.config.yaml` is the resolved config of the rows beside it.

Re-running is safe:
- same command: resumes from the journal; a finished job sends nothing;
- edited input rows: only the rows whose request changed are sent again (every journal entry
  carries its request's fingerprint); the rest come from the journal;
- another teacher or sampling parameters: stops with one line naming the difference, since
  every row would change and the old rows were paid for; `--restart` moves the old run aside;
- another run on the same output at the same time: fails at once naming the holder.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from distillery import calls
from distillery.config import Section, save_resolved_config
from distillery.errors import BudgetStop, UserError
from distillery.executors.config import Executor, RayConfig
from distillery.jsonl import atomic_write_text, iter_json_lines, write_jsonl
from distillery.records import chat_messages
from distillery.runstate import RunDir, config_identity, file_digest
from distillery.teacher.batch import Detached
from distillery.teacher.batch_ledger import in_run_dir, live_items
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, JobResult, Projection, run_job
from distillery.teacher.outcome import COUNTERS
from distillery.teacher.types import CallResult
from pydantic import Field

EXIT_SOME_FAILED = 1
# settings that never change an answer (how the job runs, where things are, what it may cost):
# changing them between invocations continues the same run
NOT_IDENTITY = (
    "input",
    "output",
    "quiet",
    "fsync_journal",
    "executor",
    "ray",
    *(
        f"teacher.{name}"
        for name in [
            "base_urls",
            "api_key_env",
            "transport",
            "concurrency",
            "requests_per_minute",
            "input_tokens_per_minute",
            "output_tokens_per_minute",
            "timeout_s",
            "max_retries",
            "max_length_retries",
            "max_parse_retries",
            "backoff_initial_s",
            "backoff_max_s",
            "replica_max_failures",
            "replica_cooldown_s",
            "cache",
            "cache_path",
            "prices",
            "max_cost_usd",
            "expected_output_tokens",
            "mode",  # online and batch ask the same requests (one cache key)
            "batch",
            "vllm",
            "hf.batch_size",
            "hf.device",
        ]
    ),
)


class CompleteConfig(Section):
    """`distillery complete` settings."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="the teacher to run")
    input: str | None = Field(None, description="input JSONL: {id, messages, ...} per line")
    output: str | None = Field(None, description="output JSONL, one row per input row")
    quiet: bool = Field(False, description="no live progress; a summary line at the end")
    fsync_journal: bool = Field(
        False, description="fsync every journal line (survives power loss, slower)"
    )
    executor: Executor = Field(
        "local", description="local: this process; ray: the requests answered by Ray actors"
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="the Ray cluster (executor ray)")


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
        items.append((JobItem(item_id, calls.COMPLETE.messages_request(clean)), extra))
    if not items:
        raise UserError(f"{path}: no rows")
    return items


def run_dir_for(output: Path) -> Path:
    """`OUT.jsonl.run/`: journal, identity, invocations, lock and manifest of `OUT.jsonl`."""
    return output.with_name(output.name + ".run")


def journal_path(output: Path) -> Path:
    return run_dir_for(output) / "journal.jsonl"


def config_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.config.yaml")


def output_row(row: CallResult, extra: dict[str, Any]) -> dict[str, Any]:
    """One output row: the answer (or the error and the last raw answer) + carried fields."""
    out = {
        "id": row.id,
        "response": row.response,
        "finish_reason": row.finish_reason,
        "usage": row.usage.model_dump(),
        "model": row.model,
        "error": row.error,
        "raw_response": None if row.ok else row.text,
    }
    return {**out, **{k: v for k, v in extra.items() if k not in out}}


def _check_paths(inp: Path, output: Path) -> None:
    """The input is never written over: not by the rows, their config or the run's files."""
    for written in (output, config_path(output)):
        if inp.resolve() == written.resolve() or (written.exists() and written.samefile(inp)):
            raise UserError(
                f"--output {output} would write over the input file {inp}: choose another "
                "output path"
            )
    if run_dir_for(output).resolve() in inp.resolve().parents:
        raise UserError(f"--input {inp} lies inside {run_dir_for(output)}, the run's own files")
    if output.exists() and not run_dir_for(output).exists():
        raise UserError(
            f"--output {output} exists and is not the output of a distillery run (there is no "
            f"{run_dir_for(output)}): choose another output path or move it away"
        )


def _move_old_outputs(run: RunDir, output: Path) -> None:
    """`--restart`: the old rows and their config go with the old run, never deleted."""
    if run.moved_to is None:
        return
    for old in (output, config_path(output)):
        if old.exists():
            shutil.move(str(old), str(run.moved_to / old.name))


def run_complete(config: CompleteConfig, restart: bool = False) -> int:
    if not config.input or not config.output:
        raise UserError("complete needs --input IN.jsonl and --output OUT.jsonl")
    inp, output = Path(config.input), Path(config.output)
    items = read_requests(inp)
    _check_paths(inp, output)
    if config.executor == "ray":  # Ray installed and the cluster reachable, before writing
        if config.teacher.mode == "batch":
            raise UserError(
                "teacher.mode batch hands the whole job to the provider's batch API from one "
                "process: run it with executor local"
            )
        from distillery.executors.session import connect

        connect(config.ray)
    identity = config_identity(config, exclude=NOT_IDENTITY)
    with RunDir(run_dir_for(output), "complete", identity, restart=restart) as run:
        _move_old_outputs(run, output)
        for stale in output.parent.glob(f".{output.name}.*.tmp"):  # a killed final write
            stale.unlink(missing_ok=True)
        # the identity leaves the input out (an edited row is redone alone), so a finished
        # run is the same work only for the same input file
        digest = file_digest(inp)
        done = run.finished
        if done is not None and done.get("input") == digest and output.is_file():
            print(
                f"{output}: already finished ({done.get('rows', '?')} rows, same input and "
                "settings); nothing to do (--restart redoes it)"
            )
            return 0
        run.clear_finished()
        _batch_settings(config, run)
        try:
            run.exit_code = asyncio.run(_run(config, items, output, run))
        except Detached as exc:  # --detach: every item waits in a submitted batch
            print(
                f"{exc}; nothing written yet. Re-run the same command (without --detach to "
                f"wait) to collect the answers; `distillery batches status {run.path}` shows them"
            )
            return 0
        if run.exit_code == 0:
            run.mark_finished({"input": digest, "rows": len(items)})
        return int(run.exit_code)


def _batch_settings(config: CompleteConfig, run: RunDir) -> None:
    """`teacher.mode: batch`: the ledger lives in the run directory; `--quiet` prints no
    batch status lines."""
    if config.teacher.mode == "batch":  # --restart: batches still open move along
        config.teacher = in_run_dir(config.teacher, run.path, run.moved_to)
    elif live_items(run.path / "batches"):
        print(
            f"warning: {live_items(run.path / 'batches')} items of this run wait in open "
            "batches; online mode sends them again (paid twice if the batches finish): "
            "re-run with teacher.mode=batch to collect them",
            file=sys.stderr,
        )
    if config.quiet:
        config.teacher.batch.progress_every_s = 0


def _projection_line(teacher: Teacher, projection: Projection) -> str:
    line = projection.line(teacher.spec)
    if teacher.config.mode == "batch":
        line += f" at batch prices ({teacher.config.batch.discount:.0%} of online)"
    return line


def _job(config: CompleteConfig) -> Callable[..., Awaitable[JobResult]]:
    """`run_job`, or with `executor: ray` the same job answered by Ray actors."""
    if config.executor == "ray":
        from distillery.executors.ray_complete import run_job_on_ray

        return functools.partial(run_job_on_ray, ray_config=config.ray)
    return run_job


async def _run(
    config: CompleteConfig, items: list[tuple[JobItem, dict[str, Any]]], output: Path, run: RunDir
) -> int:
    started = time.time()
    teacher = await Teacher(config.teacher).start()  # preflight: nothing written if it fails
    stopped: BudgetStop | None = None
    result = JobResult()
    try:
        result = await _job(config)(
            teacher,
            [it for it, _ in items],
            journal_path(output),
            quiet=config.quiet,
            fsync=config.fsync_journal,
            on_projection=lambda p: print(_projection_line(teacher, p)) if p.pending else None,
            on_answer=lambda: run.record(teacher=teacher.spec, **teacher.stats.counters()),
        )
    except BudgetStop as exc:
        stopped = exc
        result = exc.partial if isinstance(exc.partial, JobResult) else result
    finally:
        await teacher.aclose()
        now = teacher.stats.counters()
        run.record(teacher=teacher.spec, **now)
    rows = [output_row(result.rows[it.id], extra) for it, extra in items if it.id in result.rows]
    failed = sum(r["error"] is not None for r in rows)
    code = BudgetStop.exit_code if stopped else EXIT_SOME_FAILED if failed else 0
    write_jsonl(output, rows)
    save_resolved_config(config, output.parent, config_path(output).name)
    manifest = _manifest(
        run, config, len(items), rows, code, {"teacher": teacher.spec, **now}, started
    )
    atomic_write_text(run.path / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(_summary(output, len(items), len(rows), failed, result, teacher, manifest))
    if stopped is not None:
        raise BudgetStop(
            f"{stopped}; {len(items) - len(rows)} rows not done. Raise teacher.max_cost_usd "
            "(or --max-cost-usd) and re-run the same command to finish."
        )
    if failed:
        print(f"{failed} rows failed after retries (see their 'error'); re-run to retry them.")
    return code


def _manifest(
    run: RunDir,
    config: CompleteConfig,
    n_items: int,
    rows: list[dict[str, Any]],
    code: int,
    now: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """What the output holds and what every invocation of this run sent and spent, per
    teacher (`now`: this invocation's counters, `started` its start, epoch seconds). The counters come from the engine, so an
    answer served by the cache or by a twin in flight costs nothing: no double counting."""
    this: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "resumed": run.resumed,
    }
    invocations = [*run.previous(), {**this, "counters": now, "exit_code": code}]
    teachers: dict[str, dict[str, float]] = {}
    for inv in invocations:
        counters = inv.get("counters", {})
        totals = teachers.setdefault(str(counters.get("teacher", "?")), dict.fromkeys(COUNTERS, 0))
        for name in COUNTERS:
            totals[name] += counters.get(name) or 0
    for totals in teachers.values():
        totals["spent_usd"] = round(totals["spent_usd"], 6)
    return {
        "stage": "complete",
        "input": config.input,
        "output": config.output,
        "rows": len(rows),
        "rows_failed": sum(r["error"] is not None for r in rows),
        "rows_not_done": n_items - len(rows),
        "exit_code": code,
        "spent_usd": round(sum(t["spent_usd"] for t in teachers.values()), 6),
        "requests_sent": int(sum(t["requests_sent"] for t in teachers.values())),
        "teachers": teachers,
        "invocations": [
            {
                "started": inv.get("started"),
                "exit_code": inv.get("exit_code"),
                "resumed": inv.get("resumed"),
                "requests_sent": inv.get("counters", {}).get("requests_sent", 0),
                "spent_usd": inv.get("counters", {}).get("spent_usd", 0),
            }
            for inv in invocations
        ],
    }


def _summary(
    output: Path,
    n_items: int,
    written: int,
    failed: int,
    result: JobResult,
    teacher: Teacher,
    manifest: dict[str, Any],
) -> str:
    s = teacher.stats
    changed = f", {result.changed} redone because their request changed" if result.changed else ""
    earlier = len(manifest["invocations"]) - 1
    overall = (
        f"; ${manifest['spent_usd']:.4f} over this output's {earlier + 1} invocations"
        if earlier
        else ""
    )
    return (
        f"wrote {written}/{n_items} rows to {output} ({result.skipped} already done{changed}, "
        f"{s.cache_hits} cache hits, {s.sent} requests sent, {failed} failed); "
        f"spent ${s.spent_usd:.4f}{overall}"
    )
