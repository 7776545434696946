"""What a teacher call comes to: counters per client and per role, and the `CallResult`
(with its trace) handed back to the caller.

`Stats` counts what a `Teacher` client did: requests actually sent, what they cost, and the
answers served without sending (from the cache, or shared by an identical request in
flight). A client shared by several roles keeps one `Stats` per role beside its total, so a
role's numbers are its own calls only and the roles of one client add up to its total.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from distillery.records import LLMCall, Message, Usage
from distillery.teacher.types import CallResult, ChatRequest

# what every stage records per invocation and adds up over a run's invocations
COUNTERS = (
    "requests_sent", "cache_hits", "deduplicated", "retries", "failed",
    "input_tokens", "output_tokens", "spent_usd",
)  # fmt: skip


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

    def counters(self) -> dict[str, float]:
        """The counters under the names manifests, summaries and `invocations.jsonl` use
        (`COUNTERS`), dollars rounded to the micro-dollar."""
        values = {**asdict(self), "requests_sent": self.sent, "spent_usd": round(self.spent_usd, 6)}
        return {name: values[name] for name in COUNTERS}


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


def completion(
    spec: str,
    request: ChatRequest,
    params: dict[str, Any],
    text: str | None,
    finish: str | None,
    usage: Usage,
    started: float,
    *,
    status: str = "ok",
    error: str | None = None,
    cached: bool = False,
    attempts: int = 0,
) -> CallResult:
    """The `CallResult` of `request`: its trace (`text` is the raw answer, kept on failures
    too) and the number of attempts."""
    trace = LLMCall(
        model=spec,
        purpose=request.purpose,
        template=request.template,
        params=params,
        messages=[Message.model_validate(m) for m in request.messages],
        prompt=request.prompt,
        response=text,
        finish_reason=finish,
        status="ok" if status == "ok" else "failed",
        error=error,
        usage=usage,
        latency_s=time.monotonic() - started,
        cached=cached,
    )
    return CallResult(trace=trace, attempts=attempts)


def shared(answer: CallResult, request: ChatRequest) -> CallResult:
    """An in-flight twin's answer for `request`: same text and usage, sent once (`cached`);
    the trace names this request's own purpose and template."""
    update = {"purpose": request.purpose, "template": request.template, "cached": True}
    return answer.model_copy(update={"trace": answer.trace.model_copy(update=update)})
