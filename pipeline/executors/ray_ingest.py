"""The filter's input read into Ray's object store, so the driver never holds the rows.

    blocks = ingest(ray, path, rows_per_block)

The driver reads the JSONL file `rows_per_block` lines at a time and puts each chunk of raw
bytes in the object store; a task per chunk parses it with the same code as
`filter.rows.read_rows` (`iter_json_lines`' checks, `to_record`) into one block: a pyarrow
table with the row's input line (`i`, the row's position: ascending, not dense) and the
record as JSON (`record`). What comes back to the driver per row is 17 bytes (line, a 64-bit
hash of the id, whether the id was given), from which it finds repeated ids; only the rows
whose ids repeat (or could collide with a renamed one) are fetched and given ids by the rule
`read_rows` applies one row at a time (a given id repeated is an error; a derived one gets
`-2`, `-3`, ...). Errors are `read_rows`' own: the first fatal line (bad UTF-8, malformed
JSON, not an object) stops everything; otherwise the first bad row is reported with how many
more there are. A `.json` array cannot be cut: it is read by `read_rows` on the driver.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from distillery.errors import UserError
from distillery.filter.rows import read_rows, to_record
from distillery.jsonl import loads_input, open_jsonl, validation_summary
from distillery.records import Record
from distillery.teacher.jobs import progress_bar
from pydantic import ValidationError

MAX_IN_FLIGHT = 8  # parse tasks submitted ahead of the results the driver has taken


def id_hash(rid: str) -> int:
    return int.from_bytes(hashlib.blake2b(rid.encode(), digest_size=8).digest(), "little")


@dataclass
class Blocks:
    """The rows in the object store: block refs in input order, each block's first line."""

    refs: list[Any] = field(default_factory=list)
    first_line: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def of_lines(self, lines: np.ndarray) -> np.ndarray:
        """The block holding each of `lines`."""
        return np.searchsorted(np.asarray(self.first_line), lines, side="right") - 1


def _table(lines: list[int], records: list[Record]) -> pa.Table:
    return pa.table(
        {
            "i": pa.array(lines, pa.int64()),
            "record": pa.array([r.model_dump_json() for r in records], pa.string()),
        }
    )


def parse_chunk(data: bytes, first_line: int, path: str) -> tuple[pa.Table, dict[str, Any]]:
    """One chunk of lines as a block, and what the driver needs: per row its line, id hash
    and whether the id was given; the first fatal error; the bad rows (first and count)."""
    lines: list[int] = []
    records: list[Record] = []
    given: list[bool] = []
    bad: list[tuple[int, str]] = []
    fatal: tuple[int, str] | None = None
    parts = data.split(b"\n")  # as a file iterates: on b"\n" only, each line keeps its end
    raws = [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    for lineno, raw in enumerate(raws, start=first_line):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            fatal = (lineno, f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x})")
            break
        if not line.strip():
            continue
        try:
            obj = loads_input(line)
        except json.JSONDecodeError as exc:
            fatal = (lineno, f"{where}: malformed JSON: {exc.msg} (column {exc.colno})")
            break
        except ValueError as exc:  # NaN, Infinity
            fatal = (lineno, f"{where}: malformed JSON: {exc}")
            break
        if not isinstance(obj, dict):
            fatal = (lineno, f"{where}: expected a JSON object, got {type(obj).__name__}")
            break
        try:
            records.append(to_record(obj, where))
        except ValidationError as exc:
            bad.append((lineno, f"{where}: {validation_summary(exc)}"))
            continue
        except ValueError as exc:
            bad.append((lineno, f"{where}: {exc}"))
            continue
        lines.append(lineno)
        given.append("id" in obj)
    meta = {
        "lines": np.asarray(lines, np.int64),
        "id_hash": np.asarray([id_hash(r.id) for r in records], np.uint64),
        "given": np.asarray(given, bool),
        "fatal": fatal,
        "bad": bad[:1],
        "n_bad": len(bad),
        "scores": np.asarray(
            [r.scores.get("judge", np.nan) for r in records], np.float64
        ),  # the survivor rule's first key
    }
    return _table(lines, records), meta


def _chunks(path: Path, rows_per_block: int) -> Iterator[tuple[bytes, int]]:
    """(raw lines, first line number), `rows_per_block` lines each."""
    with open_jsonl(path) as handle:
        line = 1
        while chunk := list(itertools.islice(handle, rows_per_block)):
            yield b"".join(chunk), line
            line += len(chunk)


@dataclass
class Ingested:
    blocks: Blocks
    lines: np.ndarray  # every row's line, ascending
    scores: np.ndarray  # every row's judge score from the input (nan: none)


def ingest(ray: Any, path: Path, rows_per_block: int) -> Ingested:
    """The rows of `path` as blocks in the object store (see the module docstring)."""
    if path.suffix == ".json":
        return _from_records(ray, read_rows(path), rows_per_block)
    parse = ray.remote(num_returns=2)(parse_chunk)
    blocks, metas, pending = Blocks(), [], []
    bar = progress_bar(path.stat().st_size if path.is_file() else 0, "B", "read")
    for data, first in _chunks(path, rows_per_block):
        block, meta = parse.remote(ray.put(data), first, str(path))
        blocks.refs.append(block)
        blocks.first_line.append(first)
        pending.append(meta)
        bar.update(len(data))
        if len(pending) >= MAX_IN_FLIGHT:
            metas.append(ray.get(pending.pop(0)))
    metas.extend(ray.get(pending))
    bar.close()
    fatal = [m["fatal"] for m in metas if m["fatal"] is not None]
    if fatal:
        raise UserError(min(fatal)[1])
    blocks.rows = [len(m["lines"]) for m in metas]
    lines = np.concatenate([m["lines"] for m in metas]) if metas else np.zeros(0, np.int64)
    hashes = np.concatenate([m["id_hash"] for m in metas]) if metas else np.zeros(0, np.uint64)
    given = np.concatenate([m["given"] for m in metas]) if metas else np.zeros(0, bool)
    bad = [b for m in metas for b in m["bad"]]
    n_bad = sum(m["n_bad"] for m in metas)
    renames, id_bad = _settle_ids(ray, blocks, lines, hashes, given, str(path))
    if bad or id_bad:
        first = min([*bad, *id_bad])[1]
        total = n_bad + len(id_bad)
        more = f" (and {total - 1} more bad rows)" if total > 1 else ""
        raise UserError(first + more)
    if not len(lines):
        raise UserError(f"{path}: no rows")
    if renames:
        _apply_renames(ray, blocks, renames)
    scores = np.concatenate([m["scores"] for m in metas])
    return Ingested(blocks, lines, scores)


def _from_records(ray: Any, rows: list[Record], rows_per_block: int) -> Ingested:
    """A JSON array, read whole by `read_rows`: positions are the rows' indices."""
    blocks = Blocks()
    for lo in range(0, len(rows), rows_per_block):
        part = rows[lo : lo + rows_per_block]
        blocks.refs.append(ray.put(_table(list(range(lo, lo + len(part))), part)))
        blocks.first_line.append(lo)
        blocks.rows.append(len(part))
    scores = np.asarray([r.scores.get("judge", np.nan) for r in rows], np.float64)
    return Ingested(blocks, np.arange(len(rows), dtype=np.int64), scores)


# -- ids -----------------------------------------------------------------------------------


def select_ids(block: pa.Table, lines: np.ndarray) -> list[tuple[int, str]]:
    """(line, id) of the block's rows at `lines`."""
    at = np.isin(block.column("i").to_numpy(), lines)
    picked = block.filter(pa.array(at))
    return [
        (i, Record.model_validate_json(raw).id)
        for i, raw in zip(
            picked.column("i").to_pylist(), picked.column("record").to_pylist(), strict=True
        )
    ]


def fetch_ids(ray: Any, blocks: Blocks, lines: np.ndarray) -> dict[int, str]:
    """The ids of the rows at `lines` (a few: the rows whose ids need a look)."""
    if not len(lines):
        return {}
    lines = np.sort(lines)
    owner = blocks.of_lines(lines)
    task = ray.remote(select_ids)
    refs = [task.remote(blocks.refs[b], lines[owner == b]) for b in np.unique(owner)]
    return {i: rid for part in ray.get(refs) for i, rid in part}


def _settle_ids(
    ray: Any, blocks: Blocks, lines: np.ndarray, hashes: np.ndarray, given: np.ndarray, path: str
) -> tuple[dict[int, str], list[tuple[int, str]]]:
    """`read_rows`' id rule on the rows whose ids repeat: ({line: new id}, [(line, error)])."""
    order = np.argsort(hashes, kind="stable")
    sorted_h = hashes[order]
    repeated = np.flatnonzero(sorted_h[1:] == sorted_h[:-1])
    involved_h = set(sorted_h[repeated].tolist())
    if not involved_h:
        return {}, []
    searched: set[int] = set()
    ids: dict[int, str] = {}
    while True:
        new = np.asarray(sorted(involved_h - searched), np.uint64)
        searched |= set(new.tolist())
        lo = np.searchsorted(sorted_h, new, side="left")
        hi = np.searchsorted(sorted_h, new, side="right")
        picked = [order[a:b] for a, b in zip(lo, hi, strict=True) if b > a]
        if picked:
            ids.update(fetch_ids(ray, blocks, lines[np.concatenate(picked)]))
        given_at = {i: bool(given[np.searchsorted(lines, i)]) for i in ids}  # the few involved
        renames, bad, asked = _simulate(ids, given_at, path)
        more = {id_hash(name) for name in asked} - searched
        if not more:
            return renames, bad
        involved_h |= more


def _simulate(
    ids: dict[int, str], given: dict[int, bool], path: str
) -> tuple[dict[int, str], list[tuple[int, str]], set[str]]:
    """`read_rows`' loop over the rows in `ids` (every row whose id matters), in line order;
    also every name it looked up (a row elsewhere with that id would matter too)."""
    seen: dict[str, str] = {}
    renames: dict[int, str] = {}
    bad: list[tuple[int, str]] = []
    asked: set[str] = set()
    for line in sorted(ids):
        rid, where = ids[line], f"{path}:{line}"
        asked.add(rid)
        if rid in seen:
            if given[line]:
                bad.append((line, f"{where}: duplicate id {rid!r} (first at {seen[rid]})"))
                continue
            n = 2
            while f"{rid}-{n}" in seen:
                asked.add(f"{rid}-{n}")
                n += 1
            asked.add(f"{rid}-{n}")
            rid = renames[line] = f"{rid}-{n}"
        seen[rid] = where
    return renames, bad, asked


def rename_block(block: pa.Table, renames: dict[int, str]) -> pa.Table:
    records = []
    for i, raw in zip(
        block.column("i").to_pylist(), block.column("record").to_pylist(), strict=True
    ):
        if i in renames:
            record = Record.model_validate_json(raw)
            raw = record.model_copy(update={"id": renames[i]}).model_dump_json()
        records.append(raw)
    return block.set_column(1, "record", pa.array(records, pa.string()))


def _apply_renames(ray: Any, blocks: Blocks, renames: dict[int, str]) -> None:
    lines = np.asarray(sorted(renames), np.int64)
    owner = blocks.of_lines(lines)
    task = ray.remote(rename_block)
    for b in np.unique(owner).tolist():
        mine = {int(i): renames[int(i)] for i in lines[owner == b]}
        blocks.refs[b] = task.remote(blocks.refs[b], mine)
