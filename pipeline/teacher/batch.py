"""`teacher.mode: batch`: the engine's replica for the providers' batch APIs.

The engine calls `BatchReplica.chat(request, params)` exactly as it calls an online replica,
so the cache, the in-flight sharing, the budget reservation, retries, the journal and the
cost accounting stay the engine's. Here each call waits for its item's line in a batch:

    chat -> known to a live ledger batch? wait for that batch (re-attach; never resubmitted)
         -> else queued; `collect_s` after the first queued item (or at once when a batch
            is full: `max_requests` / `max_bytes`) the queue becomes one batch: ledger record
            written, input uploaded, batch created, ledger record written again
    poll -> every open batch, from `poll_initial_s`, x1.5 per poll up to `poll_max_s`;
            5xx and dropped connections only delay the next poll
    end  -> output and error lines mapped back by custom id (the request's cache key); each
            waiting call gets its answer (a `RawCompletion`) or its error: a `FatalError`
            (invalid request: recorded as failed) or a `RetryableError` (errored, expired,
            cancelled, no line at all: the engine resubmits it, in a new batch, up to
            `max_retries`); then the record is marked collected

`detach`: once every waiting call's item is in an open batch, every call raises `Detached`;
a re-run of the same command re-attaches (the custom id is the cache key, so the same
request finds its batch) and collects.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distillery.teacher.batch_api import LIMITS, BatchAPI, Outcome, batch_api
from distillery.teacher.batch_ledger import LIVE, BatchRecord, Ledger, _age, ledger_dir
from distillery.teacher.cache import ResponseCache
from distillery.teacher.config import Price, TeacherConfig
from distillery.teacher.pricing import cost
from distillery.teacher.types import (
    AuthFailed,
    ChatRequest,
    FatalError,
    RawCompletion,
    RetryableError,
    TeacherError,
)


class Detached(Exception):
    """`--detach`: every item waits in a submitted batch; re-run the command to collect.
    Raised out of `run_job`; `distillery complete` and the CLI (any stage) print it as one
    line and exit 0; the journals and the ledger hold everything for the re-run."""

    exit_code = 0  # what `RunDir` records for the invocation

    def __init__(self, items: int, batches: int) -> None:
        super().__init__(f"detached: {items} items wait in {batches} submitted batches")
        self.items, self.batches = items, batches


@dataclass
class _Item:
    key: str
    line: bytes  # its line of the batch input
    reserve: float  # its worst-case cost


class BatchReplica:
    """One provider's batch API behind the `Replica` protocol (see the module docstring)."""

    def __init__(
        self,
        config: TeacherConfig,
        api: BatchAPI,
        key_of: Callable[[ChatRequest], str],
        estimate: Callable[[ChatRequest], float],
        price: Price | None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.api, self.url = api, api.url
        self.cache = cache  # keeps the paid answers no call waits for (`_close`)
        self.settings = config.batch
        self.spec = str(config.spec)
        self.key_of, self.estimate, self.price = key_of, estimate, price
        limit_n, limit_bytes = LIMITS[api.provider]
        self.max_requests = self.settings.max_requests or limit_n
        self.max_bytes = self.settings.max_bytes or limit_bytes
        self.ledger = Ledger(ledger_dir(config))
        self.records = {r.local_id: r for r in self.ledger.load()}
        self.index: dict[str, str] = {}  # item key -> the live batch that answers it
        for record in self.records.values():  # oldest first: the newest live batch wins
            if record.phase in LIVE:
                self.index.update(dict.fromkeys(record.keys, record.local_id))
        self.waiters: dict[str, list[asyncio.Future[RawCompletion]]] = {}
        self.queue: deque[_Item] = deque()
        self.queued_bytes = 0
        self.results: dict[str, dict[str, Outcome]] = {}  # ended batch -> its outcomes
        self.watch: dict[str, tuple[float, float]] = {}  # polled batch -> (next poll, interval)
        self.items_done = 0
        self._timer: asyncio.TimerHandle | None = None
        self._submitting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._last_line = time.monotonic()
        self._mine: set[str] = set()  # batches this process submitted or re-attached

    # -- the engine's side ---------------------------------------------------------------
    async def chat(self, request: ChatRequest, params: dict[str, Any]) -> RawCompletion:
        key = self.key_of(request)
        future: asyncio.Future[RawCompletion] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(key, []).append(future)
        try:
            self._route(key, request, params)
            return await future
        finally:
            waiting = self.waiters.get(key, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self.waiters.pop(key, None)

    def _route(self, key: str, request: ChatRequest, params: dict[str, Any]) -> None:
        """A live batch answers `key` (wait for it), or it joins the queue."""
        if getattr(request, "prompt", None) is not None:
            raise FatalError("a raw prompt (completions) cannot go through the batch APIs")
        local = self.index.get(key)
        if local is not None and local in self.results:  # that batch ended in this process
            del self.index[key]
            self._answer(key, self.results[local].get(key) or self._missing(local))
            return
        if local is not None:
            self._watch(local, at_once=local not in self._mine)
            return
        line = self.api.line(key, request.messages, params)
        if len(line) > self.max_bytes:  # alone it is over the limit: no batch can carry it
            raise FatalError(
                f"this request is {len(line):,} bytes as a batch line, over "
                f"teacher.batch.max_bytes={self.max_bytes}: it cannot be sent in a batch"
            )
        self.queue.append(_Item(key, line, self.estimate(request)))
        self.queued_bytes += len(line)
        if len(self.queue) >= self.max_requests or self.queued_bytes >= self.max_bytes:
            self._flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.settings.collect_s, self._flush)

    def _answer(self, key: str, outcome: Outcome | BaseException) -> None:
        for future in self.waiters.get(key, []):
            if future.done():
                continue
            if isinstance(outcome, RawCompletion):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

    # -- submission ------------------------------------------------------------------------
    def _flush(self) -> None:
        """The queue, as batches within the limits (each submitted by its own task)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.queue:
            items: list[_Item] = []
            size = 0
            while self.queue and len(items) < self.max_requests:
                nxt = len(self.queue[0].line)
                if items and size + nxt > self.max_bytes:
                    break
                items.append(self.queue.popleft())
                size += nxt
            self.queued_bytes -= size
            self._spawn(self._submit(items, size))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, items: list[_Item], size: int) -> None:
        record = BatchRecord(
            provider=self.api.provider,
            spec=self.spec,
            url=self.url,
            keys=[i.key for i in items],
            reserved_usd=round(sum(i.reserve for i in items), 6),
            bytes=size,
        )
        self.records[record.local_id] = record
        self._mine.add(record.local_id)
        self.index.update(dict.fromkeys(record.keys, record.local_id))
        self.ledger.save(record)  # before anything leaves: a kill now is recovered by `find`
        self._submitting += 1
        try:
            lines = [i.line for i in items]
            record.input_file_id = await self.api.upload(record, lines)
            self.ledger.save(record)
            record.remote_id = await self.api.create(record, lines)
        except TeacherError as exc:
            try:
                record.remote_id = await self._created_anyway(record, exc)
            except TeacherError as lookup:  # cannot tell: the poll looks for it again
                record.error = f"{exc}; then looking for the batch: {lookup}"
                self.ledger.save(record)
                self._watch(record.local_id)
                return
            if record.remote_id is None:
                self._not_submitted(record, exc)
                return
        except Exception as exc:  # anything else (a bad SDK answer): its items fail, loudly
            self._not_submitted(record, FatalError(f"batch submission failed: {exc!r}"))
            return
        finally:
            self._submitting -= 1
        record.phase, record.submitted_at = "open", time.time()
        self.ledger.save(record)
        self._watch(record.local_id)

    async def _created_anyway(self, record: BatchRecord, exc: TeacherError) -> str | None:
        """After a failed create whose answer may have been lost (a timeout, a dropped
        connection, a 5xx): the batch the provider made anyway, if any (a `TeacherError`
        when the provider cannot be asked: the record then waits, `submitting`)."""
        if not isinstance(exc, RetryableError):
            return None
        return await self._find(record)

    async def _find(self, record: BatchRecord) -> str | None:
        """The provider's batch for `record`, never one another ledger record already holds
        (two records on one batch: the other's items would never be answered)."""
        known = {r.remote_id for r in self.records.values() if r.remote_id}
        return await self.api.find(record, known)

    def _not_submitted(self, record: BatchRecord, exc: BaseException) -> None:
        record.phase, record.error = "not_submitted", str(exc)
        self.ledger.save(record)
        self._close(record, {}, exc)

    # -- polling ---------------------------------------------------------------------------
    def _watch(self, local: str, at_once: bool = False) -> None:
        if local not in self.watch:
            first = 0.0 if at_once else self.settings.poll_initial_s
            self.watch[local] = (time.monotonic() + first, self.settings.poll_initial_s)
            self._mine.add(local)
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_loop())

    async def _poll_loop(self) -> None:
        assert self._wake is not None
        while self.watch:
            now = time.monotonic()
            for local in [k for k, (due, _) in self.watch.items() if due <= now]:
                await self._poll(self.records[local])
            self._progress()
            self._maybe_detach()
            if not self.watch:
                break
            wait = min(due for due, _ in self.watch.values()) - time.monotonic()
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))

    def _next_poll(self, local: str) -> None:
        _, interval = self.watch[local]
        self.watch[local] = (
            time.monotonic() + interval,
            min(self.settings.poll_max_s, interval * 1.5),
        )

    async def _poll(self, record: BatchRecord) -> None:
        """One look at a batch; when it has ended, its results go to the waiting calls."""
        try:
            if record.remote_id is None:  # killed between its ledger record and the answer
                record.remote_id = await self._find(record)
                if record.remote_id is None:
                    self._not_submitted(record, RetryableError("the batch was never created"))
                    return
                record.phase = "open"
                self.ledger.save(record)
            remote = await self.api.retrieve(record)
            results = await self.api.results(record, remote) if remote.ended else None
        except AuthFailed as exc:  # the record stays open: a re-run with a good key collects
            self._close(record, {}, exc)
            return
        except FatalError as exc:  # the provider has no such batch (404): it cannot answer
            self._unreadable(record, exc)
            return
        except Exception as exc:  # 5xx, dropped connection, a torn download: try again later
            record.error = str(exc) if isinstance(exc, TeacherError) else repr(exc)
            self._next_poll(record.local_id)
            return
        changed = (remote.status, remote.counts) != (record.remote_status, record.counts)
        record.remote_status, record.counts = remote.status, remote.counts
        if results is None:
            if changed:
                self.ledger.save(record)
            self._next_poll(record.local_id)
            return
        record.phase, record.ended_at, record.error = "ended", time.time(), None
        answers = [results.get(key) for key in record.keys]  # a line for another id: not ours
        record.cost_usd = round(
            sum(
                cost(self.price, r.input_tokens, r.output_tokens)
                for r in answers
                if isinstance(r, RawCompletion)
            ),
            8,
        )
        self.ledger.save(record)
        self._close(record, results)
        await asyncio.sleep(0)  # the answered calls run on: their answers reach cache + journal
        record.phase = "collected"
        self.ledger.save(record)

    def _unreadable(self, record: BatchRecord, exc: FatalError) -> None:
        """A batch the provider refuses to show: ended without results, its items resubmitted."""
        record.phase, record.error = "collected", f"cannot be read: {exc}"
        self.ledger.save(record)
        self._close(record, {}, RetryableError(f"batch {record.remote_id} {record.error}"))

    def _missing(self, local: str) -> RetryableError:
        record = self.records[local]
        return RetryableError(
            f"batch {record.remote_id or record.local_id} ({record.remote_status or record.phase})"
            " returned no result for this item"
        )

    def _close(
        self, record: BatchRecord, results: dict[str, Outcome], error: BaseException | None = None
    ) -> None:
        """The batch answers every call waiting on it; calls that come later for one of its
        items get the same answer (`_route`)."""
        self.watch.pop(record.local_id, None)
        self.results[record.local_id] = results
        for key in record.keys:
            if key not in self.waiters:
                self._keep(key, results.get(key))
            if key not in self.waiters or self.index.get(key) != record.local_id:
                continue
            del self.index[key]
            outcome = results.get(key) or error or self._missing(record.local_id)
            self.items_done += isinstance(outcome, RawCompletion)
            self._answer(key, outcome)

    def _keep(self, key: str, outcome: Outcome | None) -> None:
        """An answer no call waits for (a re-run that no longer asks for it, a budget stop)
        is paid for all the same: into the response cache, as the engine would keep it, so
        that a later request for it is not bought again."""
        if self.cache is None or not isinstance(outcome, RawCompletion):
            return
        if outcome.text and outcome.finish_reason != "length":
            self.cache.put(key, self.spec, outcome)

    # -- detach and progress ---------------------------------------------------------------
    def _maybe_detach(self) -> None:
        """With `detach`: once nothing is queued or being submitted and every waiting call's
        item is in an open batch, every call raises `Detached`."""
        if not self.settings.detach or self.queue or self._submitting or self._timer:
            return
        waiting = [k for k, fs in self.waiters.items() if any(not f.done() for f in fs)]
        batches = {self.index.get(k) for k in waiting}
        if not waiting or None in batches:
            return
        if not all(self.records[b].phase == "open" for b in batches if b is not None):
            return
        detached = Detached(len(waiting), len(batches))
        for key in waiting:
            self._answer(key, detached)

    def status_line(self) -> str:
        """Batches submitted / in progress / done, items done, $ so far, oldest open batch."""
        mine = [self.records[b] for b in self._mine if b in self.records]
        open_ = [r for r in mine if r.is_open]
        oldest = min((r.submitted_at or r.created_at for r in open_), default=None)
        age = f"; oldest open batch waiting {_age(time.time() - oldest)}" if oldest else ""
        return (
            f"batches: {len(mine)} submitted, {len(open_)} in progress, "
            f"{sum(not r.is_open for r in mine)} done; items {self.items_done} done, "
            f"{sum(len(r.keys) for r in open_)} waiting; "
            f"${sum(r.cost_usd for r in mine):.4f} so far{age}"
        )

    def _progress(self) -> None:
        every = self.settings.progress_every_s
        if every and time.monotonic() - self._last_line >= every:
            self._last_line = time.monotonic()
            print(self.status_line(), file=sys.stderr, flush=True)

    # -- the rest of the Replica protocol ------------------------------------------------
    async def list_models(self) -> list[str] | None:
        return await self.api.list_models()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in [*self._tasks, *([self._poller] if self._poller else [])]:
            task.cancel()
        for task in [*self._tasks, *([self._poller] if self._poller else [])]:
            with contextlib.suppress(BaseException):
                await task
        await self.api.aclose()


def batch_replica(
    config: TeacherConfig,
    api_key: str,
    key_of: Callable[[ChatRequest], str],
    estimate: Callable[[ChatRequest], float],
    price: Price | None,
    cache: ResponseCache | None = None,
) -> BatchReplica:
    url = config.base_urls[0] if config.base_urls else None
    api = batch_api(config, url, api_key)
    return BatchReplica(config, api, key_of, estimate, price, cache)
