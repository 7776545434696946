"""Parsing what a teacher returns: the parsers of the LLM calls (`distillery.calls`). Every
parser either returns a value or raises `ParseFailure` with the reason; the caller records the
raw text - nothing is guessed. Neutral: used by every stage, imports none."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_NUMBERED = re.compile(
    r"^\s*(?:\*\*)?(?:task\s*)?(\d{1,3})\s*(?:[.):\]]|\s-)\s*(?:\*\*)?\s*(.*)$", re.I
)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.S)
_LABEL_PREFIX = re.compile(
    r"^\s*(?:#+\s*)?(?:\*\*)?(?:rewritten|new|created|evolved)\s+(?:prompt|instruction)(?:\*\*)?\s*:\s*(?:\*\*)?",
    re.I,
)
_TAGS = re.compile(r"^\s*<instruction>\s*|\s*</instruction>\s*$", re.I)


class ParseFailure(ValueError):
    """The teacher's text does not have the expected shape."""


def numbered_list(text: str, min_number: int = 1) -> list[str]:
    """Items of a numbered list (`9. ...`, `9) ...`, `Task 9: ...`, `**9.** ...`).

    A line that does not start a new item continues the previous one. Numbers below
    `min_number` (the in-context tasks echoed back) are dropped. Empty items are dropped.
    """
    items: list[tuple[int, list[str]]] = []
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match:
            items.append((int(match.group(1)), [match.group(2).strip()]))
        elif items and line.strip():
            items[-1][1].append(line.strip())
    out = [" ".join(parts).strip() for number, parts in items if number >= min_number]
    return [item for item in out if item]


def strip_fences(text: str) -> str:
    body = text.strip()
    match = _FENCE.match(body)
    return match.group(1).strip() if match else body


def json_object(text: str) -> dict[str, Any]:
    """The one JSON object in `text`, tolerating a code fence or prose around it."""
    body = strip_fences(text)
    for candidate in (body, body[body.find("{") : body.rfind("}") + 1]):
        if not candidate:
            continue
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ParseFailure("no JSON object found")


class GeneratedInstance(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str = ""
    output: str = Field(min_length=1)


class GeneratedTask(BaseModel):
    model_config = ConfigDict(extra="ignore")

    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)


def instances(text: str) -> list[GeneratedInstance]:
    data = json_object(text)
    raw = data.get("instances")
    if not isinstance(raw, list) or not raw:
        raise ParseFailure("expected a non-empty 'instances' list")
    out = []
    for item in raw:
        try:
            out.append(GeneratedInstance.model_validate(item))
        except ValidationError:
            continue
    if not out:
        raise ParseFailure("no instance has a non-empty 'output'")
    return out


def alpaca_tasks(text: str) -> list[GeneratedTask]:
    data = json_object(text)
    raw = data.get("tasks")
    if not isinstance(raw, list) or not raw:
        raise ParseFailure("expected a non-empty 'tasks' list")
    out = []
    for item in raw:
        try:
            out.append(GeneratedTask.model_validate(item))
        except ValidationError:
            continue
    if not out:
        raise ParseFailure("no task has an instruction and an output")
    return out


def yes_no(text: str) -> bool:
    word = re.sub(r"[^a-z]", "", text.strip().split()[0].lower()) if text.strip() else ""
    if word in ("yes", "no"):
        return word == "yes"
    raise ParseFailure(f"expected Yes or No, got {text.strip()[:40]!r}")


def equal_or_not(text: str) -> bool:
    """True for 'Equal', False for 'Not Equal' (checked first: it contains 'Equal')."""
    norm = " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())
    if norm.startswith("not equal"):
        return False
    if norm.startswith("equal"):
        return True
    raise ParseFailure(f"expected Equal or Not Equal, got {text.strip()[:40]!r}")


def evolved_prompt(text: str) -> str:
    """The rewritten prompt, without a stray label (`Rewritten Prompt:`) or wrapping tags."""
    body = strip_fences(text) if text.strip().startswith("```") else text.strip()
    body = _LABEL_PREFIX.sub("", body, count=1)
    body = _TAGS.sub("", body).strip()
    if not body:
        raise ParseFailure("empty rewritten prompt")
    return body
