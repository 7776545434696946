"""A loopback LLM server speaking the OpenAI and Anthropic HTTP protocols, with faults on demand.

Used by the tests, the benchmarks and the offline demo to drive the real `openai` and
`anthropic` SDKs without a network. It is a small asyncio HTTP/1.1 server (keep-alive, no
dependencies) so that it stays cheap enough to run beside the client on a 2-core machine.

Routes: `GET /v1/models`, `GET /health`, `POST /v1/chat/completions` (OpenAI),
`POST /v1/messages` (Anthropic), `POST /_control` (change behaviour), `GET /_stats`.

Answers are deterministic: `echo: <last user message>` (cut to `max_tokens` words, with
`finish_reason=length`, like a real server). Faults:
- globally, with `fault_rate` and `fault_kinds` (random, seeded), or a `script` queue
  applied to the next requests in order;
- per item, when a message contains `[[fault:KIND]]` or `[[fault:KIND:N]]` (the first N
  sends of that exact request fail, default 1) - independent of scheduling order.
KIND is one of 429, 500, 503, timeout, drop, malformed, length.

Run standalone: `python -m distillery.teacher.mockserver --port 8011 --latency 0.2`.
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
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("429", "500", "503", "timeout", "drop", "malformed", "length")
_ITEM_FAULT = re.compile(r"\[\[fault:([a-z0-9]+)(?::(\d+))?\]\]")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Behaviour:
    latency_s: float = 0.0
    fault_rate: float = 0.0
    fault_kinds: list[str] = field(
        default_factory=lambda: ["429", "500", "503", "drop", "malformed"]
    )
    script: list[str] = field(default_factory=list)
    retry_after_s: float = 0.05
    hang_s: float = 30.0
    models: list[str] = field(default_factory=lambda: ["mock-model"])
    api_key: str | None = None
    seed: int = 0


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    per_item: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "faults": dict(self.faults),
            "per_item": dict(self.per_item),
        }


def item_key(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


class MockLLMServer:
    """`async with MockLLMServer() as srv:` or `srv.start_in_thread()`; `srv.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **behaviour: Any) -> None:
        self.host, self.port = host, port
        self.behaviour = Behaviour(**behaviour)
        self.stats = Stats()
        self._rng = random.Random(self.behaviour.seed)
        self._item_faults: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> MockLLMServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def __aenter__(self) -> MockLLMServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> MockLLMServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop_thread(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def configure(self, **changes: Any) -> None:
        for key, value in changes.items():
            if not hasattr(self.behaviour, key):
                raise KeyError(key)
            setattr(self.behaviour, key, value)
        self._rng = random.Random(self.behaviour.seed)

    # -- HTTP ------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                keep = await self._route(method, path.split("?")[0], headers, body, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    def _send(
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        extra: dict[str, str] | None = None,
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "content-type: application/json",
            f"content-length: {len(payload)}",
            "connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    def _error(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
        kind: str,
        extra: dict[str, str] | None = None,
    ) -> bool:
        body = {"type": "error", "error": {"message": message, "type": kind, "code": status}}
        self._send(writer, status, json.dumps(body).encode(), extra)
        return True

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if not path.startswith("/_"):
            self.stats.requests[path] += 1
        b = self.behaviour
        if path == "/health":
            self._send(writer, 200, b"{}")
            return True
        if path == "/_stats":
            self._send(writer, 200, json.dumps(self.stats.as_dict()).encode())
            return True
        if path == "/_control" and method == "POST":
            self.configure(**json.loads(body))
            self._send(writer, 200, b"{}")
            return True
        if b.api_key is not None:
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            if given != b.api_key:
                return self._error(writer, 401, "invalid api key", "authentication_error")
        if path == "/v1/models" and method == "GET":
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
                for m in b.models
            ]
            self._send(
                writer,
                200,
                json.dumps({"object": "list", "data": data, "has_more": False}).encode(),
            )
            return True
        if method == "POST" and path in ("/v1/chat/completions", "/v1/messages"):
            return await self._chat(path == "/v1/messages", body, writer)
        return self._error(writer, 404, f"no route {method} {path}", "not_found_error")

    def _pick_fault(self, messages: list[dict[str, Any]], key: str) -> str | None:
        b = self.behaviour
        text = json.dumps(messages)
        match = _ITEM_FAULT.search(text)
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

    async def _chat(self, anthropic: bool, body: bytes, writer: asyncio.StreamWriter) -> bool:
        b = self.behaviour
        try:
            req = json.loads(body)
        except json.JSONDecodeError:
            return self._error(writer, 400, "request body is not JSON", "invalid_request_error")
        model = req.get("model")
        if model not in b.models:
            return self._error(writer, 404, f"model {model!r} not found", "not_found_error")
        messages = req.get("messages", [])
        key = item_key(messages)
        self.stats.per_item[key] += 1
        fault = self._pick_fault(messages, key)
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        if fault:
            self.stats.faults[fault] += 1
        if fault == "429":
            return self._error(
                writer,
                429,
                "rate limited",
                "rate_limit_error",
                {"retry-after": f"{b.retry_after_s:g}"},
            )
        if fault in ("500", "503"):
            return self._error(writer, int(fault), "server error", "api_error")
        if fault == "timeout":
            await asyncio.sleep(b.hang_s)
            return False
        if fault == "drop":
            return False
        if fault == "malformed":
            payload = (
                b'{"id": "cmpl-x", "object": "chat.completion", "choices": [{"index": 0, "mess'
            )
            self._send(writer, 200, payload)
            return True
        last_user: dict[str, Any] = next(
            (m for m in reversed(messages) if m.get("role") == "user"), {}
        )
        content = last_user.get("content", "")
        if isinstance(content, list):  # Anthropic content blocks
            content = " ".join(part.get("text", "") for part in content)
        words = f"echo: {content}".split()
        system = (
            req.get("system")
            if anthropic
            else next((m["content"] for m in messages if m.get("role") == "system"), None)
        )
        if system and "[[show-system]]" in content:
            words = f"system: {system}".split()
        max_tokens = int(req.get("max_tokens") or req.get("max_completion_tokens") or 4096)
        finish = "stop"
        if len(words) > max_tokens or fault == "length":
            words, finish = words[: max(1, min(max_tokens, len(words) - 1))], "length"
        text = " ".join(words)
        in_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        if anthropic:
            resp: dict[str, Any] = {
                "id": f"msg_{key}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if finish == "length" else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": in_tokens, "output_tokens": len(words)},
            }
        else:
            resp = {
                "id": f"chatcmpl-{key}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": finish,
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {
                    "prompt_tokens": in_tokens,
                    "completion_tokens": len(words),
                    "total_tokens": in_tokens + len(words),
                },
            }
        self._send(writer, 200, json.dumps(resp).encode())
        return True


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

    async def serve() -> None:
        srv = MockLLMServer(
            args.host,
            args.port,
            latency_s=args.latency,
            fault_rate=args.fault_rate,
            models=args.model or ["mock-model"],
            api_key=args.api_key,
        )
        await srv.start()
        print(f"listening on {srv.base_url}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
