"""Work identity in journals, one send per distinct request in flight, empty replies (#13)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, JobResult, Progress, read_journal, run_job
from distillery.teacher.types import ChatRequest

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import chat_requests, openai_config, server, user

__all__ = ["server"]  # the fixture


def items(texts: list[str]) -> list[JobItem]:
    return [JobItem(f"q{i}", ChatRequest(user(t), purpose="test")) for i, t in enumerate(texts)]


def job(config: TeacherConfig, todo: list[JobItem], journal: Path) -> JobResult:
    async def go() -> JobResult:
        async with Teacher(config) as teacher:
            return await run_job(teacher, todo, journal, quiet=True)

    return asyncio.run(go())


def test_resume_reuses_only_entries_made_for_the_same_request(
    server: MockLLMServer, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    texts = [f"question {i}" for i in range(5)]
    first = job(openai_config(server, tmp_path), items(texts), journal)
    assert len(first.rows) == 5 and chat_requests(server) == 5
    again = job(openai_config(server, tmp_path), items(texts), journal)
    assert again.skipped == 5 and again.changed == 0 and chat_requests(server) == 5
    # one item's messages change: only it is done again, with the new answer
    texts[1] = "a different question"
    edited = job(openai_config(server, tmp_path), items(texts), journal)
    assert (edited.skipped, edited.changed, chat_requests(server)) == (4, 1, 6)
    assert edited.rows["q1"].response == "echo: a different question"
    # another temperature: every item is redone, none served from the 0.7 entries
    cooler = job(openai_config(server, tmp_path, temperature=0.1), items(texts), journal)
    assert (cooler.skipped, cooler.changed, chat_requests(server)) == (0, 5, 11)
    assert all(r.trace and r.trace.params["temperature"] == 0.1 for r in cooler.rows.values())
    # going back to 0.7: the journal's 0.7 entries are the same work again, nothing is sent
    back = job(openai_config(server, tmp_path), items(texts), journal)
    assert back.skipped == 5 and chat_requests(server) == 11
    assert all(r.fingerprint for r in read_journal(journal).values())


def test_an_entry_written_before_fingerprints_is_redone_from_the_cache(
    server: MockLLMServer, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    job(openai_config(server, tmp_path), items(["a", "b"]), journal)
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({**r, "fingerprint": None}) + "\n" for r in rows))
    again = job(openai_config(server, tmp_path), items(["a", "b"]), journal)
    assert again.skipped == 0 and all(r.cached for r in again.rows.values())
    assert chat_requests(server) == 2  # the response cache made the redo free


def test_identical_requests_in_flight_are_sent_once(server: MockLLMServer, tmp_path: Path) -> None:
    server.configure(latency_s=0.3)  # every request is still in flight when its twins start
    texts = [f"distinct {i % 5}" for i in range(20)]
    config = openai_config(server, tmp_path, cache=False, concurrency=20)

    async def go() -> tuple[JobResult, Any]:
        async with Teacher(config) as teacher:
            done = await run_job(teacher, items(texts), tmp_path / "j.jsonl", quiet=True)
            return done, teacher.stats

    done, stats = asyncio.run(go())
    assert chat_requests(server) == 5  # 20 items, 5 distinct requests
    assert stats.sent == 5 and stats.deduplicated == 15
    assert all(done.rows[f"q{i}"].response == f"echo: {texts[i]}" for i in range(20))
    assert sum(r.cached for r in done.rows.values()) == 15


class NullContentServer(MockLLMServer):
    """Answers every chat request with `"content": null` and finish_reason `stop`."""

    async def _chat(self, request: web.Request) -> web.Response:
        self.stats.per_item["null"] += 1
        message = {"role": "assistant", "content": None}
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 0},
            }
        )


def test_a_reply_with_null_content_is_a_recorded_failure_with_the_raw_reply(
    tmp_path: Path,
) -> None:
    srv = NullContentServer().start_in_thread()
    try:
        config = openai_config(srv, tmp_path, max_parse_retries=1)
        done = job(config, items(["hello"]), tmp_path / "j.jsonl")
    finally:
        srv.stop_thread()
    row = done.rows["q0"]
    assert row.status == "failed" and row.response is None
    assert row.error and row.error.startswith("empty_content: the reply has no text")
    assert '"content": null' in row.error  # the raw reply, for the user to see why
    assert srv.stats.per_item["null"] == 2  # retried once, like an invalid structured answer
    assert done.failed == [row]


def test_roles_sharing_one_teacher_each_count_their_own_calls(
    server: MockLLMServer, tmp_path: Path
) -> None:
    config = openai_config(
        server, tmp_path, prices={"mock-model": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}}
    )

    async def go() -> Teacher:
        async with Teacher(config) as teacher:
            evolve = [JobItem(f"e{i}", ChatRequest(user(f"evolve {i}"))) for i in range(3)]
            answer = [JobItem(f"a{i}", ChatRequest(user(f"answer {i}"))) for i in range(2)]
            await asyncio.gather(
                run_job(teacher, evolve, tmp_path / "e.jsonl", quiet=True, role="evolution"),
                run_job(teacher, answer, tmp_path / "a.jsonl", quiet=True, role="responses"),
            )
            again = [JobItem("x", ChatRequest(user("answer 0")))]  # a cache hit
            await run_job(teacher, again, tmp_path / "x.jsonl", quiet=True, role="responses")
            return teacher

    teacher = asyncio.run(go())
    evolution, responses, total = (
        teacher.stats_for("evolution"),
        teacher.stats_for("responses"),
        teacher.stats,
    )
    assert (evolution.sent, responses.sent, total.sent) == (3, 2, 5)
    assert (evolution.cache_hits, responses.cache_hits) == (0, 1)
    assert evolution.spent_usd > 0 and responses.spent_usd > 0
    assert evolution.spent_usd + responses.spent_usd == pytest.approx(total.spent_usd)
    assert evolution.input_tokens + responses.input_tokens == total.input_tokens


FIELDS = ("done", "req/s", "elapsed", "ETA", "tokens", "in /", "out", "$", "cache hits", "retries")


def test_progress_on_a_log_is_plain_lines_with_every_field(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal (pytest's stderr is not one): whole lines, no `\\r` redraws; a fast job
    gets its first and last line only (the next is due 10 s later); `quiet` shows nothing."""
    config = openai_config(server, tmp_path)
    todo = items(["one", "two", "flaky [[fault:500:1]]"])

    async def go(quiet: bool, journal: str) -> None:
        async with Teacher(config) as teacher:
            await run_job(teacher, todo, tmp_path / journal, quiet=quiet)

    asyncio.run(go(quiet=False, journal="a.jsonl"))
    err = capsys.readouterr().err
    assert "\r" not in err
    first, last = err.splitlines()
    assert first.startswith("0/3 done") and last.startswith("3/3 done")
    for field in (*FIELDS, "failed 0"):
        assert field in last, field
    assert "tokens 4 in / 7 out" in last and "retries 1" in last
    asyncio.run(go(quiet=True, journal="b.jsonl"))
    assert capsys.readouterr().err == ""


def test_progress_lines_come_at_most_every_every_s(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def go() -> None:
        async with Teacher(openai_config(server, tmp_path)) as teacher:
            progress = Progress(3, teacher, every_s=0.0)
            for _ in range(3):
                progress.tick()
            progress.close()

    asyncio.run(go())
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"{n}/3 done" for n in (0, 1, 2, 3, 3)]
    assert all("cache hits 0" in line for line in lines)


def test_the_projection_counts_a_raw_prompt_as_input() -> None:
    """Magpie's requests carry a raw prompt and no messages: the printed projection counts
    its tokens like the dollar projection does (it printed 0 input tokens)."""
    from distillery.teacher.jobs import project

    teacher = Teacher(TeacherConfig(spec="fake"))
    raw = ChatRequest(messages=[], prompt="x" * 400)
    chat = ChatRequest(messages=[{"role": "user", "content": "x" * 400}])
    by_prompt = project(teacher, [JobItem("a", raw)])
    assert by_prompt.input_tokens == project(teacher, [JobItem("b", chat)]).input_tokens == 100
