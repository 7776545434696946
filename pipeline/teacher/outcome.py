"""What a teacher call comes to: counters per client and per role, the parsed answer, and
the `Completion` (with its trace) handed back to the caller.

`Stats` counts what a `Teacher` client did: requests actually sent, what they cost, and the
answers served without sending (from the cache, or shared by an identical request in
flight). A client shared by several roles keeps one `Stats` per role beside its total, so a
role's numbers are its own calls only and the roles of one client add up to its total.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Any

from distillery.records import LLMCall, Message, Usage
from distillery.teacher.types import ChatRequest, Completion
from pydantic import BaseModel, ValidationError

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n```\s*$", re.S)


@dataclass
class Stats:
    sent: int = 0  # HTTP requests sent (every attempt)
    retries: int = 0
    failed: int = 0  # requests that failed after all retries
    cache_hits: int = 0
    deduplicated: int = 0  # served by an identical request already in flight (not sent)
    spent_usd: float = 0.0  # what the sent requests cost; cached or shared answers cost nothing
    input_tokens: int = 0  # of the sent requests
    output_tokens: int = 0

    def add(self, **counts: float) -> None:
        for name, n in counts.items():
            setattr(self, name, getattr(self, name) + n)


class RoleStats:
    """A client's `total` and the same counters per role (the `role` its callers name)."""

    def __init__(self) -> None:
        self.total = Stats()
        self.roles: dict[str, Stats] = {}

    def add(self, role: str, **counts: float) -> None:
        self.total.add(**counts)
        if role:
            self.roles.setdefault(role, Stats()).add(**counts)

    def of(self, role: str) -> Stats:
        """The counters of `role`'s calls only (zeros when it sent nothing)."""
        return self.roles.get(role, Stats())


def parse_structured(text: str, schema: type[BaseModel]) -> BaseModel:
    """Validate `text` as `schema`, tolerating a code fence or prose around one JSON object."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        return schema.model_validate_json(body)
    except ValidationError as first:
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return schema.model_validate_json(body[start : end + 1])
            except ValidationError:
                pass
        raise first


def completion(
    spec: str,
    request: ChatRequest,
    params: dict[str, Any],
    text: str | None,
    finish: str | None,
    usage: Usage,
    started: float,
    **outcome: Any,
) -> Completion:
    """The `Completion` of `request` with its trace; `outcome`: status, error, parsed, cached,
    attempts (the `Completion` fields)."""
    latency = time.monotonic() - started
    status = outcome.get("status", "ok")
    trace = LLMCall(
        model=spec,
        purpose=request.purpose,
        template=request.template,
        params=params,
        messages=[Message.model_validate(m) for m in request.messages],
        response=text,
        finish_reason=finish,
        status="ok" if status == "ok" else "failed",
        error=outcome.get("error"),
        usage=usage,
        latency_s=latency,
        cached=outcome.get("cached", False),
    )
    return Completion(
        text=text,
        finish_reason=finish,
        usage=usage,
        latency_s=latency,
        model=spec,
        trace=trace,
        **outcome,
    )


def shared(answer: Completion, request: ChatRequest) -> Completion:
    """An in-flight twin's answer for `request`: same text and usage, sent once (`cached`);
    the trace names this request's own purpose and template."""
    trace = answer.trace
    if trace is not None:
        update = {"purpose": request.purpose, "template": request.template, "cached": True}
        trace = trace.model_copy(update=update)
    return dataclasses.replace(answer, cached=True, trace=trace)
