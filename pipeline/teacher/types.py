"""What goes into and comes out of a teacher call, and the errors a backend may raise."""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from distillery.records import LLMCall, TemplateRef, Usage
from pydantic import BaseModel

# The purpose of the request being sent (e.g. "evol:deepen"), for backends that script
# their answers by purpose: the `fake` teacher. Real backends never look at it.
CURRENT_PURPOSE: ContextVar[str] = ContextVar("CURRENT_PURPOSE", default="")


@dataclass
class ChatRequest:
    """Messages in OpenAI chat format plus per-request overrides of the teacher's params."""

    messages: list[dict[str, str]]
    params: dict[str, Any] = field(
        default_factory=dict
    )  # temperature, top_p, max_tokens, seed, stop
    schema: type[BaseModel] | None = None  # validate the answer as this JSON model
    purpose: str = ""  # what the call is for; travels into the trace
    template: TemplateRef | None = None
    cache_salt: str = ""  # distinguishes deliberate repeats of one prompt (n samples)


@dataclass
class RawCompletion:
    """What a backend returns for one successful HTTP exchange."""

    text: str
    finish_reason: str  # normalised: stop | length | other backend-specific value
    input_tokens: int
    output_tokens: int
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    """The outcome of one logical request after cache, limits and retries."""

    text: str | None
    finish_reason: str | None
    usage: Usage
    latency_s: float
    model: str
    status: str = "ok"  # ok | failed
    error: str | None = None
    parsed: BaseModel | None = None
    cached: bool = False
    attempts: int = 0
    trace: LLMCall | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class TeacherError(Exception):
    """Base of backend errors."""


class FatalError(TeacherError):
    """Retrying will not help: bad key, unknown model, invalid request."""


class AuthFailed(FatalError):
    """401/403: the key is missing or rejected; nothing else will work either."""


class RetryableError(TeacherError):
    """5xx, timeouts, dropped connections, malformed bodies."""


class RateLimited(RetryableError):
    """HTTP 429 (or 529 overloaded); `retry_after` from the server when it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CutOff(RetryableError):
    """finish_reason == length: the answer is incomplete."""

    def __init__(self, raw: RawCompletion) -> None:
        super().__init__("response cut off at max_tokens (finish_reason=length)")
        self.raw = raw


class InvalidOutput(RetryableError):
    """Structured output that fails validation."""

    def __init__(self, message: str, raw: RawCompletion) -> None:
        super().__init__(message)
        self.raw = raw


class EmptyContent(InvalidOutput):
    """A 200 reply whose message has no text (content null or empty): not an answer."""

    def __init__(self, raw: RawCompletion) -> None:
        reply = json.dumps(raw.raw, ensure_ascii=False)
        shown = reply if len(reply) <= 600 else reply[:600] + "..."
        super().__init__(
            f"empty_content: the reply has no text (finish_reason={raw.finish_reason}); "
            f"raw reply: {shown}",
            raw,
        )
