"""Reading rows to filter: distillery records, Alpaca rows (`instruction`, `input`,
`output`/`response`) or `messages` rows, as JSONL or a JSON array. Every bad row is reported
with its line (or index); none is dropped silently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.jsonl import iter_json_lines, loads_input, read_text_utf8, validation_summary
from distillery.prompts import render
from distillery.records import Message, Record, content_id
from pydantic import ValidationError


def _objects(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if path.suffix == ".json":
        try:
            data = loads_input(read_text_utf8(path))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        except ValueError as exc:  # NaN, Infinity
            raise UserError(f"{path}: malformed JSON: {exc}") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON array of rows")
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise UserError(f"{path}[{i}]: expected a JSON object")
            yield f"{path}[{i}]", obj
    else:
        for lineno, obj in iter_json_lines(path):
            yield f"{path}:{lineno}", obj


def to_record(obj: dict[str, Any], where: str) -> Record:
    """One input row as a `Record`; raises ValueError naming what is wrong."""
    if "origin" in obj and "messages" in obj:
        return Record.model_validate(obj)
    if isinstance(obj.get("messages"), list):
        messages = [Message.model_validate(m) for m in obj["messages"]]
        first_user = next((m.content for m in messages if m.role == "user"), "")
        rid = str(
            obj.get("id") or content_id("external", json.dumps(obj["messages"], sort_keys=True))
        )
        return Record(
            id=rid,
            instruction=first_user,
            messages=messages,
            origin="external",
            meta={"source": where},
        )
    instruction = obj.get("instruction")
    answer = obj.get("output", obj.get("response"))
    if isinstance(instruction, str) and isinstance(answer, str):
        inp = obj.get("input") or ""
        if not isinstance(inp, str):
            raise ValueError("field 'input' must be a string")
        user = render("user_turn", instruction=instruction, input=inp).text
        rid = str(obj.get("id") or content_id("external", instruction, inp, answer))
        return Record(
            id=rid,
            instruction=instruction,
            input=inp,
            origin="external",
            messages=[
                Message(role="user", content=user),
                Message(role="assistant", content=answer),
            ],
            meta={"source": where},
        )
    raise ValueError(
        "no text field: expected 'messages', or 'instruction' with 'output' or 'response'"
    )


def read_rows(path: str | Path) -> list[Record]:
    path = Path(path)
    rows: list[Record] = []
    bad: list[str] = []
    seen: dict[str, str] = {}
    for where, obj in _objects(path):
        try:
            record = to_record(obj, where)
        except ValidationError as exc:
            bad.append(f"{where}: {validation_summary(exc)}")
            continue
        except ValueError as exc:
            bad.append(f"{where}: {exc}")
            continue
        if record.id in seen:
            if "id" in obj:
                bad.append(f"{where}: duplicate id {record.id!r} (first at {seen[record.id]})")
                continue
            n = 2  # a repeated row without an id: keep it (dedup decides), give it a distinct id
            while f"{record.id}-{n}" in seen:
                n += 1
            record = record.model_copy(update={"id": f"{record.id}-{n}"})
        seen[record.id] = where
        rows.append(record)
    if bad:
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise UserError(bad[0] + more)
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def response_of(record: Record) -> str:
    return record.response or ""


def turns(record: Record) -> list[tuple[str, str]]:
    """(user, assistant) per user turn, in order; the system turn is left out and an
    unanswered last user turn has assistant "". A single-turn row has one."""
    pairs: list[tuple[str, str]] = []
    for m in record.messages:
        if m.role == "user":
            pairs.append((m.content, ""))
        elif m.role == "assistant" and pairs:
            pairs[-1] = (pairs[-1][0], m.content)
    return pairs


def is_multi_turn(record: Record) -> bool:
    """More than one user turn: the filter checks such a row turn by turn."""
    return sum(m.role == "user" for m in record.messages) > 1


def conversation_text(record: Record) -> str:
    """Every user and assistant turn in order, one per line (the system turn left out): what
    the whole-conversation dedup compares."""
    return "\n".join(m.content for m in record.messages if m.role != "system")


def text_of(record: Record, fields: str) -> str:
    """The first user turn ("instruction"), or it and its answer ("instruction+response"; the
    last assistant turn of a single-turn row, the first one of a conversation)."""
    pairs = turns(record)
    user = pairs[0][0] if pairs else record.instruction
    if fields == "instruction":
        return user
    answer = pairs[0][1] if len(pairs) > 1 else response_of(record)
    return f"{user}\n{answer}"
