"""What goes into and comes out of a teacher call, and the errors a backend may raise."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from distillery.records import LLMCall, TemplateRef, Usage
from pydantic import BaseModel, ConfigDict, model_validator


@dataclass(frozen=True)
class CallRef:
    """Which kind of LLM call a request is (`distillery.calls`) and the variables its template
    was rendered with. Sent with the request, so a scripted backend (the `fake` teacher)
    answers from the call's name and variables, never from the prompt's wording."""

    name: str  # the call's definition name, e.g. "evol_deepen"
    template: str | None = None  # its prompt file (`prompts/<template>.jinja`)
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatRequest:
    """Messages in OpenAI chat format plus per-request overrides of the teacher's params; or,
    with `prompt`, a raw text the model continues as it is (no chat template applied: sent to
    `/v1/completions`, or generated from by `hf:`); `messages` is then empty."""

    messages: list[dict[str, str]]
    params: dict[str, Any] = field(
        default_factory=dict
    )  # temperature, top_p, max_tokens, seed, stop
    purpose: str = ""  # what the call is for; travels into the trace
    template: TemplateRef | None = None
    cache_salt: str = ""  # distinguishes deliberate repeats of one prompt (n samples)
    call: CallRef | None = None  # the call's definition name and variables (`distillery.calls`)
    prompt: str | None = None  # a raw prompt (completion, not chat): `raw_prompt_problem`


@dataclass
class RawCompletion:
    """What a backend returns for one HTTP exchange (one attempt; also what the cache keeps)."""

    text: str
    finish_reason: str  # normalised: stop | length | other backend-specific value
    input_tokens: int
    output_tokens: int
    raw: dict[str, Any] = field(default_factory=dict)


class CallResult(BaseModel):
    """The outcome of one teacher call after cache, limits and retries - what `Teacher.complete`
    returns and what a job's journal holds, one line per item (`id`, `fingerprint`).

    `trace` is the call's record (request, parameters, raw answer - kept on failures too -,
    status, error, usage, latency), the same `LLMCall` a row keeps in its `trace` list.
    `text` is that raw answer whatever the status; `response` is it only for a success."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""  # the job item's id (set by `run_job`)
    fingerprint: str | None = None  # `Teacher.fingerprint` of the request (set by `run_job`)
    trace: LLMCall
    attempts: int = 0  # HTTP exchanges it took (1 for a cache hit)

    @model_validator(mode="before")
    @classmethod
    def _journal_v1(cls, data: Any) -> Any:
        """A journal line written before `CallResult` (a flat `JournalRow`): same call."""
        if isinstance(data, dict) and "status" in data and "trace" in data:
            keep = ("id", "fingerprint", "trace", "attempts")
            return {k: data[k] for k in keep if k in data}
        return data

    @property
    def ok(self) -> bool:
        return self.trace.status == "ok"

    @property
    def status(self) -> str:
        return self.trace.status

    @property
    def text(self) -> str | None:
        """The raw answer: a success's text, or the last raw text a failure got (a cut-off)."""
        return self.trace.response

    @property
    def response(self) -> str | None:
        """The answer of a successful call; None when it failed."""
        return self.trace.response if self.ok else None

    @property
    def finish_reason(self) -> str | None:
        return self.trace.finish_reason

    @property
    def error(self) -> str | None:
        return self.trace.error

    @property
    def usage(self) -> Usage:
        return self.trace.usage

    @property
    def model(self) -> str:
        return self.trace.model

    @property
    def cached(self) -> bool:
        return self.trace.cached

    @property
    def latency_s(self) -> float:
        return self.trace.latency_s


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
    """A reply that is not an answer (see `EmptyContent`); retried on `max_parse_retries`."""

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
