"""A loopback LLM server speaking the OpenAI and Anthropic HTTP protocols, with faults on demand.

Used by the tests and the teacher benchmark to drive the real `openai` and `anthropic` SDKs
(and the engine's direct aiohttp path) without a network. Built on `aiohttp.web`.

Routes: `GET /v1/models`, `GET /health`, `POST /v1/chat/completions` (OpenAI),
`POST /v1/completions` (raw prompts, as vLLM serves them), `POST /v1/messages` (Anthropic),
`POST /_control` (change behaviour), `GET /_stats`.

A raw prompt is answered with `completions` (set it with `configure`), cycled, or else
`echo: <the prompt's last line>`; the answer is cut at the first of the request's `stop`
texts, like a real server. `/_stats` lists every raw prompt received (`prompts`), in order.

Answers are deterministic: `echo: <last user message>` (cut to `max_tokens` words, with
`finish_reason=length`, like a real server); `system: <system prompt>` when the user message
contains `[[show-system]]`. Faults:
- globally, with `fault_rate` and `fault_kinds` (random, seeded), or a `script` queue
  applied to the next requests in order;
- per item, when a message contains `[[fault:KIND]]` or `[[fault:KIND:N]]` (the first N
  sends of that exact request fail, default 1) - independent of scheduling order.
KIND is one of 429, 500, 503, 529, timeout, drop, malformed, length: 429 and 529 (Anthropic's
`overloaded_error`) carry `retry-after`; timeout holds the request `hang_s` seconds then
closes the connection; drop closes it at once; malformed answers 200 with a truncated JSON
body.

The Anthropic route checks the protocol as the real API does: a request without an
`anthropic-version` header, or with a `system` role among its messages (the system prompt is
a top-level field there), is a 400. `/_stats` also shows the last value of a few request
headers per route (`headers`), to check what a client sent.

Run standalone, from the repository root (prints `listening on URL`):
`python -m tests.helpers.mockserver --port 8011 --latency 0.2`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAULT_KINDS = ("429", "500", "503", "529", "timeout", "drop", "malformed", "length")
SEEN_HEADERS = ("anthropic-version", "x-api-key", "authorization")
_ITEM_FAULT = re.compile(r"\[\[fault:([a-z0-9]+)(?::(\d+))?\]\]")
_MALFORMED = b'{"id": "cmpl-x", "object": "chat.completion", "choices": [{"index": 0, "mess'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Behaviour:
    """What the server does; every field can be changed live with `configure` or `/_control`."""

    latency_s: float = 0.0  # added before every chat answer
    fault_rate: float = 0.0  # share of chat requests that get a random fault from fault_kinds
    fault_kinds: list[str] = field(
        default_factory=lambda: ["429", "500", "503", "drop", "malformed"]
    )
    script: list[str] = field(default_factory=list)  # faults for the next requests ("" = none)
    retry_after_s: float = 0.05  # the 429's retry-after header
    hang_s: float = 30.0  # how long a `timeout` fault holds the request
    models: list[str] = field(default_factory=lambda: ["mock-model"])
    api_key: str | None = None  # when set, requests must carry it (bearer or x-api-key)
    seed: int = 0
    completions: list[str] = field(default_factory=list)  # raw-prompt answers, cycled


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)  # per path, control routes aside
    faults: Counter[str] = field(default_factory=Counter)  # per fault kind
    per_item: Counter[str] = field(default_factory=Counter)  # chat sends per item_key
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> SEEN_HEADERS
    prompts: list[str] = field(default_factory=list)  # raw prompts (/v1/completions), in order
    in_flight: int = 0  # chat requests inside their latency wait now
    max_in_flight: int = 0  # the most there ever were at once (a client's concurrency cap)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "faults": dict(self.faults),
            "per_item": dict(self.per_item),
            "headers": self.headers,
            "prompts": self.prompts,
            "max_in_flight": self.max_in_flight,
        }


def item_key(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def _error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"type": "error", "error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status, headers=headers)


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the client sees a disconnect)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()  # never written: the transport is closed


def _anthropic_problem(request: web.Request, messages: list[dict[str, Any]]) -> str | None:
    """What the Messages API would reject in this request (a 400), or None."""
    if "anthropic-version" not in request.headers:
        return "anthropic-version: header is required"
    roles = {m.get("role") for m in messages}
    if not roles <= {"user", "assistant"}:
        return f"messages: unexpected role {sorted(roles - {'user', 'assistant'})}"
    return None


def _user_text(messages: list[dict[str, Any]]) -> str:
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content", "")
    if isinstance(content, list):  # Anthropic content blocks
        content = " ".join(part.get("text", "") for part in content)
    return str(content)


def _answer_words(
    req: dict[str, Any], anthropic: bool, messages: list[dict[str, Any]]
) -> list[str]:
    content = _user_text(messages)
    system = (
        req.get("system")
        if anthropic
        else next((m["content"] for m in messages if m.get("role") == "system"), None)
    )
    if system and "[[show-system]]" in content:
        return f"system: {system}".split()
    return f"echo: {content}".split()


def _body(
    anthropic: bool, key: str, model: str, text: str, finish: str, tokens: tuple[int, int]
) -> dict[str, Any]:
    """The protocol's response object for one answer; tokens = (input, output)."""
    if anthropic:
        return {
            "id": f"msg_{key}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if finish == "length" else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
        }
    return {
        "id": f"chatcmpl-{key}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}
        ],
        "usage": {
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "total_tokens": sum(tokens),
        },
    }


class MockLLMServer:
    """`async with MockLLMServer() as srv:` or `srv.start_in_thread()`; `srv.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **behaviour: Any) -> None:
        self.host, self.port = host, port
        self.behaviour = Behaviour(**behaviour)
        self.stats = Stats()
        self._rng = random.Random(self.behaviour.seed)
        self._item_faults: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # more routes, added before the catch-all (tests/helpers/batchserver.py: batch APIs)
        self.extensions: list[Callable[[web.Application], None]] = []

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> MockLLMServer:
        # batch inputs (tests/helpers/batchserver.py) are larger than aiohttp's 1 MB default
        app = web.Application(middlewares=[self._count_and_auth], client_max_size=1 << 30)
        app.router.add_get("/health", self._health)
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/_control", self._control)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_post("/v1/messages", self._chat)
        for extend in self.extensions:
            extend(app)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()  # ends the requests a `timeout` fault is holding
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MockLLMServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> MockLLMServer:
        """Serve from a daemon thread with its own event loop (for synchronous tests)."""
        self._loop = asyncio.new_event_loop()
        ready = asyncio.run_coroutine_threadsafe(self.start(), self._loop)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        ready.result(10)
        return self

    def stop_thread(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def configure(self, **changes: Any) -> None:
        for key, value in changes.items():
            if not hasattr(self.behaviour, key):
                raise KeyError(key)
            setattr(self.behaviour, key, value)
        self._rng = random.Random(self.behaviour.seed)

    # -- routes ----------------------------------------------------------------------
    @web.middleware
    async def _count_and_auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        control = request.path.startswith("/_")
        if not control:
            self.stats.requests[request.path] += 1
            seen = {h: request.headers[h] for h in SEEN_HEADERS if h in request.headers}
            self.stats.headers[request.path] = seen
        key = self.behaviour.api_key
        if key is not None and not control and request.path != "/health":
            headers = request.headers
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            if given != key:
                return _error(401, "invalid api key", "authentication_error")
        return await handler(request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _control(self, request: web.Request) -> web.Response:
        try:
            self.configure(**await request.json())
        except KeyError as exc:
            return _error(400, f"unknown behaviour {exc}", "invalid_request_error")
        return web.json_response({})

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": m,
                "object": "model",
                "type": "model",
                "owned_by": "mock",
                "created": 0,
                "display_name": m,
                "created_at": "2024-01-01T00:00:00Z",
            }
            for m in self.behaviour.models
        ]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def _not_found(self, request: web.Request) -> web.Response:
        return _error(404, f"no route {request.method} {request.path}", "not_found_error")

    # -- chat ------------------------------------------------------------------------
    def _pick_fault(self, messages: list[dict[str, Any]], key: str) -> str | None:
        b = self.behaviour
        match = _ITEM_FAULT.search(json.dumps(messages))
        if match:
            times = int(match.group(2) or 1)
            if self._item_faults[key] < times:
                self._item_faults[key] += 1
                return match.group(1)
        if b.script:
            return b.script.pop(0) or None
        if b.fault_rate and self._rng.random() < b.fault_rate:
            return self._rng.choice(b.fault_kinds)
        return None

    async def _chat(self, request: web.Request) -> web.Response:
        """Both chat routes: validate, maybe fault, else answer in the route's protocol."""
        b = self.behaviour
        try:
            req = json.loads(await request.read())
        except json.JSONDecodeError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        model = req.get("model")
        if model not in b.models:
            return _error(404, f"model {model!r} not found", "not_found_error")
        messages = req.get("messages", [])
        anthropic = request.path == "/v1/messages"
        if anthropic:
            problem = _anthropic_problem(request, messages)
            if problem:
                return _error(400, problem, "invalid_request_error")
        key = item_key(messages)
        self.stats.per_item[key] += 1
        fault = self._pick_fault(messages, key)
        if b.latency_s:
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
            try:
                await asyncio.sleep(b.latency_s)
            finally:
                self.stats.in_flight -= 1
        if fault:
            self.stats.faults[fault] += 1
        if fault is not None and fault != "length":
            return await self._fault(request, fault)
        words = _answer_words(req, anthropic, messages)
        max_tokens = int(req.get("max_tokens") or req.get("max_completion_tokens") or 4096)
        finish = "stop"
        if len(words) > max_tokens or fault == "length":
            words, finish = words[: max(1, min(max_tokens, len(words) - 1))], "length"
        in_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        body = _body(anthropic, key, model, " ".join(words), finish, (in_tokens, len(words)))
        return web.json_response(body)

    async def _completion(self, request: web.Request) -> web.Response:
        """A raw prompt (`prompt`, a string): recorded, maybe faulted, answered as a
        text completion (`choices[0].text`), cut at `stop` and at `max_tokens` words."""
        b = self.behaviour
        try:
            req = json.loads(await request.read())
        except json.JSONDecodeError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        prompt, model = req.get("prompt"), req.get("model")
        if model not in b.models:
            return _error(404, f"model {model!r} not found", "not_found_error")
        if not isinstance(prompt, str):
            return _error(400, "prompt must be a string", "invalid_request_error")
        self.stats.prompts.append(prompt)
        key = item_key([{"prompt": prompt}])
        self.stats.per_item[key] += 1
        fault = self._pick_fault([{"content": prompt}], key)
        if fault is not None:
            self.stats.faults[fault] += 1
            if fault != "length":
                return await self._fault(request, fault)
        n = len(self.stats.prompts) - 1
        lines = prompt.strip().splitlines() or [""]
        text = b.completions[n % len(b.completions)] if b.completions else f"echo: {lines[-1]}"
        stops = [s for s in req.get("stop") or [] if s in text]
        finish = "stop"
        if stops:
            text = text[: min(text.find(s) for s in stops)]
        words = text.split(" ")
        max_tokens = int(req.get("max_tokens") or 4096)
        if len(words) > max_tokens or fault == "length":
            text, finish = " ".join(words[: max(1, min(max_tokens, len(words) - 1))]), "length"
        body = {
            "id": f"cmpl-{key}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": len(text.split()),
                "total_tokens": len(prompt.split()) + len(text.split()),
            },
        }
        return web.json_response(body)

    async def _fault(self, request: web.Request, fault: str) -> web.Response:
        b = self.behaviour
        if fault == "429":
            retry = {"retry-after": f"{b.retry_after_s:g}"}
            return _error(429, "rate limited", "rate_limit_error", retry)
        if fault in ("500", "503"):
            return _error(int(fault), "server error", "api_error")
        if fault == "529":
            retry = {"retry-after": f"{b.retry_after_s:g}"}
            return _error(529, "Overloaded", "overloaded_error", retry)
        if fault == "malformed":
            return web.Response(body=_MALFORMED, content_type="application/json")
        if fault == "timeout" and self._closing is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), b.hang_s)
        return _drop(request)  # drop, and a timeout once it has hung


def serve_until_interrupted(build: Callable[[], MockLLMServer]) -> None:
    """Start the server `build` makes (inside the event loop), print `listening on URL` and
    serve until Ctrl-C: the body of this module's and `batchserver`'s `main`."""

    async def serve() -> None:
        srv = build()
        await srv.start()
        print(f"listening on {srv.base_url}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()

    serve_until_interrupted(
        lambda: MockLLMServer(
            args.host,
            args.port,
            latency_s=args.latency,
            fault_rate=args.fault_rate,
            models=args.model or ["mock-model"],
            api_key=args.api_key,
        )
    )


if __name__ == "__main__":
    main()
