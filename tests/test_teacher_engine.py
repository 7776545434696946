"""The teacher engine against a loopback server, over both transports of both protocols: the
real openai/anthropic SDKs (`transport: sdk`) and the direct aiohttp path (`direct`)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from distillery.errors import BudgetStop, UserError
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.limits import AdaptiveGate, TokenBucket
from distillery.teacher.types import ChatRequest

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import (
    BACKENDS,
    ScriptedTeacher,
    anthropic_config,
    backend_config,
    chat_requests,
    openai_config,
    server,
    stats,
    user,
)

__all__ = ["server"]  # the fixture


async def run_all(config: TeacherConfig, prompts: list[str], **kw) -> list:
    async with Teacher(config, **kw) as teacher:
        return list(
            await asyncio.gather(*(teacher.complete(ChatRequest(user(p))) for p in prompts))
        )


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_openai_round_trip(server: MockLLMServer, tmp_path: Path, transport: str) -> None:
    config = openai_config(server, tmp_path, transport=transport)
    [res] = asyncio.run(run_all(config, ["hello there"]))
    assert res.ok and res.text == "echo: hello there"
    assert res.finish_reason == "stop"
    assert res.usage.input_tokens == 2 and res.usage.output_tokens == 3
    assert res.trace.messages[0].content == "hello there"
    assert res.trace.params["max_tokens"] == 2048


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_anthropic_round_trip_maps_system_prompt(
    server: MockLLMServer, tmp_path: Path, transport: str
) -> None:
    # the mock answers 400, as the real API does, to a `system` role among the messages or a
    # request without an anthropic-version header
    messages = [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "[[show-system]] hi"},
    ]

    async def go():
        async with Teacher(anthropic_config(server, tmp_path, transport=transport)) as teacher:
            return await teacher.complete(ChatRequest(messages))

    res = asyncio.run(go())
    assert res.ok and res.text == "system: be terse"
    assert res.finish_reason == "stop" and res.attempts == 1
    assert res.usage.input_tokens == 2 and res.usage.output_tokens == 3
    assert stats(server)["requests"]["/v1/messages"] == 1


def test_anthropic_transports_send_the_same_headers(
    server: MockLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`direct` asks for the API version the installed SDK asks for, with the key in x-api-key."""
    server.configure(api_key="sk-ant-right")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-right")
    sent = {}
    for transport in ("direct", "sdk"):
        config = anthropic_config(server, tmp_path, transport=transport, cache=False)
        [res] = asyncio.run(run_all(config, ["hi"]))
        assert res.ok
        sent[transport] = stats(server)["headers"]["/v1/messages"]
    assert sent["direct"]["x-api-key"] == "sk-ant-right" and "authorization" not in sent["direct"]
    assert sent["direct"]["anthropic-version"] == sent["sdk"]["anthropic-version"]


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_anthropic_error_body_is_reported(
    server: MockLLMServer, tmp_path: Path, transport: str
) -> None:
    config = anthropic_config(server, tmp_path, spec="anthropic:nope", transport=transport)

    with pytest.raises(UserError, match="model 'nope' is not served"):
        asyncio.run(Teacher(config).start())  # the preflight catches it first...

    async def unchecked():  # ...and without it the API's error message is the item's error
        teacher = await Teacher(config).start(preflight=False)
        try:
            return await teacher.complete(ChatRequest(user("hi")))
        finally:
            await teacher.aclose()

    res = asyncio.run(unchecked())
    assert res.status == "failed" and res.attempts == 1
    assert res.error == f"HTTP 404 from {server.base_url}: model 'nope' not found"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fault", ["429", "500", "503", "529", "drop", "malformed", "timeout"])
def test_faults_are_retried_and_answers_reach_their_items(
    server: MockLLMServer, tmp_path: Path, backend: str, fault: str
) -> None:
    server.configure(hang_s=2.0)
    config = backend_config(server, tmp_path, backend, timeout_s=0.5)
    prompts = [f"item {i} [[fault:{fault}:2]]" if i % 3 == 0 else f"item {i}" for i in range(12)]
    results = asyncio.run(run_all(config, prompts))
    assert all(r.ok for r in results)
    for prompt, res in zip(prompts, results, strict=True):
        assert res.text == f"echo: {prompt}"
    faulted = [r for p, r in zip(prompts, results, strict=True) if "fault" in p]
    assert all(r.attempts == 3 for r in faulted)
    assert stats(server)["faults"][fault] == 2 * len(faulted)


@pytest.mark.parametrize(("backend", "fault"), [("openai", "429"), ("anthropic", "529")])
def test_retry_after_is_honoured_and_throttles_the_client(
    server: MockLLMServer, tmp_path: Path, backend: str, fault: str
) -> None:
    server.configure(retry_after_s=0.4)

    async def go():
        async with Teacher(backend_config(server, tmp_path, backend)) as teacher:
            start = time.monotonic()
            res = await teacher.complete(ChatRequest(user(f"x [[fault:{fault}]]")))
            return res, time.monotonic() - start, teacher.gate

    res, elapsed, gate = asyncio.run(go())
    assert res.ok and elapsed >= 0.4
    assert gate.throttle_events == 1 and gate.window < gate.max_limit


def test_gives_up_after_max_retries_and_records_failure(
    server: MockLLMServer, tmp_path: Path
) -> None:
    config = openai_config(server, tmp_path, max_retries=2)
    [res] = asyncio.run(run_all(config, ["doomed [[fault:500:99]]"]))
    assert res.status == "failed" and res.text is None
    assert "HTTP 500" in res.error and "after 3 attempts" in res.error
    assert res.trace.status == "failed"


@pytest.mark.parametrize("backend", BACKENDS)  # Anthropic's stop_reason max_tokens: length
def test_length_cut_off_is_retried_then_failed_with_raw_output(
    server: MockLLMServer, tmp_path: Path, backend: str
) -> None:
    config = backend_config(server, tmp_path, backend, max_tokens=3, max_length_retries=1)
    [res] = asyncio.run(run_all(config, ["a long answer that will not fit"]))
    assert res.status == "failed"
    assert res.finish_reason == "length"
    assert res.text == "echo: a long"  # the raw output is kept, never dropped
    assert res.attempts == 2
    assert res.usage.output_tokens == 6  # both cut-off answers were paid for and are counted


def test_cache_hits_send_nothing_and_key_ignores_concurrency(
    server: MockLLMServer, tmp_path: Path
) -> None:
    prompts = [f"q{i}" for i in range(10)]
    asyncio.run(run_all(openai_config(server, tmp_path, concurrency=4), prompts))
    assert chat_requests(server) == 10
    again = asyncio.run(
        run_all(openai_config(server, tmp_path, concurrency=32, max_retries=1), prompts)
    )
    assert chat_requests(server) == 10
    assert all(r.cached and r.ok for r in again)
    asyncio.run(run_all(openai_config(server, tmp_path, max_tokens=100), prompts))
    assert chat_requests(server) == 20  # max_tokens changes the answer: a new key


def test_failed_answers_are_not_cached(server: MockLLMServer, tmp_path: Path) -> None:
    config = openai_config(server, tmp_path, max_retries=0)
    [first] = asyncio.run(run_all(config, ["flaky [[fault:500:1]]"]))
    assert first.status == "failed"
    [second] = asyncio.run(run_all(config, ["flaky [[fault:500:1]]"]))
    assert second.ok and not second.cached


def test_replicas_balance_and_a_failing_one_leaves_rotation(tmp_path: Path) -> None:
    good, bad = MockLLMServer().start_in_thread(), MockLLMServer().start_in_thread()
    try:
        good.configure(latency_s=0.01)
        bad.configure(fault_rate=1.0, fault_kinds=["503"])
        config = openai_config(
            good,
            tmp_path,
            base_urls=[f"{good.base_url}/v1", f"{bad.base_url}/v1"],
            replica_max_failures=2,
            replica_cooldown_s=60,
            concurrency=4,
        )
        results = asyncio.run(run_all(config, [f"r{i}" for i in range(40)]))
        assert all(r.ok for r in results)
        assert chat_requests(good) == 40
        assert chat_requests(bad) <= 6  # out of rotation after a couple of failures
    finally:
        good.stop_thread()
        bad.stop_thread()


def test_in_flight_balancing_across_healthy_replicas(tmp_path: Path) -> None:
    a, b = MockLLMServer().start_in_thread(), MockLLMServer().start_in_thread()
    try:
        a.configure(latency_s=0.2)  # a slow replica holds its requests longer...
        b.configure(latency_s=0.01)
        config = openai_config(
            a, tmp_path, base_urls=[f"{a.base_url}/v1", f"{b.base_url}/v1"], concurrency=8
        )
        asyncio.run(run_all(config, [f"r{i}" for i in range(80)]))
        # ...so by in-flight count the fast one gets most of the work, and both get some
        assert chat_requests(b) > 3 * chat_requests(a) > 0
    finally:
        a.stop_thread()
        b.stop_thread()


def test_budget_stops_before_crossing_the_cap(server: MockLLMServer, tmp_path: Path) -> None:
    config = openai_config(
        server,
        tmp_path,
        max_tokens=10,
        max_cost_usd=0.001,
        prices={"mock-model": {"input_per_mtok": 10.0, "output_per_mtok": 10.0}},
    )

    async def go():
        async with Teacher(config) as teacher:
            done = 0
            with pytest.raises(BudgetStop):
                for i in range(1000):
                    await teacher.complete(ChatRequest(user(f"spend {i}")))
                    done += 1
            return done, teacher.stats.spent_usd

    done, spent = asyncio.run(go())
    assert 0 < done < 1000
    assert spent <= 0.001


def test_no_teacher_configured_explains_how() -> None:
    with pytest.raises(UserError, match=r"no teacher configured: set teacher.spec"):
        Teacher(TeacherConfig())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt4", "unknown backend 'gpt4'"),
        ("openai:", "expected openai:MODEL"),
        ("mistral:x", "unknown backend"),
    ],
)
def test_malformed_teacher_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TeacherConfig(spec=spec)


def test_missing_api_key_fails_before_any_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="no API key: set OPENAI_API_KEY"):
        asyncio.run(Teacher(TeacherConfig(spec="openai:gpt-4o-mini", cache=False)).start())


def test_preflight_rejects_unlisted_model_and_unreachable_server(
    server: MockLLMServer, tmp_path: Path
) -> None:
    config = openai_config(server, tmp_path, spec="openai:not-served")
    with pytest.raises(
        UserError, match=r"model 'not-served' is not served by .*it lists: mock-model"
    ):
        asyncio.run(Teacher(config).start())
    dead = openai_config(server, tmp_path, base_urls=["http://127.0.0.1:9/v1"])
    with pytest.raises(UserError) as refused:
        asyncio.run(Teacher(dead).start())
    # a refused connection says so, with host:port, never "timeout" (#13)
    message = str(refused.value)
    assert "preflight failed: connection refused by 127.0.0.1:9 (http://127.0.0.1:9/v1)" in message
    assert "timeout" not in message
    assert chat_requests(server) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_rejected_key_is_reported_without_the_key(
    server: MockLLMServer, tmp_path: Path, monkeypatch, backend: str
) -> None:
    server.configure(api_key="right-key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-SECRET-123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-wrong-SECRET-123")
    with pytest.raises(UserError) as err:
        asyncio.run(Teacher(backend_config(server, tmp_path, backend)).start())
    assert "API key was rejected" in str(err.value) and "SECRET" not in str(err.value)


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_connection_refused_mid_run_is_named_never_a_timeout(
    server: MockLLMServer, tmp_path: Path, backend: str
) -> None:
    """A server gone after the preflight: the item's error says the connection was refused,
    with host:port and URL (the SDKs' aiohttp transport reports it as a timeout) (#13)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}" + ("" if backend.startswith("anthropic") else "/v1")
    config = backend_config(server, tmp_path, backend, base_urls=[url], max_retries=1)

    async def go():
        teacher = await Teacher(config).start(preflight=False)
        try:
            return await teacher.complete(ChatRequest(user("anyone there?")))
        finally:
            await teacher.aclose()

    res = asyncio.run(go())
    assert res.status == "failed" and res.attempts == 2
    assert res.error == f"connection refused by 127.0.0.1:{port} ({url}) (after 2 attempts)"


def test_token_bucket_waits_off_its_debt() -> None:
    async def go() -> float:
        bucket = TokenBucket(per_minute=6000)  # 100/s
        bucket.charge(6000 + 30)  # 30 tokens of debt -> ~0.3 s
        start = time.monotonic()
        await bucket.wait()
        return time.monotonic() - start

    assert 0.2 <= asyncio.run(go()) <= 1.0


def test_adaptive_gate_bounds_in_flight_and_recovers() -> None:
    async def go() -> tuple[int, float]:
        gate = AdaptiveGate(8)
        peak = 0

        async def one() -> None:
            nonlocal peak
            await gate.acquire()
            peak = max(peak, gate.in_flight)
            await asyncio.sleep(0.005)
            await gate.release(True)

        epoch = await gate.acquire()
        await gate.release(False)
        gate.throttle(None, epoch)
        gate.throttle(None, epoch)  # same generation of requests: one signal
        assert gate.limit == 6
        await asyncio.gather(*(one() for _ in range(200)))
        return peak, gate.window

    peak, window = asyncio.run(go())
    assert peak <= 8 and window == 8


def test_a_scripted_teacher_answers_from_its_script() -> None:
    def script(request: ChatRequest, params: dict[str, Any]) -> str:
        return f"{request.purpose}: {request.messages[-1]['content']} (max {params['max_tokens']})"

    async def go():
        async with ScriptedTeacher(script, max_tokens=7) as teacher:
            return await teacher.complete(ChatRequest(user("hi"), purpose="judge"))

    res = asyncio.run(go())
    assert res.ok and res.text == "judge: hi (max 7)" and not res.cached


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "pause_turn"),
    ],
)
def test_anthropic_answer_is_its_text_blocks_and_a_normalised_stop_reason(
    stop_reason: str, finish: str
) -> None:
    from distillery.teacher.anthropic_api import DirectAnthropicReplica

    config = TeacherConfig(spec="anthropic:m", cache=False)
    replica = DirectAnthropicReplica(config, "http://127.0.0.1:1", "key")
    body = {
        "content": [
            {"type": "thinking", "thinking": "hidden"},
            {"type": "text", "text": "Hello, "},
            {"type": "text", "text": "world"},
        ],
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 11, "output_tokens": 5, "cache_read_input_tokens": 3},
    }
    raw = replica.decode(json.dumps(body).encode())
    assert (raw.text, raw.finish_reason) == ("Hello, world", finish)
    assert (raw.input_tokens, raw.output_tokens) == (11, 5)
