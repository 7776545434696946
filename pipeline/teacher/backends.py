"""HTTP backends: the OpenAI API (and every OpenAI-compatible server) and Anthropic's.

Both use the official SDKs with their own retries switched off (`max_retries=0`): retries,
backoff and rate limits live in one place, the engine. Responses are read through
`with_raw_response` and decoded once, which keeps per-request overhead low; SDK errors
are mapped onto `FatalError` / `RetryableError` / `RateLimited`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol, cast

import anthropic
import openai

from pipeline.errors import UserError
from pipeline.teacher.config import TeacherConfig
from pipeline.teacher.types import (
    AuthFailed,
    FatalError,
    RateLimited,
    RawCompletion,
    RetryableError,
)

OPENAI_OFFICIAL = "https://api.openai.com/v1"
OPENAI_FINISH = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
}
ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "refusal",
}


class Replica(Protocol):
    url: str

    async def chat(
        self, messages: list[dict[str, str]], params: dict[str, Any], schema: dict[str, Any] | None
    ) -> RawCompletion: ...

    async def list_models(self) -> list[str] | None: ...

    async def aclose(self) -> None: ...


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) / scale
            except ValueError:
                continue
    return None


def map_sdk_error(exc: Exception, url: str) -> Exception:
    """SDK exception -> our retry taxonomy. Messages never include request headers."""
    for sdk in (openai, anthropic):
        if isinstance(exc, sdk.RateLimitError):
            return RateLimited(f"429 from {url}", _retry_after(exc.response.headers))
        if isinstance(exc, sdk.APITimeoutError):
            return RetryableError(f"timeout talking to {url}")
        if isinstance(exc, sdk.APIConnectionError):
            return RetryableError(
                f"connection to {url} failed: {type(exc.__cause__ or exc).__name__}"
            )
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            if status == 529:
                return RateLimited(f"529 overloaded from {url}", _retry_after(exc.response.headers))
            if status >= 500 or status in (408, 409):
                return RetryableError(f"HTTP {status} from {url}")
            if status in (401, 403):
                return AuthFailed(f"HTTP {status} from {url}: the API key was rejected")
            return FatalError(f"HTTP {status} from {url}: {_short(exc)}")
    return exc


def _short(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(exc).splitlines()[0][:300]


def _decode(raw_bytes: bytes, url: str) -> dict[str, Any]:
    try:
        data = json.loads(raw_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RetryableError(f"malformed response body from {url}") from None
    if not isinstance(data, dict):
        raise RetryableError(f"malformed response body from {url}")
    return data


def resolve_api_key(config: TeacherConfig, default_env: str, custom_url: bool) -> str:
    env = config.api_key_env or default_env
    key = os.environ.get(env)
    if key:
        return key
    if custom_url:
        return "not-needed"  # local servers (vLLM, llama.cpp, ...) usually take no key
    raise UserError(
        f"teacher {config.spec}: no API key: set {env} in the environment "
        f"(or teacher.api_key_env to the variable that holds it)"
    )


class OpenAIReplica:
    def __init__(self, config: TeacherConfig, url: str | None, api_key: str) -> None:
        self.url = url or os.environ.get("OPENAI_BASE_URL") or OPENAI_OFFICIAL
        self.model = config.model
        http = openai.DefaultAsyncHttpxClient(
            limits=openai._base_client.httpx2.Limits(
                max_connections=config.concurrency, max_keepalive_connections=config.concurrency
            )
        )
        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=self.url,
            timeout=config.timeout_s,
            max_retries=0,
            http_client=http,
        )
        # the official API wants max_completion_tokens; compatible servers know max_tokens
        self.max_tokens_key = (
            "max_completion_tokens" if self.url.startswith(OPENAI_OFFICIAL) else "max_tokens"
        )

    async def chat(
        self, messages: list[dict[str, str]], params: dict[str, Any], schema: dict[str, Any] | None
    ) -> RawCompletion:
        body: dict[str, Any] = {
            "temperature": params["temperature"],
            "top_p": params["top_p"],
            self.max_tokens_key: params["max_tokens"],
        }
        if params.get("seed") is not None:
            body["seed"] = params["seed"]
        if params.get("stop"):
            body["stop"] = params["stop"]
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.get("title", "output"), "schema": schema},
            }
        try:
            response = await self.client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=cast(Any, messages),
                **body,
            )
        except (openai.APIError, anthropic.APIError) as exc:
            raise map_sdk_error(exc, self.url) from None
        data = _decode(response.http_response.content, self.url)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
            return RawCompletion(
                text=text,
                finish_reason=OPENAI_FINISH.get(
                    choice.get("finish_reason") or "", str(choice.get("finish_reason"))
                ),
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                raw=data,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise RetryableError(f"response from {self.url} lacks choices[0].message") from None

    async def list_models(self) -> list[str] | None:
        try:
            page = await self.client.models.list()
        except openai.NotFoundError:
            return None  # the server has no /models route: skip the check
        except openai.APIError as exc:
            raise map_sdk_error(exc, self.url) from None
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        await self.client.close()


class AnthropicReplica:
    def __init__(self, config: TeacherConfig, url: str | None, api_key: str) -> None:
        self.url = url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
        self.model = config.model
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self.url, timeout=config.timeout_s, max_retries=0
        )

    async def chat(
        self, messages: list[dict[str, str]], params: dict[str, Any], schema: dict[str, Any] | None
    ) -> RawCompletion:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [
            {"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"
        ]
        # anthropic>=2 exposes no sampling parameters (temperature, top_p) on messages.create:
        # they are not sent, and the API has no seed either.
        body: dict[str, Any] = {"max_tokens": params["max_tokens"]}
        if system:
            body["system"] = system
        if params.get("stop"):
            body["stop_sequences"] = params["stop"]
        try:
            response = await self.client.messages.with_raw_response.create(
                model=self.model,
                messages=cast(Any, turns),
                **body,
            )
        except anthropic.APIError as exc:
            raise map_sdk_error(exc, self.url) from None
        data = _decode(response.http_response.content, self.url)
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

    async def list_models(self) -> list[str] | None:
        try:
            page = await self.client.models.list(limit=1000)
        except anthropic.NotFoundError:
            return None
        except anthropic.APIError as exc:
            raise map_sdk_error(exc, self.url) from None
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        await self.client.close()
