"""The OpenAI Batch API and Anthropic's Message Batches on a `MockLLMServer`, with faults.

    srv = MockLLMServer()
    batches = BatchAPIs(srv)          # adds the routes; call before srv.start*()

OpenAI: `POST /v1/files` (multipart, purpose=batch), `GET /v1/files/{id}/content`,
`POST /v1/batches`, `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`.
Anthropic: `POST /v1/messages/batches`, `GET /v1/messages/batches[/{id}]`,
`GET /v1/messages/batches/{id}/results`, `POST /v1/messages/batches/{id}/cancel`.

A batch ends after `polls_to_end` retrieves; its items are answered as the chat routes answer
them (`echo: <last user message>`). Results are JSONL in the protocol's own shapes. Faults:
- `script`: one entry per created batch, in order ("" = none): `validation` (OpenAI: the
  batch fails validation, nothing answered), `expire_half` (expires with the first half of
  its items answered, the rest `batch_expired` / `expired`), `error_lines:K` (its first K
  items get a 500 error line), `shuffle` (result lines in reverse order), `duplicate` (the
  first result line twice), `create_lost` (created, but the create call answers 500),
  `unknown_id` (an extra line for a custom id nobody submitted), `torn_last` (the last result
  line cut in half);
- `poll_faults`: for the next retrieves in order: `500` or `drop` (connection closed);
  `list_faults`: `500` for the next list calls;
- per item: a message containing `[[batch-invalid]]` gets a 400 `invalid_request_error`;
- `hang`: the upload, create or results download is done but never answered (`reached`
  counts them), for a client killed at that point.
`submitted` counts how many times each custom id was submitted, `per_item` the same per
message content (`mockserver.item_key`), `uploaded_bytes` the bytes of every input.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.helpers.mockserver import (
    MockLLMServer,
    _answer_words,
    _body,
    _drop,
    _error,
    item_key,
    serve_until_interrupted,
)


@dataclass
class Batch:
    id: str
    provider: str
    items: list[tuple[str, dict[str, Any]]]  # (custom_id, request body)
    fault: str = ""
    status: str = "validating"
    retrieves: int = 0
    created_at: float = field(default_factory=time.time)
    input_file_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    results: list[bytes] = field(default_factory=list)  # Anthropic's results lines
    errors: list[dict[str, Any]] = field(default_factory=list)  # OpenAI validation errors
    cancelled: bool = False
    kinds: Counter[str] = field(default_factory=Counter)  # Anthropic: result types, at the end


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def answer(body: dict[str, Any], anthropic: bool, key: str) -> dict[str, Any]:
    """The chat routes' answer to one request body (same text, finish reason and usage)."""
    messages = body.get("messages", [])
    words = _answer_words(body, anthropic, messages)
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 4096)
    finish = "stop"
    if len(words) > max_tokens:
        words, finish = words[: max(1, max_tokens)], "length"
    n_in = sum(len(str(m.get("content", "")).split()) for m in messages)
    return _body(anthropic, key, body.get("model", ""), " ".join(words), finish, (n_in, len(words)))


class BatchAPIs:
    def __init__(self, server: MockLLMServer, polls_to_end: int = 2) -> None:
        self.server = server
        self.polls_to_end = polls_to_end
        self.script: list[str] = []
        self.poll_faults: list[str] = []
        self.list_faults: list[str] = []  # for the next list calls: "500"
        self.batches: dict[str, Batch] = {}
        self.files: dict[str, bytes] = {}
        self.submitted: Counter[str] = Counter()
        self.per_item: Counter[str] = Counter()
        self.uploaded_bytes = 0
        self.retrieves = 0
        self.hang: set[str] = set()  # "upload" / "create" / "results": done, never answered
        self.reached: Counter[str] = Counter()  # how often each of those points was reached
        server.extensions.append(self._routes)

    async def _point(self, point: str) -> None:
        """The work of `point` is done; with `point` in `hang` its answer never comes."""
        self.reached[point] += 1
        if point in self.hang:
            await asyncio.sleep(3600)

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/files", self._upload)
        r.add_get("/v1/files/{id}/content", self._file)
        r.add_post("/v1/batches", self._openai_create)
        r.add_get("/v1/batches", self._list)
        r.add_get("/v1/batches/{id}", self._retrieve)
        r.add_post("/v1/batches/{id}/cancel", self._cancel)
        r.add_post("/v1/messages/batches", self._anthropic_create)
        r.add_get("/v1/messages/batches", self._list)
        r.add_get("/v1/messages/batches/{id}", self._retrieve)
        r.add_get("/v1/messages/batches/{id}/results", self._results)
        r.add_post("/v1/messages/batches/{id}/cancel", self._cancel)

    # -- creation ------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        data = upload.file.read()  # type: ignore[union-attr]
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = data
        self.uploaded_bytes += len(data)
        obj = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": getattr(upload, "filename", "input.jsonl"), "purpose": form.get("purpose"),
               "status": "processed"}  # fmt: skip
        await self._point("upload")
        return web.json_response(obj)

    async def _file(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["id"])
        if data is None:
            return _error(404, "no such file", "not_found_error")
        await self._point("results")
        return web.Response(body=data, content_type="application/octet-stream")

    def _new(self, provider: str, items: list[tuple[str, dict[str, Any]]]) -> Batch:
        prefix = "batch_" if provider == "openai" else "msgbatch_"
        batch = Batch(f"{prefix}{len(self.batches) + 1}", provider, items)
        batch.fault = self.script.pop(0) if self.script else ""
        self.batches[batch.id] = batch
        for custom_id, body in items:
            self.submitted[custom_id] += 1
            self.per_item[item_key(body.get("messages", []))] += 1
        return batch

    async def _openai_create(self, request: web.Request) -> web.Response:
        req = await request.json()
        data = self.files.get(req.get("input_file_id", ""))
        if data is None:
            return _error(400, "input_file_id: no such file", "invalid_request_error")
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        batch = self._new("openai", [(r["custom_id"], r["body"]) for r in rows])
        batch.input_file_id, batch.metadata = req["input_file_id"], req.get("metadata") or {}
        if batch.fault == "create_lost":
            return _error(500, "server error", "api_error")
        await self._point("create")
        return web.json_response(self._openai_obj(batch))

    async def _anthropic_create(self, request: web.Request) -> web.Response:
        req = await request.json()
        raw = await request.read()
        self.uploaded_bytes += len(raw)
        batch = self._new("anthropic", [(r["custom_id"], r["params"]) for r in req["requests"]])
        batch.status = "in_progress"
        if batch.fault == "create_lost":
            return _error(500, "server error", "api_error")
        await self._point("create")
        return web.json_response(self._anthropic_obj(batch, request))

    # -- polling -------------------------------------------------------------------------
    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch", "not_found_error")
        self.retrieves += 1
        fault = self.poll_faults.pop(0) if self.poll_faults else ""
        if fault == "drop":
            return _drop(request)
        if fault == "500":
            return _error(500, "server error", "api_error")
        batch.retrieves += 1
        if batch.retrieves >= self.polls_to_end and not self._ended(batch):
            self._end(batch)
        elif batch.provider == "openai" and batch.status == "validating":
            batch.status = "in_progress"
        return web.json_response(self._obj(batch, request))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "no such batch", "not_found_error")
        if not self._ended(batch):
            batch.cancelled = True
            batch.status = "cancelling" if batch.provider == "openai" else "canceling"
        return web.json_response(self._obj(batch, request))

    async def _list(self, request: web.Request) -> web.Response:
        if self.list_faults and self.list_faults.pop(0) == "500":
            return _error(500, "server error", "api_error")
        provider = "anthropic" if "messages" in request.path else "openai"
        data = [self._obj(b, request) for b in self.batches.values() if b.provider == provider]
        data.reverse()  # newest first, as both APIs list; pages of `limit` after a cursor
        after = request.query.get("after") or request.query.get("after_id")
        if after:
            data = data[[d["id"] for d in data].index(after) + 1 :]
        limit = int(request.query.get("limit") or 20)
        more, data = len(data) > limit, data[:limit]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        body = {
            "object": "list",
            "data": data,
            "has_more": more,
            "first_id": first,
            "last_id": last,
        }
        return web.json_response(body)

    async def _results(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.status != "ended":
            return _error(404, "no results", "not_found_error")
        await self._point("results")
        return web.Response(body=b"".join(batch.results), content_type="application/binary")

    # -- ending --------------------------------------------------------------------------
    @staticmethod
    def _ended(batch: Batch) -> bool:
        return batch.status in ("completed", "failed", "expired", "cancelled", "ended")

    def _end(self, batch: Batch) -> None:
        """The batch's results, as its fault and items say."""
        fault, n = batch.fault, len(batch.items)
        if fault == "validation" and batch.provider == "openai":
            batch.status = "failed"
            batch.errors = [{"code": "invalid_file", "message": "mock validation failure", "line": None, "param": None}]  # fmt: skip
            return
        answered: list[bytes] = []
        failed: list[bytes] = []
        bad = int(fault.partition(":")[2] or 0) if fault.startswith("error_lines") else 0
        for i, (custom_id, body) in enumerate(batch.items):
            if batch.cancelled:
                kind = "cancelled"
            elif "[[batch-invalid]]" in json.dumps(body.get("messages")):
                kind = "invalid"
            elif fault == "expire_half" and i >= n // 2:
                kind = "expired"
            else:
                kind = "error" if i < bad else "ok"
            line = self._line(batch, custom_id, body, kind)
            if line is not None:
                (answered if kind == "ok" else failed).append(line)
        if fault == "shuffle":
            answered.reverse()
        if fault == "duplicate" and answered:  # a second line for the first id, saying
            answered.append(answered[0].replace(b"echo: ", b"DUPLICATE "))  # something else
        if fault == "unknown_id" and answered:  # a line for an id nobody submitted
            answered.insert(0, answered[0].replace(batch.items[0][0].encode(), b"not-ours"))
        batch.kinds = Counter(json.loads(line)["result"]["type"] for line in answered + failed) if batch.provider == "anthropic" else Counter()  # fmt: skip
        if fault == "torn_last" and answered:  # the last line cut in half, no newline
            answered[-1] = answered[-1][: len(answered[-1]) // 2]
        if batch.provider == "anthropic":
            batch.status, batch.results = "ended", answered + failed
            return
        batch.status = (
            "cancelled" if batch.cancelled else "expired" if fault == "expire_half" else "completed"
        )
        for lines, attr in ((answered, "output_file_id"), (failed, "error_file_id")):
            if lines:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = b"".join(lines)
                setattr(batch, attr, file_id)

    def _line(self, batch: Batch, custom_id: str, body: dict[str, Any], kind: str) -> bytes | None:
        anthropic = batch.provider == "anthropic"
        key = item_key(body.get("messages", []))
        if anthropic:
            result: dict[str, Any]
            if kind == "ok":
                result = {"type": "succeeded", "message": answer(body, True, key)}
            elif kind in ("invalid", "error"):
                err = "invalid_request_error" if kind == "invalid" else "api_error"
                result = {"type": "errored", "error": {"type": "error", "error": {"type": err, "message": f"mock {err}"}}}  # fmt: skip
            else:
                result = {"type": "canceled" if kind == "cancelled" else "expired"}
            return json.dumps({"custom_id": custom_id, "result": result}).encode() + b"\n"
        row: dict[str, Any] = {"id": f"batch_req_{key}", "custom_id": custom_id, "response": None, "error": None}  # fmt: skip
        if kind == "ok":
            row["response"] = {
                "status_code": 200,
                "request_id": key,
                "body": answer(body, False, key),
            }
        elif kind in ("invalid", "error"):
            status = 400 if kind == "invalid" else 500
            error = {"message": f"mock {kind}", "type": "invalid_request_error" if status == 400 else "server_error"}  # fmt: skip
            row["response"] = {"status_code": status, "request_id": key, "body": {"error": error}}
        elif kind == "expired":
            row["error"] = {"code": "batch_expired", "message": "not executed within the window"}
        else:
            return None  # a cancelled batch: unprocessed items get no line at all
        return json.dumps(row).encode() + b"\n"

    # -- objects -------------------------------------------------------------------------
    def _obj(self, batch: Batch, request: web.Request) -> dict[str, Any]:
        if batch.provider == "openai":
            return self._openai_obj(batch)
        return self._anthropic_obj(batch, request)

    def _openai_obj(self, batch: Batch) -> dict[str, Any]:
        done = self._ended(batch) and batch.status != "failed"
        n = len(batch.items)
        ok = sum(1 for line in self._file_lines(batch.output_file_id))
        return {
            "id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions",
            "input_file_id": batch.input_file_id, "completion_window": "24h",
            "status": batch.status, "created_at": int(batch.created_at),
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "request_counts": {"total": n, "completed": ok if done else 0, "failed": n - ok if done else 0},
            "metadata": batch.metadata,
        }  # fmt: skip

    def _file_lines(self, file_id: str | None) -> list[bytes]:
        return self.files.get(file_id or "", b"").splitlines()

    def _anthropic_obj(self, batch: Batch, request: web.Request) -> dict[str, Any]:
        ended = batch.status == "ended"
        counts = batch.kinds
        base = str(request.url.origin())
        return {
            "id": batch.id, "type": "message_batch", "processing_status": batch.status,
            "request_counts": {
                "processing": 0 if ended else len(batch.items), "succeeded": counts["succeeded"],
                "errored": counts["errored"], "canceled": counts["canceled"], "expired": counts["expired"],
            },
            "created_at": _iso(batch.created_at), "expires_at": _iso(batch.created_at + 86400),
            "ended_at": _iso(time.time()) if ended else None, "archived_at": None,
            "cancel_initiated_at": _iso(time.time()) if batch.cancelled else None,
            "results_url": f"{base}/v1/messages/batches/{batch.id}/results" if ended else None,
        }  # fmt: skip


def main() -> None:
    """`python -m tests.helpers.batchserver [--port P] [--polls-to-end K]`: the chat routes
    and both batch APIs (prints `listening on URL`); for bench/batch_overhead.py."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--polls-to-end", type=int, default=1)
    args = parser.parse_args()

    def build() -> MockLLMServer:
        srv = MockLLMServer(args.host, args.port)
        BatchAPIs(srv, polls_to_end=args.polls_to_end)
        return srv

    serve_until_interrupted(build)


if __name__ == "__main__":
    main()
