"""`Teacher`: one async client in front of every backend, with the response cache, rate
limits, adaptive concurrency, replica balancing, retries and cost accounting.

    teacher = await Teacher(config).start()      # builds replicas, runs the preflight
    result = await teacher.complete(ChatRequest(messages=[...]))
    await teacher.aclose()

`complete` reads top to bottom: an identical request already in flight is shared, then the
response cache, then the budget reservation, then one retry loop around the HTTP exchange,
then the success is cached. It never raises for a per-item failure: after its retries it
returns a `CallResult` with `status="failed"`, the error and the raw output it got (if any).
It raises `AuthFailed` only when the whole run cannot go on (a rejected key) and
`distillery.errors.BudgetStop` when the next request would cross `max_cost_usd`.
`teacher.stats` counts every call of the client; `teacher.stats_for(role)` a role's only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from distillery.errors import BudgetStop, UserError
from distillery.records import Usage
from distillery.teacher.anthropic_api import AnthropicReplica, DirectAnthropicReplica
from distillery.teacher.backends import (
    DirectOpenAIReplica,
    OpenAIReplica,
    Replica,
    raw_prompt_problem,
    refused_message,
    resolve_api_key,
)
from distillery.teacher.cache import ResponseCache, cache_key, work_fingerprint
from distillery.teacher.config import TeacherConfig
from distillery.teacher.limits import AdaptiveGate, backoff_s, rate_buckets
from distillery.teacher.local import FakeReplica, HFReplica, VLLMServer
from distillery.teacher.outcome import RoleStats, Stats, completion, shared
from distillery.teacher.pricing import cost, price_for, request_tokens
from distillery.teacher.types import (
    AuthFailed,
    CallResult,
    ChatRequest,
    CutOff,
    EmptyContent,
    FatalError,
    InvalidOutput,
    RateLimited,
    RawCompletion,
    RetryableError,
)

NO_TEACHER = (
    "no teacher configured: set teacher.spec in the config or pass --teacher, e.g. "
    "--teacher openai:gpt-4o-mini (needs OPENAI_API_KEY), --teacher anthropic:claude-haiku-4-5 "
    "(needs ANTHROPIC_API_KEY), --teacher vllm:Qwen/Qwen2.5-7B-Instruct, or an OpenAI-compatible "
    "server with OPENAI_BASE_URL=http://host:port/v1 --teacher openai:MODEL"
)


@dataclass
class ReplicaState:
    replica: Replica
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0


async def _refused(url: str, timeout_s: float = 3.0) -> str | None:
    """`connection refused by HOST:PORT (URL)` when nothing listens at `url`'s address, else
    None. Some HTTP stacks report a refused connection as a timeout; this says what it is."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except ConnectionRefusedError:
        return f"{refused_message(url)}: is the server running?"
    except (OSError, asyncio.TimeoutError):
        return None
    writer.close()
    return None


class Teacher:
    def __init__(self, config: TeacherConfig) -> None:
        if not config.spec:
            raise UserError(NO_TEACHER)
        self.spec = config.spec
        if config.mode == "batch":  # every item waits in a batch at once, not `concurrency`;
            # per-minute limits are the online API's (a batch's tokens charged to them would
            # hold back its resubmissions and the stage's next steps for hours)
            unlimited = dict.fromkeys(
                ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")
            )
            config = config.model_copy(
                update={"concurrency": config.batch.max_pending, **unlimited}
            )
        self.config = config
        self.price = price_for(config)
        self.cache = ResponseCache(config.cache_path) if config.cache else None
        self.gate = AdaptiveGate(config.concurrency)
        self.buckets = rate_buckets(config)
        self.accounts = RoleStats()  # what this client did, in all and per role
        self.stats: Stats = self.accounts.total
        self._retry_limits = {
            "transient": config.max_retries,
            "length": config.max_length_retries,
            "parse": config.max_parse_retries,
        }
        self.reserved_usd = 0.0
        self.secrets: list[str] = []
        self._vllm: VLLMServer | None = None
        self.replicas: list[ReplicaState] = []
        # cache key -> the answer of the identical request in flight, for its twins to share
        self._in_flight: dict[str, asyncio.Future[CallResult]] = {}

    # -- setup -----------------------------------------------------------------------
    def _build_replicas(self) -> list[Replica]:
        c = self.config
        if c.mode == "batch":
            return [self._batch_replica()]
        if c.backend == "fake":
            return [FakeReplica()]
        if c.backend == "hf":
            return [HFReplica(c)]
        urls: list[str | None] = list(c.base_urls) or [None]
        if c.backend == "vllm" and not c.base_urls:
            self._vllm = VLLMServer(c)
            urls = [self._vllm.start()]
        if c.backend in ("openai", "vllm"):
            custom = bool(c.base_urls) or c.backend == "vllm" or "OPENAI_BASE_URL" in os.environ
            key = resolve_api_key(c, "OPENAI_API_KEY", custom)
            self.secrets.append(key)
            cls = DirectOpenAIReplica if c.transport == "direct" else OpenAIReplica
            return [cls(c, url, key) for url in urls]
        custom = bool(c.base_urls) or "ANTHROPIC_BASE_URL" in os.environ
        key = resolve_api_key(c, "ANTHROPIC_API_KEY", custom)
        self.secrets.append(key)
        anthropic_cls = DirectAnthropicReplica if c.transport == "direct" else AnthropicReplica
        return [anthropic_cls(c, url, key) for url in urls]

    def _batch_replica(self) -> Replica:
        """`mode: batch`: the provider's batch API behind the same engine (`teacher.batch`)."""
        from distillery.teacher.batch import batch_replica

        c = self.config
        env = f"{c.backend.upper()}_API_KEY"
        key = resolve_api_key(
            c, env, bool(c.base_urls) or f"{c.backend.upper()}_BASE_URL" in os.environ
        )
        self.secrets.append(key)
        return batch_replica(
            c, key, self.request_key, self.estimate_cost, self.price, cache=self.cache
        )

    async def start(self, preflight: bool = True) -> Teacher:
        self.replicas = [ReplicaState(r) for r in self._build_replicas()]
        if preflight:
            try:
                await self.preflight()
            except BaseException:
                await self.aclose()
                raise
        return self

    async def preflight(self) -> None:
        """Before any paid request: every replica is reachable, the key works, the model exists."""
        for state in self.replicas:
            try:
                models = await state.replica.list_models()
            except (RetryableError, FatalError) as exc:
                why = await _refused(state.replica.url) or str(exc)
                raise UserError(
                    f"teacher {self.spec}: preflight failed: {self.redact(why)}"
                ) from None
            if models is not None and self.config.model not in models:
                shown = ", ".join(models[:8]) + (" ..." if len(models) > 8 else "")
                raise UserError(
                    f"teacher {self.spec}: model {self.config.model!r} is not served by "
                    f"{state.replica.url} (it lists: {shown or 'nothing'})"
                )

    async def aclose(self) -> None:
        for state in self.replicas:
            await state.replica.aclose()
        if self._vllm is not None:
            self._vllm.stop()
        if self.cache is not None:
            self.cache.close()

    async def __aenter__(self) -> Teacher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stats_for(self, role: str) -> Stats:
        """The counters of the calls made for `role` (`complete(..., role=...)`) only."""
        return self.accounts.of(role)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret and len(secret) >= 6:
                text = text.replace(secret, "***")
        return text

    # -- one request -----------------------------------------------------------------
    def params_for(self, request: ChatRequest) -> dict[str, Any]:
        c = self.config
        params: dict[str, Any] = {
            "temperature": c.temperature,
            "top_p": c.top_p,
            "max_tokens": c.max_tokens,
            "seed": c.seed,
            "stop": list(c.stop),
        }
        params.update(request.params)
        return params

    def estimate_cost(self, request: ChatRequest, output_tokens: int | None = None) -> float:
        n_in = request_tokens(request)
        n_out = (
            output_tokens if output_tokens is not None else self.params_for(request)["max_tokens"]
        )
        return cost(self.price, n_in, n_out)

    def _pick(self) -> ReplicaState:
        now = time.monotonic()
        healthy = [r for r in self.replicas if r.down_until <= now]
        if not healthy:
            return min(self.replicas, key=lambda r: r.down_until)
        return min(healthy, key=lambda r: r.in_flight)

    def request_key(self, request: ChatRequest) -> str:
        """The response cache's key for `request`: everything that changes the answer."""
        return cache_key(
            self.spec,
            request.messages,
            self.params_for(request),
            request.cache_salt,
            self.config.cache_namespace,
            prompt=request.prompt,
        )

    def fingerprint(self, request: ChatRequest) -> str:
        """What a journal entry for `request` is the work of (`cache.work_fingerprint`)."""
        sha = request.template.sha256 if request.template else None
        return work_fingerprint(self.request_key(request), sha, request.purpose)

    # -- one request: in flight once, cache, reserve, send with retries, record ------------
    async def complete(self, request: ChatRequest, role: str = "") -> CallResult:
        """The answer to `request`; `role` names which of the caller's roles asks (for
        `stats_for`). Identical requests (one cache key) in flight at once are sent once: the
        first is sent, its twins wait for it and get its answer (`cached`). A raw prompt
        (`request.prompt`) to a teacher that cannot take one is a one-line `UserError`."""
        if request.prompt is not None:
            refused = raw_prompt_problem(self.config)
            if refused:
                raise UserError(refused)
        key = self.request_key(request)
        leader = self._in_flight.get(key)
        if leader is not None:
            self.accounts.add(role, deduplicated=1)
            return shared(await asyncio.shield(leader), request)
        future: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await self._answer(request, key, role)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: no warning when no twin was waiting
            raise
        finally:
            del self._in_flight[key]
        future.set_result(result)
        return result

    async def _answer(self, request: ChatRequest, key: str, role: str) -> CallResult:
        """From the cache; else sent within the budget, with retries; a success is cached."""
        started = time.monotonic()
        hit = self._from_cache(request, key, started, role)
        if hit is not None:
            return hit
        estimate = self._reserve(request)
        try:
            result, raw = await self._send_with_retries(request, started, role)
        finally:
            self.reserved_usd -= estimate
        if raw is not None and self.cache is not None:
            self.cache.put(key, self.spec, raw)
        return result

    def _from_cache(
        self, request: ChatRequest, key: str, started: float, role: str
    ) -> CallResult | None:
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None:
            return None
        self.accounts.add(role, cache_hits=1)
        usage = Usage(
            input_tokens=hit.input_tokens,
            output_tokens=hit.output_tokens,
            cost_usd=cost(self.price, hit.input_tokens, hit.output_tokens),
        )
        params = self.params_for(request)
        return completion(
            self.spec,
            request,
            params,
            hit.text,
            hit.finish_reason,
            usage,
            started,
            cached=True,
            attempts=1,
        )

    def _reserve(self, request: ChatRequest) -> float:
        """Hold the request's worst-case cost against `max_cost_usd` while it is in flight;
        `BudgetStop` when it could cross the cap."""
        estimate = self.estimate_cost(request)
        cap = self.config.max_cost_usd
        # a cap equal to the sum of the estimates holds them all (float sums drift up by ~1e-16)
        if cap is not None and self.stats.spent_usd + self.reserved_usd + estimate > cap + 1e-12:
            raise BudgetStop(f"teacher {self.spec}: max_cost_usd={cap:g} reached")
        self.reserved_usd += estimate
        return estimate

    async def _send_with_retries(
        self, request: ChatRequest, started: float, role: str
    ) -> tuple[CallResult, RawCompletion | None]:
        """Send until the answer is good or its kind of failure runs out of retries:
        transient (429, 5xx, timeouts, bad bodies; `max_retries`), cut off
        (`max_length_retries`), empty (`max_parse_retries`). Returns the
        completion and, for a success, the raw answer to cache. A bad key raises."""
        params = self.params_for(request)
        failures: Counter[str] = Counter()
        usage: list[Usage] = []
        while True:
            try:
                raw = await self._send(request, params, usage, role)
            except AuthFailed:
                raise
            except FatalError as exc:
                error, kept, tries = str(exc), None, sum(failures.values()) + 1
                break
            except RetryableError as exc:
                kind = _failure_kind(exc)
                failures[kind] += 1
                if failures[kind] <= self._retry_limits[kind]:
                    self.accounts.add(role, retries=1)
                    await asyncio.sleep(self._wait_after(exc, sum(failures.values())))
                    continue
                (error, kept), tries = _give_up(exc, failures[kind]), sum(failures.values())
                break
            total = sum(usage, Usage())
            attempts = sum(failures.values()) + 1
            return completion(
                self.spec, request, params, raw.text, raw.finish_reason, total, started,
                attempts=attempts,
            ), raw  # fmt: skip
        return self._failed(request, params, error, kept, usage, started, role, tries), None

    async def _send(
        self, request: ChatRequest, params: dict[str, Any], usage: list[Usage], role: str
    ) -> RawCompletion:
        """One HTTP exchange through the rate limits, the concurrency gate and the least busy
        healthy replica; its usage is charged even when the answer is then rejected."""
        for _, bucket in self.buckets:
            await bucket.wait()
        epoch = await self.gate.acquire()
        state = self._pick()
        state.in_flight += 1
        ok = False
        self.accounts.add(role, sent=1)
        try:
            raw = await state.replica.chat(request, params)
            ok = True
        except RateLimited as exc:
            self.gate.throttle(exc.retry_after, epoch)
            raise
        except RetryableError:
            self._note_replica_failure(state)
            raise
        finally:
            state.in_flight -= 1
            await self.gate.release(ok)
        state.failures = 0
        spent = cost(self.price, raw.input_tokens, raw.output_tokens)
        usage.append(
            Usage(input_tokens=raw.input_tokens, output_tokens=raw.output_tokens, cost_usd=spent)
        )
        self.accounts.add(
            role, spent_usd=spent, input_tokens=raw.input_tokens, output_tokens=raw.output_tokens
        )
        for kind, bucket in self.buckets:
            bucket.charge(
                {"requests": 1, "input": raw.input_tokens, "output": raw.output_tokens}[kind]
            )
        if raw.finish_reason == "length":
            raise CutOff(raw)
        if not raw.text:
            raise EmptyContent(raw)
        return raw

    def _note_replica_failure(self, state: ReplicaState) -> None:
        """A replica that keeps failing rests for `replica_cooldown_s` (when there are others)."""
        state.failures += 1
        if state.failures >= self.config.replica_max_failures and len(self.replicas) > 1:
            state.down_until = time.monotonic() + self.config.replica_cooldown_s
            state.failures = 0

    def _wait_after(self, exc: RetryableError, retry: int) -> float:
        """Seconds before retry number `retry`: the server's Retry-After for a 429, none for a
        cut-off or invalid answer, else exponential backoff with jitter."""
        if isinstance(exc, RateLimited) and exc.retry_after:
            return exc.retry_after
        if isinstance(exc, (CutOff, InvalidOutput)):
            return 0.0
        return backoff_s(retry, self.config.backoff_initial_s, self.config.backoff_max_s)

    def _failed(
        self,
        request: ChatRequest,
        params: dict[str, Any],
        error: str,
        raw: RawCompletion | None,
        usage: list[Usage],
        started: float,
        role: str,
        attempts: int,
    ) -> CallResult:
        self.accounts.add(role, failed=1)
        return completion(
            self.spec,
            request,
            params,
            raw.text if raw else None,
            raw.finish_reason if raw else None,
            sum(usage, Usage()),
            started,
            status="failed",
            error=self.redact(error),
            attempts=attempts,
        )


def _failure_kind(exc: RetryableError) -> str:
    """Which retry budget a failure draws on."""
    if isinstance(exc, CutOff):
        return "length"
    if isinstance(exc, InvalidOutput):
        return "parse"
    return "transient"


def _give_up(exc: RetryableError, times: int) -> tuple[str, RawCompletion | None]:
    """The error recorded when a failure kind runs out of retries, and the raw answer kept."""
    if isinstance(exc, (CutOff, InvalidOutput)):
        return str(exc), exc.raw
    return f"{exc} (after {times} attempts)", None
