"""Teacher calls on Ray when a process dies mid-run: one teacher actor of `generate` and of
the filter judge, and the driver of `complete` (`kill -9`).

After a killed actor the run finishes with each row and verdict in the journal once, the
same outputs as a local run, and request counters that agree with what the loopback server
received: never fewer, more only by requests in flight at the kill (counted at their worst
case, `ray_complete`). The generate and judge runs are served by `ReplayServer`, which
answers each request as the scripted fake teacher did in a local run, so every stage does
real work over HTTP and the server counts what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from distillery.cli import main
from distillery.complete import journal_path
from distillery.executors.ray_complete import WORKER_PREFIX

from tests.helpers.mockserver import MockLLMServer, Stats, _body, item_key
from tests.helpers.teacher import chat_requests, server, stats
from tests.test_ray_executor import (
    complete_args,
    filter_rows,
    without_latency,
    write_requests,
)
from tests.test_seeds import SEEDS

__all__ = ["server"]
CONCURRENCY = 4  # teacher.concurrency of the Ray runs: the most requests in flight at a kill
PRICE = 0.001  # dollars per input or output token


class ReplayServer(MockLLMServer):
    """The loopback server answering each chat request with `answers[item_key(messages)]`,
    the fake teacher's answer to the same messages, cut at `max_tokens` words as the fake
    cuts it; a request with no recorded answer is a 400, listed in `missing`. `billed` adds
    up the tokens of every answer it made, returned to a live client or not."""

    def __init__(self, answers: dict[str, str], **behaviour: Any) -> None:
        super().__init__(**behaviour)
        self.answers = answers
        self.missing: list[str] = []
        self.billed: Counter[str] = Counter()

    async def _chat(self, request: web.Request) -> web.Response:
        req = json.loads(await request.read())
        key = item_key(req["messages"])
        self.stats.per_item[key] += 1
        if key not in self.answers:
            self.missing.append(key)
            return web.json_response({"error": {"message": "no recorded answer"}}, status=400)
        text, limit = self.answers[key], int(req.get("max_tokens") or req["max_completion_tokens"])
        words, finish = text.split(), "stop"
        if len(words) > limit:
            words, finish = words[:limit], "length"
            text = " ".join(words)
        n_in = sum(len(m["content"].split()) for m in req["messages"])
        self.billed.update(input=n_in, output=len(words))  # paid once the server has it
        self.stats.in_flight += 1
        try:
            await asyncio.sleep(self.behaviour.latency_s)
        finally:
            self.stats.in_flight -= 1
        body = _body(False, key, req["model"], text, finish, (n_in, len(words)))
        return web.json_response(body)


def fake_answers(monkeypatch: pytest.MonkeyPatch, run: Callable[[], int]) -> dict[str, str]:
    """The fake teacher's answer to each request's messages over a local `run` (exit 0)."""
    from distillery.teacher import local

    script, answers = local.demo_script, dict[str, str]()

    def recording(request: Any, params: dict[str, Any]) -> str:
        text = script(request, params)
        assert answers.setdefault(item_key(request.messages), text) == text  # one per request
        return text

    monkeypatch.setattr(local, "demo_script", recording)
    assert run() == 0
    monkeypatch.setattr(local, "demo_script", script)
    return answers


def kill_when_busy(ray: Any, srv: ReplayServer, after: int, killed: list[int]) -> None:
    """Once the server has had `after` chat requests and some are in flight, kill the
    teacher actors alive then (with `ray.workers=1`, the one sending them; Ray restarts
    it); `killed` gets the number of requests the server held at that moment."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(srv.stats.per_item.values()) >= after and srv.stats.in_flight > 0:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            ours = [n for n in names if n.startswith(WORKER_PREFIX)]
            if ours:
                killed.append(srv.stats.in_flight)
                for name in ours:
                    ray.kill(ray.get_actor(name), no_restart=False)
                return
        time.sleep(0.005)


@pytest.fixture
def replay() -> Iterator[Callable[[dict[str, str]], ReplayServer]]:
    started: list[ReplayServer] = []

    def start(answers: dict[str, str]) -> ReplayServer:
        srv = ReplayServer(answers, latency_s=0.3)
        started.append(srv)
        srv.start_in_thread()
        return srv

    yield start
    for srv in started:
        srv.stop_thread()


def run_killed_on_ray(ray: Any, srv: ReplayServer, after: int, run: Callable[[], int]) -> Stats:
    """`run` on Ray with a fresh count of the server's requests, killing the teacher actor
    once; what the server received."""
    srv.stats, srv.billed = Stats(), Counter()
    killed: list[int] = []
    killer = threading.Thread(target=kill_when_busy, args=(ray, srv, after, killed))
    killer.start()
    assert run() == 0
    killer.join()
    assert killed, "no teacher actor was killed mid-run"
    assert max(srv.stats.per_item.values()) >= 2  # a request cut off by the kill, sent again
    print(
        f"killed with {killed[0]} requests at the server, {sum(srv.stats.per_item.values())} in all"
    )
    return srv.stats


def assert_counted(counters: dict[str, Any], srv: ReplayServer, received: Stats) -> None:
    """The run's counters against the server's: every request it received counted, at most
    those in flight at the kill more; tokens at least what it billed."""
    sent = sum(received.per_item.values())
    print(f"counted {counters}; the server received {sent} and billed {dict(srv.billed)}")
    assert sent <= counters["requests_sent"] <= sent + CONCURRENCY, (counters, sent)
    assert counters["output_tokens"] >= srv.billed["output"]
    # in flight at the kill: `max_tokens` output and ~4 characters per input token, more
    # than the server's one token per word for these English prompts
    assert counters["input_tokens"] >= srv.billed["input"]
    assert counters["spent_usd"] >= PRICE * srv.billed.total() - 1e-6  # rounded to 1e-6


def journal_ids(journal: Path) -> dict[str, list[str]]:
    """Each journal file's ids, in order."""
    return {
        path.name: [json.loads(line)["id"] for line in path.read_text().splitlines()]
        for path in sorted(journal.glob("*.jsonl"))
    }


def assert_journals_once_as_local(local: Path, ray: Path) -> None:
    ours, theirs = journal_ids(ray), journal_ids(local)
    assert ours.keys() == theirs.keys()
    for name, ids in ours.items():
        assert len(ids) == len(set(ids)), name  # no entry twice
        assert sorted(ids) == sorted(theirs[name]), name


def generate(tmp_path: Path, out: str, *extra: str) -> int:
    """12 rows without evolution: 38 requests in five stages (each a job of its own)."""
    return main(
        [
            "generate", "--seeds", str(SEEDS), "--num-instructions", "12", "--output-dir",
            str(tmp_path / out), "--run-id", "r", "--quiet", "evol.rounds=0", *extra,
        ]
    )  # fmt: skip


def over_http(srv: MockLLMServer, role: str = "teacher") -> tuple[str, ...]:
    """The `role`'s teacher (`teacher`, `judge.teacher`) is the server's, at `PRICE` per
    token, without a cache."""
    flag = "--teacher" if role == "teacher" else "--judge"
    price = f"{{mock-model: {{input_per_mtok: {PRICE * 1e6:g}, output_per_mtok: {PRICE * 1e6:g}}}}}"
    return (flag, "openai:mock-model", f"{role}.base_urls=[{srv.base_url}/v1]",
            f"{role}.cache=false", f"{role}.timeout_s=10", f"{role}.prices={price}")  # fmt: skip


ON_RAY = ("ray.workers=1", "ray.chunk_size=2", f"teacher.concurrency={CONCURRENCY}")


@pytest.mark.slow
def test_generate_on_ray_survives_a_killed_teacher_actor_and_counts_its_requests(
    ray_instance: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    replay: Callable[[dict[str, str]], ReplayServer],
) -> None:
    answers = fake_answers(
        monkeypatch, lambda: generate(tmp_path, "fake", "--teacher", "fake", "teacher.cache=false")
    )
    srv = replay(answers)
    assert generate(tmp_path, "local", *over_http(srv)) == 0
    assert not srv.missing and chat_requests(srv) == len(answers)  # every stage over HTTP
    on_ray = (*over_http(srv), "--executor", "ray", *ON_RAY)
    received = run_killed_on_ray(ray_instance, srv, 14, lambda: generate(tmp_path, "ray", *on_ray))
    local, ray = tmp_path / "local" / "r", tmp_path / "ray" / "r"
    for name in ("generated.jsonl", "rejected.jsonl"):
        assert without_latency((ray / name).read_text()) == without_latency(
            (local / name).read_text()
        ), name
    assert_journals_once_as_local(local / "journal", ray / "journal")
    manifest = json.loads((ray / "manifest.json").read_text())
    totals = Counter[str]()
    for role in manifest["teachers"].values():
        totals.update({k: v for k, v in role.items() if isinstance(v, (int, float))})
    assert totals["requests_sent"] == manifest["requests_sent"]
    assert_counted(totals, srv, received)


def judge(tmp_path: Path, out: str, *extra: str) -> int:
    return main(
        [
            "filter", "--input", str(tmp_path / "in.jsonl"), "--output-dir", str(tmp_path / out),
            "--steps", "judge", "judge.min_score=7", "judge.max_parse_retries=0",
            "judge.max_parse_failure_rate=1", *extra,
        ]
    )  # fmt: skip


@pytest.mark.slow
def test_filter_judge_on_ray_survives_a_killed_teacher_actor_and_counts_its_requests(
    ray_instance: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    replay: Callable[[dict[str, str]], ReplayServer],
) -> None:
    rows, _ = filter_rows()
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:40]))
    answers = fake_answers(
        monkeypatch, lambda: judge(tmp_path, "fake", "--judge", "fake", "judge.teacher.cache=false")
    )
    srv = replay(answers)
    http = over_http(srv, "judge.teacher")
    assert judge(tmp_path, "local", *http) == 0
    assert not srv.missing and chat_requests(srv) == len(answers) == 40
    on_ray = (*http, "executor=ray", *ON_RAY[:2], f"judge.teacher.concurrency={CONCURRENCY}")
    received = run_killed_on_ray(ray_instance, srv, 12, lambda: judge(tmp_path, "ray", *on_ray))
    local, ray = tmp_path / "local", tmp_path / "ray"
    for name in ("kept.jsonl", "dropped.jsonl"):
        assert without_latency((ray / name).read_text()) == without_latency(
            (local / name).read_text()
        ), name
    assert_journals_once_as_local(local / "journal", ray / "journal")
    verdicts = journal_ids(ray / "journal")["judge_attempt0.jsonl"]
    assert sorted(verdicts) == sorted(r["id"] for r in rows[:40])
    invocations = (ray / "invocations.jsonl").read_text().splitlines()
    assert len(invocations) == 1
    assert_counted(json.loads(invocations[0])["counters"], srv, received)


def sent_before_rows(run: Path, journal: Path) -> bool:
    """Whether the driver's saved counters (`running.json`) show requests sent while its
    journal has no row yet (read in that order: the journal is written before a chunk's
    counters are saved)."""
    try:
        saved = json.loads((run / "running.json").read_text())["counters"]
    except (OSError, ValueError, KeyError):  # not yet written, or caught mid-write
        return False
    return bool(saved.get("requests_sent")) and not (journal.exists() and journal.read_text())


@pytest.mark.slow
def test_complete_on_ray_resumes_after_the_driver_is_killed(
    ray_instance: Any, server: MockLLMServer, tmp_path: Path
) -> None:
    """`kill -9` of the driver (a process of its own, joined to this test's Ray instance):
    the same command resumes from the journal, each row once, and the two invocations
    together send at most one uninterrupted run's requests plus those in flight at the kill
    (the answers the dying actors got are in the cache). Before the first chunk is back,
    the driver has saved what was sent (`SAVE_EVERY_S`), so a kill then still counts it."""
    n = 32
    write_requests(tmp_path / "in.jsonl", n)
    server.configure(latency_s=1.0)  # a chunk of 8 takes >= 2 s: a save comes first
    address = ray_instance.get_runtime_context().gcs_address
    on_ray = ("executor=ray", f"ray.address={address}", "ray.workers=2", "ray.chunk_size=8",
              f"teacher.concurrency={CONCURRENCY}")  # fmt: skip
    args = complete_args(server, tmp_path, "out.jsonl", *on_ray)
    driver = subprocess.Popen(
        [sys.executable, "-m", "distillery.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = journal_path(tmp_path / "out.jsonl")
    deadline, saved_early = time.monotonic() + 60, False
    while not (journal.exists() and journal.read_text().count("\n") >= 8):
        assert driver.poll() is None and time.monotonic() < deadline, "no rows before the kill"
        saved_early = saved_early or sent_before_rows(journal.parent, journal)
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert saved_early, "nothing sent was saved before the first chunk came back"
    before = journal.read_text().count("\n")
    assert before < n and not (tmp_path / "out.jsonl").exists()
    assert main(args) == 0  # the same command, in this process
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(n)]
    assert all(r["response"] == f"echo: question {i}" for i, r in enumerate(rows))
    ids = [json.loads(line)["id"] for line in journal.read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n))  # each row journaled once
    assert len(stats(server)["per_item"]) == n
    assert chat_requests(server) <= n + CONCURRENCY  # one run's + those in flight at the kill
    manifest = json.loads((journal.parent / "manifest.json").read_text())
    print(f"server {chat_requests(server)}, counted {manifest['requests_sent']}, rows {before}")
