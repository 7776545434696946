"""Anthropic's Messages API (`anthropic:MODEL`), over either transport (`teacher.transport`).

    POST {base}/v1/messages   x-api-key, anthropic-version, JSON body:
        {"model", "max_tokens", "messages": [{"role": "user"|"assistant", "content"}],
         "system"?, "stop_sequences"?}
    200 -> {"content": [{"type": "text", "text"}, ...], "stop_reason", "usage":
            {"input_tokens", "output_tokens"}}
    errors -> {"type": "error", "error": {"type", "message"}}; 429 and 529 (overloaded)
            carry `retry-after`

`direct` (the default) posts that body on one aiohttp session and never imports the SDK,
which alone takes ~1.5 s to import; `sdk` sends the same body through
`anthropic.AsyncAnthropic`. Both build the body and read the answer here, so they send the
same request, get the same `RawCompletion` and map errors alike (`backends`). System
messages become the top-level `system` field; the text blocks of the answer are joined;
`stop_reason: max_tokens` is a cut-off (`length`). The SDK (anthropic>=2) takes no sampling
parameters (temperature, top_p) and the API has no seed, so neither transport sends them.
"""

from __future__ import annotations

import os
from typing import Any

from distillery.teacher.backends import DirectSession, decode_body, map_sdk_error
from distillery.teacher.config import TeacherConfig
from distillery.teacher.types import ChatRequest, RawCompletion, RetryableError

ANTHROPIC_OFFICIAL = "https://api.anthropic.com"
# The API version both transports ask for: the one the `anthropic` SDK in use sends (2.14),
# so that `direct` and `sdk` talk to the same API (tests/test_teacher_engine.py compares them).
ANTHROPIC_VERSION = "2026-10-21"
ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",  # cut off by the context window: a cut-off too
    "refusal": "refusal",
}


class _AnthropicProtocol:
    """What both Anthropic transports share: the server, the request body and the decoding
    of the answer. Subclasses send the body (`send`) and list the models (`list_models`)."""

    def __init__(self, config: TeacherConfig, url: str | None) -> None:
        self.url = url or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_OFFICIAL
        self.model = config.model

    def request_body(
        self, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> dict[str, Any]:
        """OpenAI-style `messages` as a Messages API body: system turns joined into `system`."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [
            {"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"
        ]
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params["max_tokens"],
            "messages": turns,
        }
        if system:
            body["system"] = system
        if params.get("stop"):
            body["stop_sequences"] = params["stop"]
        return body

    def decode(self, content: bytes) -> RawCompletion:
        """A 200 body -> its text blocks joined, the normalised stop reason and the usage."""
        data = decode_body(content, self.url)
        try:
            text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
            usage = data.get("usage") or {}
            reason = data.get("stop_reason") or ""
            return RawCompletion(
                text=text,
                finish_reason=ANTHROPIC_FINISH.get(reason, reason),
                input_tokens=int(usage.get("input_tokens") or 0),
                output_tokens=int(usage.get("output_tokens") or 0),
                raw=data,
            )
        except (KeyError, TypeError, AttributeError, ValueError):
            raise RetryableError(f"response from {self.url} lacks content blocks") from None

    async def send(self, body: dict[str, Any]) -> bytes:
        raise NotImplementedError

    async def chat(self, request: ChatRequest, params: dict[str, Any]) -> RawCompletion:
        return self.decode(await self.send(self.request_body(request.messages, params)))


class DirectAnthropicReplica(_AnthropicProtocol):
    """`transport: direct`: the Messages API on one shared aiohttp session (`DirectSession`),
    with the headers the SDK sends (x-api-key, anthropic-version). No SDK import."""

    def __init__(self, config: TeacherConfig, url: str | None, api_key: str) -> None:
        super().__init__(config, url)
        self.base = self.url.rstrip("/")
        headers = {
            "x-api-key": api_key,
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
        }
        self.http = DirectSession(self.url, headers, config)

    async def send(self, body: dict[str, Any]) -> bytes:
        return await self.http.post_json(self.base + "/v1/messages", body)

    async def list_models(self) -> list[str] | None:
        """GET /v1/models: the ids it lists, or None when the server has no such route."""
        return await self.http.model_ids(self.base + "/v1/models?limit=1000")

    async def aclose(self) -> None:
        await self.http.aclose()


async def sdk_models(client: Any, url: str) -> list[str] | None:
    """The model ids an `anthropic.AsyncAnthropic` client's server lists (None: it has no
    models route); its API errors mapped as a request's are (`map_sdk_error`)."""
    import anthropic

    try:
        page = await client.models.list(limit=1000)
    except anthropic.NotFoundError:
        return None
    except anthropic.APIError as exc:
        raise map_sdk_error(exc, url) from None
    return [m.id for m in page.data]


class AnthropicReplica(_AnthropicProtocol):
    """`transport: sdk`: the same body through `anthropic.AsyncAnthropic` (its retries off),
    read raw (`with_raw_response`) and decoded here."""

    def __init__(self, config: TeacherConfig, url: str | None, api_key: str) -> None:
        import anthropic

        super().__init__(config, url)
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self.url, timeout=config.timeout_s, max_retries=0
        )

    async def send(self, body: dict[str, Any]) -> bytes:
        import anthropic

        try:
            response = await self.client.messages.with_raw_response.create(**body)
        except anthropic.APIError as exc:
            raise map_sdk_error(exc, self.url) from None
        return bytes(response.http_response.content)

    async def list_models(self) -> list[str] | None:
        return await sdk_models(self.client, self.url)

    async def aclose(self) -> None:
        await self.client.close()
