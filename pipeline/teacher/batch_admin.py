"""`distillery batches status RUN_DIR` and `distillery batches cancel RUN_DIR`.

RUN_DIR is a run directory holding a batch ledger (`RUN_DIR/batches/`, e.g. `OUT.jsonl.run/`
of `distillery complete`), the ledger directory itself, or `OUT.jsonl` (its `.run/`).
`status` asks the provider for the state of every open batch (unless `--offline`) and prints
one line per batch and a total; `cancel` cancels the open ones, holding the run directory's
lock so that no run polls (and resubmits) them meanwhile. A later re-run of the same command
resubmits whatever a cancelled batch did not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from distillery.errors import UserError
from distillery.runstate import locked
from distillery.teacher.anthropic_api import ANTHROPIC_OFFICIAL
from distillery.teacher.backends import OPENAI_OFFICIAL, resolve_api_key
from distillery.teacher.batch_api import BatchAPI, batch_api
from distillery.teacher.batch_ledger import BatchRecord, Ledger, status_lines
from distillery.teacher.config import TeacherConfig
from distillery.teacher.types import TeacherError


def find_ledger(where: str | Path) -> Path:
    """The ledger directory that `where` names (see the module docstring)."""
    path = Path(where)
    for candidate in (path / "batches", path, path.with_name(path.name + ".run") / "batches"):
        if candidate.is_dir() and any(candidate.glob("b*.json")):
            return candidate
    raise UserError(f"{where}: no batch ledger there (expected {path / 'batches'}/b*.json)")


def _api(record: BatchRecord) -> BatchAPI:
    config = TeacherConfig(spec=record.spec, base_urls=[record.url], mode="batch")
    env = f"{config.backend.upper()}_API_KEY"
    custom = record.url.rstrip("/") not in (OPENAI_OFFICIAL, ANTHROPIC_OFFICIAL)
    return batch_api(config, record.url, resolve_api_key(config, env, custom))


async def _refresh(records: list[BatchRecord], ledger: Ledger, cancel: bool) -> list[str]:
    """Each open batch's state from its provider (cancelled first with `cancel`)."""
    notes = []
    for record in records:
        if not record.is_open or record.remote_id is None:
            continue
        api = _api(record)
        try:
            if cancel:
                notes.append(f"{record.local_id} ({record.remote_id}): {await api.cancel(record)}")
            remote = await api.retrieve(record)
            record.remote_status, record.counts = remote.status, remote.counts
            ledger.save(record)
        except TeacherError as exc:
            notes.append(f"{record.local_id} ({record.remote_id}): {exc}")
        finally:
            with contextlib.suppress(Exception):
                await api.aclose()
    return notes


def batches_status(where: str, offline: bool = False) -> int:
    ledger = Ledger(find_ledger(where))
    records = ledger.load()
    notes = [] if offline else asyncio.run(_refresh(records, ledger, cancel=False))
    print("\n".join([*notes, *status_lines(records)]))
    return 0


def batches_cancel(where: str) -> int:
    directory = find_ledger(where)
    run_dir = directory.parent if directory.name == "batches" else directory
    with locked(run_dir):  # no run may poll (and resubmit) them meanwhile
        ledger = Ledger(directory)
        records = ledger.load()
        notes = asyncio.run(_refresh(records, ledger, cancel=True))
    print("\n".join([*notes, *status_lines(records)]))
    print("re-running the command resubmits what the cancelled batches did not finish")
    return 0
