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
ORIGIN_RE = re.compile(r"^(seed|self_instruct|alpaca|magpie|external|evol:[a-z_]+)$")


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
    prompt: str | None = Field(
        None, description="the request of a raw-prompt call (the text continued; no messages)"
    )
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
    origin: str = Field(
        description="seed | self_instruct | alpaca | magpie | external | evol:<operation>"
    )
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
            raise ValueError(
                "must be seed, self_instruct, alpaca, magpie, external or evol:<operation>"
            )
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


def _message_list(value: object, where: str) -> list[Any]:
    from distillery.errors import UserError

    if not isinstance(value, list) or not value:
        raise UserError(
            f"{where}: field 'messages' must be a non-empty list of {{role, content}} (no 'messages' list)"
        )
    return value


def chat_messages(value: object, where: str) -> list[dict[str, str]]:
    """Validate an OpenAI-style `messages` list of {role, content} (a teacher request);
    errors name `where`. Training data goes through `training_messages` instead."""
    from distillery.errors import UserError

    clean = []
    for i, m in enumerate(_message_list(value, where)):
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


# Fields a chat template may render, per role, beside `role` and `content`. Anything else
# is an error: a field silently dropped is text the student never learns.
MESSAGE_FIELDS: dict[str, frozenset[str]] = {
    "system": frozenset({"name"}),
    "user": frozenset({"name"}),
    "assistant": frozenset({"name", "reasoning_content", "tool_calls"}),
    "tool": frozenset({"name", "tool_call_id"}),
}


def _tool_calls(value: object, at: str) -> list[dict[str, Any]]:
    """OpenAI `tool_calls`: [{"type": "function", "id"?, "function": {"name", "arguments"}}];
    arguments may be a JSON string or an object (templates render either)."""
    from distillery.errors import UserError

    shape = '[{"type": "function", "function": {"name": str, "arguments": str | object}}]'
    if not isinstance(value, list) or not value:
        raise UserError(f"{at} 'tool_calls' must be a non-empty list {shape}")
    calls = []
    for k, call in enumerate(value):
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not fn["name"]
            or not isinstance(fn.get("arguments"), (str, dict))
            or set(call) - {"type", "id", "function"}
            or call.get("type", "function") != "function"
            or not isinstance(call.get("id", ""), str)
        ):
            raise UserError(f"{at} tool_calls[{k}] must be like {shape} (optional str 'id')")
        clean: dict[str, Any] = {
            "type": "function",
            "function": {"name": fn["name"], "arguments": fn["arguments"]},
        }
        if call.get("id"):
            clean["id"] = call["id"]
        calls.append(clean)
    return calls


def training_message(m: object, at: str) -> dict[str, Any]:
    """One training message: role, content (str; an assistant turn with tool calls may have
    none) and the fields of MESSAGE_FIELDS for its role. A null or empty field is absent."""
    from distillery.errors import UserError

    if not isinstance(m, dict) or m.get("role") not in MESSAGE_FIELDS:
        raise UserError(
            f'{at} must be {{"role": system|user|assistant|tool, "content": str, ...}} '
            "(unknown role)"
        )
    role = m["role"]
    present = {k: v for k, v in m.items() if v not in (None, "", [])}
    unknown = sorted(set(present) - {"role", "content"} - MESSAGE_FIELDS[role])
    if unknown:
        allowed = ", ".join(sorted(MESSAGE_FIELDS[role])) or "none"
        raise UserError(
            f"{at} has field {unknown[0]!r}, which distillery does not pass to chat templates "
            f"(a {role} message may have: content, {allowed}); remove it or rename it"
        )
    content = m.get("content")
    if content is None and "tool_calls" in present:
        content = ""
    if not isinstance(content, str):
        raise UserError(f"{at} 'content' must be a string (no text content)")
    clean: dict[str, Any] = {"role": role, "content": content}
    for key in sorted(set(present) - {"role", "content"}):
        if key == "tool_calls":
            clean[key] = _tool_calls(present[key], at)
        elif not isinstance(present[key], str):
            raise UserError(f"{at} {key!r} must be a string")
        else:
            clean[key] = present[key]
    return clean


def training_messages(value: object, where: str) -> list[dict[str, Any]]:
    """Validate a training conversation: OpenAI-style messages with the fields chat
    templates render (tool calls, tool results, reasoning, names); errors name `where`."""
    return [
        training_message(m, f"{where}: messages[{i}]")
        for i, m in enumerate(_message_list(value, where))
    ]
