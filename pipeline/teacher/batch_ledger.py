"""The batch ledger: what was submitted to a provider's batch API, kept in the run directory
so that a re-run after a crash, `kill -9` or Ctrl-C re-attaches to its batches instead of
paying for the same items twice.

One JSON file per batch (`LEDGER_DIR/<local_id>.json`), rewritten atomically at every step:

    submitting     written BEFORE the upload/create calls: the item keys (custom ids), the
                   worst-case cost reserved for them, the input file once uploaded
    open           the provider accepted it (`remote_id`); `remote_status` follows the polls
    ended          the provider finished it (completed, expired, cancelled, failed)
    collected      every result was handed to the engine (cached / journaled): done
    not_submitted  the create call failed and the provider holds no such batch

A record in `submitting`, `open` or `ended` still answers its items: the engine waits for it
(or downloads its results) rather than submitting them again.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from distillery.jsonl import atomic_write_text
from distillery.teacher.config import TeacherConfig
from pydantic import BaseModel, Field

Phase = Literal["submitting", "open", "ended", "collected", "not_submitted"]
LIVE: tuple[Phase, ...] = ("submitting", "open", "ended")  # may still answer its items


class BatchRecord(BaseModel):
    """One batch as the ledger keeps it."""

    local_id: str = Field(default_factory=lambda: "b" + uuid.uuid4().hex[:12])
    provider: str  # openai | anthropic
    spec: str  # the teacher, e.g. openai:gpt-4o-mini
    url: str  # the API's base URL (never a key)
    keys: list[str]  # the items' custom ids, in input-file order
    reserved_usd: float = 0.0  # the items' worst-case cost, held against max_cost_usd
    bytes: int = 0  # size of the submitted input
    phase: Phase = "submitting"
    remote_id: str | None = None
    input_file_id: str | None = None  # OpenAI: the uploaded JSONL
    remote_status: str | None = None  # the provider's own status word
    counts: dict[str, Any] = Field(default_factory=dict)  # the provider's request counts
    created_at: float = Field(default_factory=time.time)
    submitted_at: float | None = None
    ended_at: float | None = None
    cost_usd: float = 0.0  # what its answers cost (priced at collection)
    error: str | None = None  # why it was not submitted / why it failed

    @property
    def is_open(self) -> bool:
        return self.phase in ("submitting", "open")


class Ledger:
    """The ledger directory: `save` after every change, `load` at start."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def save(self, record: BatchRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record.model_dump(mode="json"), separators=(",", ":")) + "\n"
        atomic_write_text(self.dir / f"{record.local_id}.json", text)

    def load(self) -> list[BatchRecord]:
        """Every record, oldest first (an unreadable file is skipped: a torn write cannot be
        one, since writes are atomic)."""
        records = []
        if not self.dir.is_dir():
            return []
        for path in self.dir.glob("b*.json"):
            try:
                records.append(BatchRecord.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return sorted(records, key=lambda r: r.created_at)


def ledger_dir(config: TeacherConfig) -> Path:
    """`batch.ledger_dir`, else `batches/` beside the response cache (a stage that has a run
    directory puts it there first: `in_run_dir`)."""
    if config.batch.ledger_dir:
        return Path(config.batch.ledger_dir)
    return Path(config.cache_path).expanduser().parent / "batches"


def in_run_dir(
    config: TeacherConfig, run_dir: str | Path, moved_to: str | Path | None = None
) -> TeacherConfig:
    """`config` with its batch ledger in `RUN_DIR/batches` (unless `batch.ledger_dir` is
    set), where `distillery batches status|cancel RUN_DIR` find it and no other run reads
    it. A stage calls this with its run directory before starting a `Teacher`; after
    `--restart` (`moved_to`: where the old outputs went) the batches still open move along."""
    if config.mode != "batch" or config.batch.ledger_dir:
        return config
    ledger = Path(run_dir) / "batches"
    if moved_to is not None and (Path(moved_to) / "batches").is_dir():
        carry_live(Path(moved_to) / "batches", ledger)
    batch = config.batch.model_copy(update={"ledger_dir": str(ledger)})
    return config.model_copy(update={"batch": batch})


def carry_live(old: str | Path, new: str | Path) -> int:
    """`--restart` moved a run directory aside: its batches that may still answer (`LIVE`)
    move to the new run's ledger, which re-attaches to them as it would to the response
    cache, instead of buying the same requests again. Returns how many moved."""
    moved = 0
    for record in Ledger(old).load():
        if record.phase in LIVE:
            Ledger(new).save(record)
            (Path(old) / f"{record.local_id}.json").unlink()
            moved += 1
    return moved


def live_items(directory: str | Path) -> int:
    """How many items the ledger's batches may still answer (`LIVE`): a run in online mode
    would buy them again."""
    return sum(len(r.keys) for r in Ledger(directory).load() if r.phase in LIVE)


def status_lines(records: list[BatchRecord], now: float | None = None) -> list[str]:
    """One line per batch (state, items, counts, reserved and priced cost, age) and a total."""
    now = time.time() if now is None else now
    lines = []
    for r in records:
        age = _age(now - (r.submitted_at or r.created_at))
        counts = ", ".join(f"{k} {v}" for k, v in r.counts.items() if v) or "-"
        lines.append(
            f"{r.local_id}  {r.provider}:{r.remote_id or '-'}  {r.phase}"
            f"{f' ({r.remote_status})' if r.remote_status else ''}  {len(r.keys)} items  "
            f"[{counts}]  reserved ${r.reserved_usd:.4f}  cost ${r.cost_usd:.4f}  age {age}"
        )
    live = [r for r in records if r.phase in LIVE]
    lines.append(
        f"{len(records)} batches: {sum(r.is_open for r in records)} open, "
        f"{sum(r.phase == 'ended' for r in records)} ended (not collected), "
        f"{sum(r.phase == 'collected' for r in records)} collected; "
        f"{sum(len(r.keys) for r in live)} items waiting; "
        f"${sum(r.cost_usd for r in records):.4f} spent"
    )
    return lines


def _age(seconds: float) -> str:
    minutes, _ = divmod(int(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{int(seconds) % 60:02d}s"
