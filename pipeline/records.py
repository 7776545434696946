"""The record schema: what flows between generate, filter, train and eval.

A `Record` is one (instruction, response) example with everything needed to know how it
came to be: its conversation, origin and lineage (parents, evolution round), the teacher
and prompt template that produced it, token usage and cost, judge scores, the filter
decision that dropped it (with evidence), and a trace of every LLM call behind it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant"]
ORIGIN_RE = re.compile(r"^(seed|self_instruct|alpaca|external|evol:[a-z_]+)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(Strict):
    """One chat turn, in the OpenAI/TRL conversational format."""

    role: Role
    content: str


class Usage(Strict):
    """Tokens and dollars; summed over the calls behind a row."""

    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class TemplateRef(Strict):
    """Which prompt file produced a text: its name and the SHA-256 of its source."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class LLMCall(Strict):
    """The trace of one teacher call: enough to audit or replay it."""

    model: str = Field(description="teacher spec, e.g. 'openai:gpt-4o-mini'")
    purpose: str = Field("", description="what the call was for, e.g. 'evol:deepen'")
    template: TemplateRef | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="generation parameters sent")
    messages: list[Message] = Field(default_factory=list, description="the request")
    response: str | None = Field(None, description="raw text returned (kept on failures too)")
    finish_reason: str | None = None
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = Field(0.0, ge=0)
    cached: bool = False


class Drop(Strict):
    """Why a filter removed a row, with the evidence (e.g. the most similar row and its score)."""

    rule: str
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)


class Record(Strict):
    """One example. `messages` is the training conversation; the rest is provenance."""

    id: str = Field(min_length=1)
    instruction: str
    input: str = ""
    messages: list[Message] = Field(min_length=1)
    origin: str = Field(description="seed | self_instruct | alpaca | external | evol:<operation>")
    parent_ids: list[str] = Field(default_factory=list)
    round: int = Field(0, ge=0, description="evolution round; 0 for non-evolved rows")
    category: str | None = None
    teacher: str | None = None
    template: TemplateRef | None = None
    usage: Usage = Field(default_factory=Usage)
    scores: dict[str, float] = Field(default_factory=dict)
    dropped_by: Drop | None = None
    trace: list[LLMCall] = Field(default_factory=list)
    demo: bool = Field(False, description="made by the scripted `fake` teacher: not real data")
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("origin")
    @classmethod
    def _check_origin(cls, value: str) -> str:
        if not ORIGIN_RE.match(value):
            raise ValueError("must be seed, self_instruct, alpaca, external or evol:<operation>")
        return value

    @model_validator(mode="after")
    def _check_conversation(self) -> Record:
        roles = [m.role for m in self.messages]
        body = roles[1:] if roles[0] == "system" else roles
        if not body or body[0] != "user":
            raise ValueError("messages must start with a user turn (after an optional system turn)")
        if "system" in body:
            raise ValueError("a system message may only come first")
        for prev, cur in itertools.pairwise(body):
            if prev == cur:
                raise ValueError("user and assistant turns must alternate")
        return self

    @property
    def response(self) -> str | None:
        """The last assistant turn, if any."""
        for message in reversed(self.messages):
            if message.role == "assistant":
                return message.content
        return None


def content_id(*parts: str) -> str:
    """A stable 16-hex-digit id from content, so re-running a job yields the same ids."""
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()
    return digest[:16]


def chat_messages(value: object, where: str) -> list[dict[str, str]]:
    """Validate an OpenAI-style `messages` list from input data; errors name `where`."""
    from distillery.errors import UserError

    if not isinstance(value, list) or not value:
        raise UserError(
            f"{where}: field 'messages' must be a non-empty list of {{role, content}} (no 'messages' list)"
        )
    clean = []
    for i, m in enumerate(value):
        if (
            not isinstance(m, dict)
            or m.get("role") not in ("system", "user", "assistant")
            or not isinstance(m.get("content"), str)
        ):
            raise UserError(
                f'{where}: messages[{i}] must be {{"role": system|user|assistant, "content": str}} '
                "(unknown role or no text content)"
            )
        clean.append({"role": m["role"], "content": m["content"]})
    return clean
