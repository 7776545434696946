"""`Teacher`: one async client in front of every backend, with the response cache, rate
limits, adaptive concurrency, replica balancing, retries and cost accounting.

    teacher = await Teacher(config).start()      # builds replicas, runs the preflight
    result = await teacher.complete(ChatRequest(messages=[...]))
    await teacher.aclose()

`complete` never raises for a per-item failure: after its retries it returns a
`Completion` with `status="failed"`, the error and the raw output it got (if any).
It raises `FatalError` only when the whole run cannot go on (bad key, unknown model) and
`distillery.errors.BudgetStop` when the next request would cross `max_cost_usd`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from distillery.errors import BudgetStop, UserError
from distillery.records import LLMCall, Message, Usage
from distillery.teacher.backends import (
    AnthropicReplica,
    DirectOpenAIReplica,
    OpenAIReplica,
    Replica,
    resolve_api_key,
)
from distillery.teacher.cache import ResponseCache, cache_key, work_fingerprint
from distillery.teacher.config import TeacherConfig
from distillery.teacher.limits import AdaptiveGate, TokenBucket
from distillery.teacher.local import FakeReplica, HFReplica, Script, VLLMServer
from distillery.teacher.pricing import cost, estimate_tokens, price_for
from distillery.teacher.types import (
    CURRENT_PURPOSE,
    AuthFailed,
    ChatRequest,
    Completion,
    CutOff,
    EmptyContent,
    FatalError,
    InvalidOutput,
    RateLimited,
    RawCompletion,
    RetryableError,
)
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential_jitter,
)

NO_TEACHER = (
    "no teacher configured: set teacher.spec in the config or pass --teacher, e.g. "
    "--teacher openai:gpt-4o-mini (needs OPENAI_API_KEY), --teacher anthropic:claude-haiku-4-5 "
    "(needs ANTHROPIC_API_KEY), --teacher vllm:Qwen/Qwen2.5-7B-Instruct, or an OpenAI-compatible "
    "server with OPENAI_BASE_URL=http://host:port/v1 --teacher openai:MODEL"
)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n```\s*$", re.S)


BudgetExceeded = BudgetStop  # the old name; every stage now catches `errors.BudgetStop`


@dataclass
class ReplicaState:
    replica: Replica
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0


@dataclass
class Stats:
    sent: int = 0
    retries: int = 0
    failed: int = 0
    cache_hits: int = 0
    deduplicated: int = 0  # served by an identical request already in flight (not sent)
    spent_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


def _shared(answer: Completion, request: ChatRequest) -> Completion:
    """An in-flight twin's answer for `request`: same text and usage, sent once (`cached`);
    the trace names this request's own purpose and template."""
    trace = answer.trace
    if trace is not None:
        update = {"purpose": request.purpose, "template": request.template, "cached": True}
        trace = trace.model_copy(update=update)
    return dataclasses.replace(answer, cached=True, trace=trace)


async def _refused(url: str, timeout_s: float = 3.0) -> str | None:
    """`connection refused by HOST:PORT (URL)` when nothing listens at `url`'s address, else
    None. Some HTTP stacks report a refused connection as a timeout; this says what it is."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} ({url}): is the server running?"
    except (OSError, asyncio.TimeoutError):
        return None
    writer.close()
    return None


def parse_structured(text: str, schema: type[BaseModel]) -> BaseModel:
    """Validate `text` as `schema`, tolerating a code fence or prose around one JSON object."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        return schema.model_validate_json(body)
    except ValidationError as first:
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return schema.model_validate_json(body[start : end + 1])
            except ValidationError:
                pass
        raise first


class Teacher:
    def __init__(self, config: TeacherConfig, *, fake_script: Script | None = None) -> None:
        if not config.spec:
            raise UserError(NO_TEACHER)
        self.config = config
        self.spec = config.spec
        self.price = price_for(config)
        self.cache = ResponseCache(config.cache_path) if config.cache else None
        self.gate = AdaptiveGate(config.concurrency)
        self.buckets = [
            (kind, TokenBucket(limit))
            for kind, limit in (
                ("requests", config.requests_per_minute),
                ("input", config.input_tokens_per_minute),
                ("output", config.output_tokens_per_minute),
            )
            if limit
        ]
        self.stats = Stats()
        # exponential backoff with jitter, shared by every transient failure
        self._backoff = wait_exponential_jitter(
            multiplier=config.backoff_initial_s,
            max=config.backoff_max_s,
            jitter=config.backoff_initial_s,
        )
        self.reserved_usd = 0.0
        self.secrets: list[str] = []
        self._fake_script = fake_script
        self._vllm: VLLMServer | None = None
        self.replicas: list[ReplicaState] = []
        # cache key -> the answer of the identical request in flight, for its twins to share
        self._in_flight: dict[str, asyncio.Future[Completion]] = {}

    # -- setup -----------------------------------------------------------------------
    def _build_replicas(self) -> list[Replica]:
        c = self.config
        if c.backend == "fake":
            return [FakeReplica(self._fake_script)]
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
        return [AnthropicReplica(c, url, key) for url in urls]

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
        n_in = sum(estimate_tokens(m["content"]) for m in request.messages)
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

    async def _attempt(
        self, request: ChatRequest, params: dict[str, Any], usage: list[Usage]
    ) -> RawCompletion:
        for _, bucket in self.buckets:
            await bucket.wait()
        epoch = await self.gate.acquire()
        state = self._pick()
        state.in_flight += 1
        ok = False
        self.stats.sent += 1
        try:
            schema = request.schema.model_json_schema() if request.schema else None
            CURRENT_PURPOSE.set(request.purpose)
            raw = await state.replica.chat(request.messages, params, schema)
            ok = True
        except RateLimited as exc:
            self.gate.throttle(exc.retry_after, epoch)
            raise
        except RetryableError:
            state.failures += 1
            if state.failures >= self.config.replica_max_failures and len(self.replicas) > 1:
                state.down_until = time.monotonic() + self.config.replica_cooldown_s
                state.failures = 0
            raise
        finally:
            state.in_flight -= 1
            await self.gate.release(ok)
        state.failures = 0
        spent = cost(self.price, raw.input_tokens, raw.output_tokens)
        usage.append(
            Usage(input_tokens=raw.input_tokens, output_tokens=raw.output_tokens, cost_usd=spent)
        )
        self.stats.spent_usd += spent
        self.stats.input_tokens += raw.input_tokens
        self.stats.output_tokens += raw.output_tokens
        for kind, bucket in self.buckets:
            bucket.charge(
                {"requests": 1, "input": raw.input_tokens, "output": raw.output_tokens}[kind]
            )
        if raw.finish_reason == "length":
            raise CutOff(raw)
        if not raw.text:
            raise EmptyContent(raw)
        return raw

    def _wait_after(self, exc: BaseException | None, attempt_number: int) -> float:
        """Seconds before retry number `attempt_number`: the server's Retry-After for a 429,
        none for a cut-off or invalid answer, else exponential backoff with jitter."""
        if isinstance(exc, RateLimited) and exc.retry_after:
            return exc.retry_after
        if isinstance(exc, (CutOff, InvalidOutput)):
            return 0.0
        return float(self._backoff(SimpleNamespace(attempt_number=attempt_number)))  # type: ignore[arg-type]

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self._wait_after(exc, state.attempt_number + 1)

    def request_key(self, request: ChatRequest) -> str:
        """The response cache's key for `request`: everything that changes the answer."""
        schema = request.schema.model_json_schema() if request.schema else None
        return cache_key(
            self.spec,
            request.messages,
            self.params_for(request),
            schema,
            request.cache_salt,
            self.config.cache_namespace,
        )

    def fingerprint(self, request: ChatRequest) -> str:
        """What a journal entry for `request` is the work of (`cache.work_fingerprint`)."""
        sha = request.template.sha256 if request.template else None
        return work_fingerprint(self.request_key(request), sha, request.purpose)

    async def complete(self, request: ChatRequest) -> Completion:
        """The answer to `request`. Identical requests (one cache key) in flight at once are
        sent once: the first is sent, its twins wait for it and get its answer (`cached`)."""
        key = self.request_key(request)
        leader = self._in_flight.get(key)
        if leader is not None:
            self.stats.deduplicated += 1
            return _shared(await asyncio.shield(leader), request)
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await self._complete(request, key)
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

    async def _complete(self, request: ChatRequest, key: str) -> Completion:
        params = self.params_for(request)
        started = time.monotonic()
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                hit_parsed = parse_structured(hit.text, request.schema) if request.schema else None
                usage = Usage(
                    input_tokens=hit.input_tokens,
                    output_tokens=hit.output_tokens,
                    cost_usd=cost(self.price, hit.input_tokens, hit.output_tokens),
                )
                return self._finish(
                    request,
                    params,
                    hit.text,
                    hit.finish_reason,
                    usage,
                    started,
                    parsed=hit_parsed,
                    cached=True,
                )
        estimate = self.estimate_cost(request)
        cap = self.config.max_cost_usd
        if cap is not None and self.stats.spent_usd + self.reserved_usd + estimate > cap:
            raise BudgetStop(f"teacher {self.spec}: max_cost_usd={cap:g} reached")
        self.reserved_usd += estimate
        counts: Counter[str] = Counter()
        limits = {
            "transient": self.config.max_retries,
            "length": self.config.max_length_retries,
            "parse": self.config.max_parse_retries,
        }
        usage_parts: list[Usage] = []

        def should_retry(exc: BaseException) -> bool:
            kind = (
                "length"
                if isinstance(exc, CutOff)
                else "parse"
                if isinstance(exc, InvalidOutput)
                else "transient"
                if isinstance(exc, RetryableError)
                else None
            )
            if kind is None:
                return False
            counts[kind] += 1
            if counts[kind] > limits[kind]:
                return False
            self.stats.retries += 1
            return True

        async def attempt_once() -> tuple[RawCompletion, BaseModel | None]:
            raw = await self._attempt(request, params, usage_parts)
            if request.schema is None:
                return raw, None
            try:
                return raw, parse_structured(raw.text, request.schema)
            except ValidationError as exc:
                msg = f"output fails {request.schema.__name__}: {exc.errors()[0]['msg']}"
                raise InvalidOutput(msg, raw) from None

        try:
            try:  # the first attempt runs outside tenacity: most requests need no retry
                raw, parsed = await attempt_once()
            except RetryableError as first:
                if not should_retry(first):
                    raise
                await asyncio.sleep(self._wait_after(first, 1))
                async for attempt in AsyncRetrying(
                    stop=stop_never,
                    wait=self._wait,
                    reraise=True,
                    retry=retry_if_exception(should_retry),
                ):
                    with attempt:
                        raw, parsed = await attempt_once()
        except (CutOff, InvalidOutput) as exc:
            return self._failed(request, params, str(exc), exc.raw, usage_parts, started, counts)
        except AuthFailed:
            raise
        except FatalError as exc:
            return self._failed(request, params, str(exc), None, usage_parts, started, counts)
        except RetryableError as exc:
            return self._failed(
                request,
                params,
                f"{exc} (after {counts['transient']} attempts)",
                None,
                usage_parts,
                started,
                counts,
            )
        finally:
            self.reserved_usd -= estimate
        assert raw is not None
        if self.cache is not None:
            self.cache.put(key, self.spec, raw)
        total = sum(usage_parts, Usage())
        return self._finish(
            request,
            params,
            raw.text,
            raw.finish_reason,
            total,
            started,
            parsed=parsed,
            attempts=sum(counts.values()) + 1,
        )

    def _finish(
        self,
        request: ChatRequest,
        params: dict[str, Any],
        text: str | None,
        finish: str | None,
        usage: Usage,
        started: float,
        *,
        parsed: BaseModel | None = None,
        cached: bool = False,
        attempts: int = 1,
        status: str = "ok",
        error: str | None = None,
    ) -> Completion:
        latency = time.monotonic() - started
        trace = LLMCall(
            model=self.spec,
            purpose=request.purpose,
            template=request.template,
            params=params,
            messages=[Message.model_validate(m) for m in request.messages],
            response=text,
            finish_reason=finish,
            status="ok" if status == "ok" else "failed",
            error=error,
            usage=usage,
            latency_s=latency,
            cached=cached,
        )
        return Completion(
            text=text,
            finish_reason=finish,
            usage=usage,
            latency_s=latency,
            model=self.spec,
            status=status,
            error=error,
            parsed=parsed,
            cached=cached,
            attempts=attempts,
            trace=trace,
        )

    def _failed(
        self,
        request: ChatRequest,
        params: dict[str, Any],
        error: str,
        raw: RawCompletion | None,
        usage_parts: list[Usage],
        started: float,
        counts: Counter[str],
    ) -> Completion:
        self.stats.failed += 1
        return self._finish(
            request,
            params,
            raw.text if raw else None,
            raw.finish_reason if raw else None,
            sum(usage_parts, Usage()),
            started,
            attempts=sum(counts.values()),
            status="failed",
            error=self.redact(error),
        )
