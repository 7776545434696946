"""The two batch protocols, through the official SDKs (their own retries off):

- OpenAI Batch API: the requests as a JSONL file uploaded with `purpose=batch`
  (`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}` per line), a batch
  created on it, polled (`validating` -> `in_progress` -> `finalizing` -> `completed`, or
  `failed` / `expired` / `cancelled`), then its output and error files downloaded.
- Anthropic Message Batches: the requests posted in the create call
  (`{"custom_id", "params"}`), polled (`in_progress` -> `canceling` -> `ended`), then the
  results JSONL streamed.

Both answer `results()` as a dict custom id -> `RawCompletion` (a success) or the error to
raise for that item: `FatalError` for a request the API rejects (invalid request: recorded
as failed, never retried), `RetryableError` for the rest (a server error, an expired or
cancelled item: resubmitted). The first line for an id wins; order does not matter.
Request bodies are built and answers decoded by the online replicas' own code, so a batch
item asks exactly what an online request would.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distillery.teacher.anthropic_api import _AnthropicProtocol
from distillery.teacher.anthropic_api import sdk_models as anthropic_models
from distillery.teacher.backends import OPENAI_FINISH, _OpenAIProtocol, map_sdk_error
from distillery.teacher.backends import sdk_models as openai_models
from distillery.teacher.batch_ledger import BatchRecord
from distillery.teacher.config import TeacherConfig
from distillery.teacher.types import FatalError, RawCompletion, RetryableError, TeacherError

Outcome = RawCompletion | TeacherError
# (requests, bytes) per batch: OpenAI's input file and Anthropic's batch, as documented
# (decimal megabytes: the smaller reading of "200 MB")
LIMITS = {"openai": (50_000, 200_000_000), "anthropic": (100_000, 256_000_000)}
LIST_PAGE = 100  # batches per list call when looking for a batch whose create answer was lost
FIND_WINDOW_S = 300  # ... created within this long of its ledger record


@dataclass
class Remote:
    """A batch as the provider reports it."""

    status: str
    ended: bool
    counts: dict[str, Any] = field(default_factory=dict)
    raw: Any = None  # the SDK's object (what `results` needs)


def _rows(data: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of a results JSONL; a line that is not one (torn, garbled) is skipped:
    its item then has no result and is resubmitted, instead of the download failing for ever."""
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line) if line.strip() else None
            if isinstance(row, dict):
                yield row


def _raw_error(obj: Any) -> str:
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return text if len(text) <= 600 else text[:600] + "..."


class OpenAIBatches:
    """The OpenAI Batch API (`openai.AsyncOpenAI`: files + batches)."""

    provider = "openai"
    ENDED = ("completed", "failed", "expired", "cancelled")

    def __init__(self, config: TeacherConfig, url: str | None, api_key: str) -> None:
        import openai

        self.protocol = _OpenAIProtocol(config, url)
        self.url = self.protocol.url
        self.window = config.batch.completion_window
        self.client = openai.AsyncOpenAI(
            api_key=api_key, base_url=self.url, timeout=config.timeout_s, max_retries=0
        )

    def line(self, key: str, messages: list[dict[str, str]], params: dict[str, Any]) -> bytes:
        body = self.protocol.request_body(messages, params)
        row = {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}
        return json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"

    async def _call(self, coro: Any) -> Any:
        import openai

        try:
            return await coro
        except openai.APIError as exc:
            raise map_sdk_error(exc, self.url) from None

    async def upload(self, record: BatchRecord, lines: list[bytes]) -> str:
        data = b"".join(lines)
        file = await self._call(
            self.client.files.create(file=(f"{record.local_id}.jsonl", data), purpose="batch")
        )
        return str(file.id)

    async def create(self, record: BatchRecord, lines: list[bytes]) -> str:
        batch = await self._call(
            self.client.batches.create(
                input_file_id=str(record.input_file_id),
                endpoint="/v1/chat/completions",
                completion_window=self.window,
                metadata={"distillery_batch": record.local_id},
            )
        )
        return str(batch.id)

    async def find(self, record: BatchRecord, known: set[str]) -> str | None:
        """The batch a create call made for `record` although its answer never came back
        (killed, dropped connection): matched by the uploaded input file; `known`: batches
        other records hold."""
        import openai

        if record.input_file_id is None:
            return None  # nothing uploaded: no batch can exist
        try:  # newest first, page after page, back to the record's time
            async for batch in self.client.batches.list(limit=LIST_PAGE):
                if batch.input_file_id == record.input_file_id and batch.id not in known:
                    return str(batch.id)
                if batch.created_at < record.created_at - FIND_WINDOW_S:
                    return None
        except openai.APIError as exc:
            raise map_sdk_error(exc, self.url) from None
        return None

    async def retrieve(self, record: BatchRecord) -> Remote:
        batch = await self._call(self.client.batches.retrieve(str(record.remote_id)))
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        return Remote(batch.status, batch.status in self.ENDED, counts, batch)

    async def results(self, record: BatchRecord, remote: Remote) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        batch = remote.raw
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._call(self.client.files.content(file_id))
            for row in _rows(content.content):
                out.setdefault(str(row.get("custom_id")), self._outcome(row))
        for err in (batch.errors.data or []) if batch.errors else []:
            if err.line and 0 < err.line <= len(record.keys):  # this line was invalid
                message = f"batch validation: {err.code}: {err.message}"
                out.setdefault(record.keys[err.line - 1], FatalError(message))
        return out

    def _outcome(self, row: dict[str, Any]) -> Outcome:
        response, error = row.get("response"), row.get("error")
        if response and response.get("status_code") == 200:
            return self._decode(response.get("body") or {})
        if response:
            status = int(response.get("status_code") or 0)
            message = f"HTTP {status} in batch: {_raw_error(response.get('body'))}"
            if status == 429 or status >= 500 or status in (408, 409):
                return RetryableError(message)
            return FatalError(message)
        return RetryableError(f"batch item not done: {_raw_error(error)}")

    def _decode(self, data: dict[str, Any]) -> Outcome:
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            reason = choice.get("finish_reason") or ""
            return RawCompletion(
                text=choice["message"].get("content") or "",
                finish_reason=OPENAI_FINISH.get(reason, str(reason)),
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                raw=data,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            return RetryableError(f"batch result lacks choices[0].message: {_raw_error(data)}")

    async def cancel(self, record: BatchRecord) -> str:
        batch = await self._call(self.client.batches.cancel(str(record.remote_id)))
        return str(batch.status)

    async def list_models(self) -> list[str] | None:
        return await openai_models(self.client, self.url)

    async def aclose(self) -> None:
        await self.client.close()


class AnthropicBatches:
    """Anthropic's Message Batches (`anthropic.AsyncAnthropic().messages.batches`)."""

    provider = "anthropic"
    RETRYABLE = ("api_error", "overloaded_error", "rate_limit_error", "timeout_error")

    def __init__(self, config: TeacherConfig, url: str | None, api_key: str) -> None:
        import anthropic

        self.protocol = _AnthropicProtocol(config, url)
        self.url = self.protocol.url
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=self.url, timeout=config.timeout_s, max_retries=0
        )

    def line(self, key: str, messages: list[dict[str, str]], params: dict[str, Any]) -> bytes:
        row = {"custom_id": key, "params": self.protocol.request_body(messages, params)}
        return json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"

    async def _call(self, coro: Any) -> Any:
        import anthropic

        try:
            return await coro
        except anthropic.APIError as exc:
            raise map_sdk_error(exc, self.url) from None

    async def upload(self, record: BatchRecord, lines: list[bytes]) -> str | None:
        return None  # the requests travel in the create call

    async def create(self, record: BatchRecord, lines: list[bytes]) -> str:
        """POST /v1/messages/batches with the lines as they are (through the SDK's `post`:
        its `batches.create` transforms every request's TypedDict first)."""
        import httpx2

        body = b'{"requests":[' + b",".join(line.rstrip(b"\n") for line in lines) + b"]}"
        headers = {"content-type": "application/json"}
        response = await self._call(
            self.client.post(
                "/v1/messages/batches",
                cast_to=httpx2.Response,
                content=body,
                options={"headers": headers},
            )
        )
        try:
            return str(json.loads(response.content)["id"])
        except (ValueError, KeyError, TypeError):
            raise RetryableError(f"batch create answer from {self.url} lacks an id") from None

    async def find(self, record: BatchRecord, known: set[str]) -> str | None:
        """A batch created for `record` whose create answer was lost (the API keeps no
        metadata): of those with as many requests created within five minutes of the record
        and not held by another record (`known`), the one created closest to it."""
        import anthropic

        near: list[tuple[float, str]] = []
        try:  # newest first, page after page, back to the record's time
            async for batch in self.client.messages.batches.list(limit=LIST_PAGE):
                gap = batch.created_at.timestamp() - record.created_at
                if gap < -FIND_WINDOW_S:
                    break
                total = sum(batch.request_counts.model_dump().values())
                if batch.id not in known and total == len(record.keys) and gap < FIND_WINDOW_S:
                    near.append((abs(gap), str(batch.id)))
        except anthropic.APIError as exc:
            raise map_sdk_error(exc, self.url) from None
        return min(near)[1] if near else None

    async def retrieve(self, record: BatchRecord) -> Remote:
        batch = await self._call(self.client.messages.batches.retrieve(str(record.remote_id)))
        counts = batch.request_counts.model_dump()
        return Remote(batch.processing_status, batch.processing_status == "ended", counts, batch)

    async def results(self, record: BatchRecord, remote: Remote) -> dict[str, Outcome]:
        """The results JSONL at the batch's `results_url`, read raw: the SDK's own
        `batches.results()` builds a model per line, which was most of this path's CPU."""
        import httpx2

        url = remote.raw.results_url
        if not url:
            return {}
        headers = {"Accept": "application/binary"}
        response = await self._call(
            self.client.get(url, cast_to=httpx2.Response, options={"headers": headers})
        )
        out: dict[str, Outcome] = {}
        for row in _rows(response.content):
            out.setdefault(str(row.get("custom_id")), self._outcome(row.get("result") or {}))
        return out

    def _outcome(self, result: dict[str, Any]) -> Outcome:
        kind = result.get("type")
        if kind == "succeeded":
            try:
                return self.protocol.decode(json.dumps(result["message"]).encode("utf-8"))
            except RetryableError as exc:
                return exc
        if kind == "errored":
            error = (result.get("error") or {}).get("error") or {}
            message = f"errored in batch: {_raw_error(result.get('error'))}"
            return (
                RetryableError(message)
                if error.get("type") in self.RETRYABLE
                else FatalError(message)
            )
        return RetryableError(f"batch item {kind}: not done")

    async def cancel(self, record: BatchRecord) -> str:
        batch = await self._call(self.client.messages.batches.cancel(str(record.remote_id)))
        return str(batch.processing_status)

    async def list_models(self) -> list[str] | None:
        return await anthropic_models(self.client, self.url)

    async def aclose(self) -> None:
        await self.client.close()


BatchAPI = OpenAIBatches | AnthropicBatches


def batch_api(config: TeacherConfig, url: str | None, api_key: str) -> BatchAPI:
    cls = OpenAIBatches if config.backend == "openai" else AnthropicBatches
    return cls(config, url, api_key)
