"""HTTP backends for OpenAI's API (and every OpenAI-compatible server); the pieces every
HTTP replica shares (the error taxonomy, the API key, one aiohttp session); Anthropic's
Messages API lives in `anthropic_api.py`.

Two transports per protocol (`teacher.transport`): `direct` posts JSON on one shared aiohttp
session and never imports an SDK; `sdk` goes through the official SDK with its own retries
switched off (`max_retries=0`). Either way retries, backoff and rate limits live in one
place, the engine, and errors are mapped onto `FatalError` / `RetryableError` /
`RateLimited` with the same messages.

The SDKs are imported by the replica that uses them, not here: importing `anthropic` alone
takes ~1.5 s on a 2-core machine, and a run needs at most one of them (bench/startup.py).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
from typing import Any, Protocol
from urllib.parse import urlsplit

from distillery.errors import UserError
from distillery.teacher.config import TeacherConfig
from distillery.teacher.types import (
    AuthFailed,
    ChatRequest,
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


class Replica(Protocol):
    url: str

    async def chat(self, request: ChatRequest, params: dict[str, Any]) -> RawCompletion: ...

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


RAW_PROMPT_BACKENDS = (
    "hf:MODEL, vllm:MODEL, or openai:MODEL at an OpenAI-compatible server that serves "
    "/v1/completions (teacher.base_urls or OPENAI_BASE_URL)"
)


def raw_prompt_problem(config: TeacherConfig) -> str | None:
    """Why `config`'s teacher cannot take a raw prompt (a text it continues, no chat template
    applied), in one line naming the backends that can; None when it can."""
    backend = config.backend
    official_openai = backend == "openai" and not (
        config.base_urls
        or (os.environ.get("OPENAI_BASE_URL") or OPENAI_OFFICIAL).rstrip("/") != OPENAI_OFFICIAL
    )
    if backend == "anthropic" or official_openai:
        api = "Anthropic's Messages API" if backend == "anthropic" else "OpenAI's API"
        return (
            f"teacher {config.spec}: {api} takes chat messages only, not a raw prompt to "
            f"continue (Magpie needs one); use a backend that can: {RAW_PROMPT_BACKENDS}"
        )
    return None


def refused_message(url: str) -> str:
    """`connection refused by HOST:PORT (URL)`: what a refused connection to `url` reports."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"connection refused by {host}:{port} ({url})"


def is_refused(exc: BaseException) -> bool:
    """Whether a connection refusal lies in `exc`'s chain of causes. SDKs and HTTP stacks wrap
    it (the SDKs' aiohttp transport even as a timeout), so the whole chain is walked."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, ConnectionRefusedError) or (
            isinstance(link, OSError) and link.errno == errno.ECONNREFUSED
        ):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def map_sdk_error(exc: Exception, url: str) -> Exception:
    """SDK exception -> our retry taxonomy. Messages never include request headers.
    Only SDKs already imported can have raised it, so none is imported here."""
    for sdk in filter(None, (sys.modules.get("openai"), sys.modules.get("anthropic"))):
        if isinstance(exc, sdk.RateLimitError):
            return RateLimited(f"429 from {url}", _retry_after(exc.response.headers))
        if isinstance(exc, sdk.APIConnectionError) and is_refused(exc):
            return RetryableError(refused_message(url))  # APITimeoutError included
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


def decode_body(raw_bytes: bytes, url: str) -> dict[str, Any]:
    """A 200 answer's JSON object; a `RetryableError` when the body is not one."""
    try:
        data = json.loads(raw_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RetryableError(f"malformed response body from {url}") from None
    if not isinstance(data, dict):
        raise RetryableError(f"malformed response body from {url}")
    return data


def http_client(sdk: Any, connections: int) -> Any:
    """The SDK's aiohttp transport (far less CPU per request at high concurrency than the
    default httpx/httpcore pool), with the connection pool sized to the concurrency."""
    import httpx2

    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return sdk.DefaultAioHttpClient(limits=limits)


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


def _raise_for_status(status: int, headers: Any, content: bytes, url: str) -> None:
    """A non-200 answer -> our retry taxonomy, as `map_sdk_error` maps the SDKs' errors."""
    if status == 200:
        return
    if status == 429:
        raise RateLimited(f"429 from {url}", _retry_after(headers))
    if status == 529:
        raise RateLimited(f"529 overloaded from {url}", _retry_after(headers))
    if status >= 500 or status in (408, 409):
        raise RetryableError(f"HTTP {status} from {url}")
    if status in (401, 403):
        raise AuthFailed(f"HTTP {status} from {url}: the API key was rejected")
    try:
        message = str(json.loads(content)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        message = content[:300].decode("utf-8", "replace")
    raise FatalError(f"HTTP {status} from {url}: {message}")


class _OpenAIProtocol:
    """What both OpenAI transports share: the server, the request body and the decoding of
    the answer. Subclasses send the body (`send`) and list the models (`list_models`)."""

    def __init__(self, config: TeacherConfig, url: str | None) -> None:
        self.url = url or os.environ.get("OPENAI_BASE_URL") or OPENAI_OFFICIAL
        self.model = config.model
        # the official API wants max_completion_tokens; compatible servers know max_tokens
        self.max_tokens_key = (
            "max_completion_tokens" if self.url.startswith(OPENAI_OFFICIAL) else "max_tokens"
        )

    def request_body(
        self, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": params["temperature"],
            "top_p": params["top_p"],
            self.max_tokens_key: params["max_tokens"],
        }
        if params.get("seed") is not None:
            body["seed"] = params["seed"]
        if params.get("stop"):
            body["stop"] = params["stop"]
        return body

    def completion_body(self, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
        """`/completions` body for a raw prompt. `skip_special_tokens: false` (vLLM's
        extension, ignored elsewhere) lets a stop text that is a special token, such as a
        chat template's end-of-turn `<|eot_id|>`, match where the model writes it."""
        body = self.request_body([], params)
        del body["messages"]
        body["prompt"] = prompt
        body["max_tokens"] = body.pop(self.max_tokens_key)
        body["skip_special_tokens"] = False
        return body

    async def send(self, body: dict[str, Any], path: str = "/chat/completions") -> bytes:
        raise NotImplementedError

    async def chat(self, request: ChatRequest, params: dict[str, Any]) -> RawCompletion:
        """A chat request to `/chat/completions`; a raw prompt (`request.prompt`) to
        `/completions`, its answer in `choices[0].text`."""
        if request.prompt is not None:
            body, path = self.completion_body(request.prompt, params), "/completions"
        else:
            body, path = self.request_body(request.messages, params), "/chat/completions"
        data = decode_body(await self.send(body, path), self.url)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") if path != "/completions" else choice["text"]
            text = text or ""
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
            what = "choices[0].text" if path == "/completions" else "choices[0].message"
            raise RetryableError(f"response from {self.url} lacks {what}") from None


async def sdk_models(client: Any, url: str) -> list[str] | None:
    """The model ids an `openai.AsyncOpenAI` client's server lists (None: it has no /models
    route, so the check is skipped); its API errors mapped as a request's are."""
    import openai

    try:
        page = await client.models.list()
    except openai.NotFoundError:
        return None
    except openai.APIError as exc:
        raise map_sdk_error(exc, url) from None
    return [m.id for m in page.data]


class OpenAIReplica(_OpenAIProtocol):
    """One OpenAI-compatible server through the SDK (`transport: sdk`). Requests go through
    `AsyncOpenAI.post` with a JSON body built here, on the SDK's aiohttp transport: the SDK
    still does auth, headers, timeouts and error mapping, but skips the per-request
    TypedDict transform and response-model construction of `chat.completions.create`,
    which cost more CPU than the rest of the request."""

    def __init__(self, config: TeacherConfig, url: str | None, api_key: str) -> None:
        import openai

        super().__init__(config, url)
        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=self.url,
            timeout=config.timeout_s,
            max_retries=0,
            http_client=http_client(openai, config.concurrency),
        )

    async def send(self, body: dict[str, Any], path: str = "/chat/completions") -> bytes:
        """POST `path` (/chat/completions, /completions) through the SDK; the raw body."""
        import httpx2
        import openai

        try:
            response = await self.client.post(path, cast_to=httpx2.Response, body=body)
        except openai.APIError as exc:
            raise map_sdk_error(exc, self.url) from None
        return response.content

    async def list_models(self) -> list[str] | None:
        return await sdk_models(self.client, self.url)

    async def aclose(self) -> None:
        await self.client.close()


class DirectSession:
    """One shared aiohttp session for a `transport: direct` replica: its headers (auth), the
    request timeout and a connection pool sized to the concurrency. Transport failures come
    out as `RetryableError`s: a refused connection as `refused_message`, never a timeout."""

    def __init__(self, url: str, headers: dict[str, str], config: TeacherConfig) -> None:
        self.url, self.headers = url, headers
        self.timeout_s, self.connections = config.timeout_s, config.concurrency
        self._session: Any = None  # aiohttp.ClientSession, opened on first use

    async def fetch(self, method: str, url: str, payload: bytes | None) -> tuple[int, Any, bytes]:
        """One HTTP exchange on the shared session: (status, headers, body)."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections),
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
        try:
            async with self._session.request(method, url, data=payload) as resp:
                return resp.status, resp.headers, await resp.read()
        except asyncio.TimeoutError:
            raise RetryableError(f"timeout talking to {self.url}") from None
        except aiohttp.ClientError as exc:
            if isinstance(exc, aiohttp.ClientConnectorError) and is_refused(exc.os_error):
                raise RetryableError(refused_message(self.url)) from None
            raise RetryableError(f"connection to {self.url} failed: {type(exc).__name__}") from None

    async def post_json(self, url: str, body: dict[str, Any]) -> bytes:
        """POST `body` as JSON; the answer's body, or the error `_raise_for_status` maps."""
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        status, headers, content = await self.fetch("POST", url, payload)
        _raise_for_status(status, headers, content, self.url)
        return content

    async def model_ids(self, url: str) -> list[str] | None:
        """GET a model list (`{"data": [{"id": ...}]}`, both protocols): the ids it lists, or
        None when the server has no such route."""
        status, headers, content = await self.fetch("GET", url, None)
        if status == 404:
            return None  # the server has no /models route: skip the check
        _raise_for_status(status, headers, content, self.url)
        try:
            return [str(m["id"]) for m in decode_body(content, self.url)["data"]]
        except (KeyError, TypeError):
            raise RetryableError(f"model list from {self.url} lacks data[].id") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class DirectOpenAIReplica(_OpenAIProtocol):
    """`transport: direct`: chat completions posted with one shared aiohttp session, the
    library under the SDK's own aiohttp transport, without the SDK's per-request request-model
    building (about 0.15 ms of CPU per request instead of 0.7 ms; see docs/benchmarks.md).
    Auth, org/project headers and the status-code taxonomy match the SDK path. The `openai`
    SDK is never imported on this path (0.5 s less start-up)."""

    def __init__(self, config: TeacherConfig, url: str | None, api_key: str) -> None:
        super().__init__(config, url)
        headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
        for env, header in (
            ("OPENAI_ORG_ID", "openai-organization"),
            ("OPENAI_PROJECT_ID", "openai-project"),
        ):
            if os.environ.get(env):
                headers[header] = os.environ[env]
        self.http = DirectSession(self.url, headers, config)

    async def send(self, body: dict[str, Any], path: str = "/chat/completions") -> bytes:
        return await self.http.post_json(self.url.rstrip("/") + path, body)

    async def list_models(self) -> list[str] | None:
        """GET /models: the ids it lists, or None when the server has no such route."""
        return await self.http.model_ids(self.url.rstrip("/") + "/models")

    async def aclose(self) -> None:
        await self.http.aclose()
