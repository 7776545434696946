"""Multi-turn generation (`conversation.turns`), offline: the user simulator and its end
signal, Magpie continuing its own conversations, each turn's trace, and a run killed after
turn 2 of 4 that resumes at turn 3 without sending anything twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from distillery import calls
from distillery.generate.context import GenContext
from distillery.generate.run import run_generate
from distillery.parsing import ParseFailure

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import openai_config, server, stats
from tests.test_magpie import magpie_config, records, tokenizer_dir
from tests.test_seeds import SEEDS

__all__ = ["server"]


def self_instruct(tmp_path: Path, turns: Any, **kw: Any) -> Path:
    from distillery.generate.config import GenerateConfig

    config = GenerateConfig.model_validate({
        "seeds": str(SEEDS), "output_dir": str(tmp_path / "runs"), "run_id": "c",
        "num_instructions": 12, "quiet": True, "evol": {"rounds": 1},
        "teacher": {"spec": "fake", "cache": False}, "categories": {"method": "rouge"},
        "conversation": {"turns": turns}, **kw,
    })  # fmt: skip
    assert run_generate(config) == 0
    return tmp_path / "runs" / "c"


def test_rows_hold_the_whole_conversation_and_each_turn_its_calls(tmp_path: Path) -> None:
    run = self_instruct(tmp_path, 3)
    rows = records(run / "generated.jsonl")
    assert len(rows) == 12
    for row in rows:
        state = row.meta["conversation"]
        n = state["turns"]
        assert [m.role for m in row.messages] == ["user", "assistant"] * n
        assert state["target_turns"] == 3 and (n == 3) == (state["ended"] is None)
        purposes = [c.purpose for c in row.trace]
        simulated = [c for c in row.trace if c.purpose == calls.USER_SIMULATOR.purpose]
        assert purposes.count("response") >= n and len(simulated) == (2 if n == 3 else n)
        # the simulator saw the conversation so far; the answer of turn k saw all of it
        later_answer = [c for c in row.trace if c.purpose == "response"][-1]
        assert [m.content for m in later_answer.messages if m.role != "system"] == [
            m.content for m in row.messages[:-1]
        ]
    manifest = json.loads((run / "manifest.json").read_text())
    assert sum(manifest["rows_by_turns"].values()) == 12 and "3" in manifest["rows_by_turns"]
    assert manifest["teachers"]["user"]["requests_sent"] > 0


def test_the_simulated_user_ends_a_conversation_with_its_signal(tmp_path: Path) -> None:
    run = self_instruct(tmp_path, [3, 5])
    rows = records(run / "generated.jsonl")
    ended = [r for r in rows if r.meta["conversation"]["ended"]]
    assert ended and all(r.meta["conversation"]["ended"]["rule"] == "user_ended" for r in ended)
    for row in ended:  # the last call is the simulator's signal; no unanswered user turn
        assert row.trace[-1].purpose == calls.USER_SIMULATOR.purpose
        assert row.trace[-1].response == calls.END_OF_CONVERSATION
        assert row.messages[-1].role == "assistant"
    assert {r.meta["conversation"]["target_turns"] for r in rows} <= {3, 4, 5}


@pytest.mark.parametrize(
    ("reply", "parsed"),
    [
        ("<end_of_conversation>", None),
        ("Thanks, that is all I needed. <END_OF_CONVERSATION>", None),
        ("User: And in French?", "And in French?"),
        ("**User:** Why?", "Why?"),
        # wrapped, punctuated, or written without its brackets: still the end, never a
        # user turn that would be answered (was: a parse failure, or the signal as a message)
        ("```\n<end_of_conversation>\n```", None),
        ("`<end_of_conversation>`.", None),
        ("**<END_OF_CONVERSATION>**", None),
        ('"<end_of_conversation>"', None),
        ("That is all, thanks.\nEND_OF_CONVERSATION", None),
        ("<end of conversation>", None),
        (
            "Let us talk about the end of conversation etiquette.",
            "Let us talk about the end of conversation etiquette.",
        ),
    ],
)
def test_the_end_signal_is_parsed_like_every_reply(reply: str, parsed: str | None) -> None:
    assert calls.USER_SIMULATOR.parse(reply) == parsed


@pytest.mark.parametrize(
    "reply", ["", "  ", "Maybe <end_of_conversation> or not", "What does END_OF_CONVERSATION do?"]
)
def test_an_unusable_user_turn_is_a_parse_failure(reply: str) -> None:
    with pytest.raises(ParseFailure):
        calls.USER_SIMULATOR.parse(reply)


def _completions(server: MockLLMServer) -> int:
    return int(stats(server)["requests"].get("/v1/completions", 0))


def _all_requests(server: MockLLMServer) -> int:
    requests = stats(server)["requests"]
    return int(requests.get("/v1/completions", 0) + requests.get("/v1/chat/completions", 0))


def test_a_kill_after_turn_2_of_4_resumes_at_turn_3_paying_nothing_twice(
    server: MockLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.configure(completions=[f"Describe a habit of animal number {i}." for i in range(200)])
    teacher = {
        **openai_config(server, tmp_path, cache=False).model_dump(),
        "spec": "vllm:mock-model",
    }
    tok = str(tokenizer_dir(tmp_path, "chatml"))

    def config(out: str) -> Any:
        return magpie_config(tmp_path / out, teacher, conversation={"turns": 4},
                             magpie={"tokenizer": tok, "tags": False, "language": None})  # fmt: skip

    before = _all_requests(server)
    assert run_generate(config("clean")) == 0
    clean = _all_requests(server) - before

    original = GenContext.call

    async def killed_at_turn_3(self: GenContext, stage: str, items: Any) -> Any:
        if stage == "turn3_user":
            raise KeyboardInterrupt  # a kill once turn 2 of every conversation is done
        return await original(self, stage, items)

    monkeypatch.setattr(GenContext, "call", killed_at_turn_3)
    before = _all_requests(server)
    with pytest.raises(KeyboardInterrupt):
        run_generate(config("resumed"))
    first = _all_requests(server) - before
    monkeypatch.setattr(GenContext, "call", original)
    run = tmp_path / "resumed" / "runs" / "m"
    journals = {p.stem for p in (run / "journal").iterdir()}
    assert "turn2_responses" in journals and "turn3_user" not in journals

    before, raw_before = _all_requests(server), _completions(server)
    assert run_generate(config("resumed")) == 0
    second, raw_second = _all_requests(server) - before, _completions(server) - raw_before
    assert first + second == clean  # nothing was sent twice
    assert second == 3 * 2 * 2 and raw_second == 3 * 2  # turns 3 and 4 of 3 rows only
    rows = records(run / "generated.jsonl")
    assert [len(r.messages) for r in rows] == [8, 8, 8]
    assert all(r.meta["conversation"]["turns"] == 4 for r in rows)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["requests_sent"] == clean and len(manifest["invocations"]) == 2


def test_a_simulated_conversation_killed_mid_way_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Self-Instruct rows with the simulated user: killed when turn 3 starts, re-run, the
    same requests in all as an uninterrupted run (the journals, not the cache: it is off)."""
    clean = json.loads((self_instruct(tmp_path / "clean", 4) / "manifest.json").read_text())
    original = GenContext.call

    async def killed_at_turn_3(self: GenContext, stage: str, items: Any) -> Any:
        if stage == "turn3_user":
            raise KeyboardInterrupt
        return await original(self, stage, items)

    monkeypatch.setattr(GenContext, "call", killed_at_turn_3)
    with pytest.raises(KeyboardInterrupt):
        self_instruct(tmp_path / "resumed", 4)
    monkeypatch.setattr(GenContext, "call", original)
    run = self_instruct(tmp_path / "resumed", 4)
    manifest = json.loads((run / "manifest.json").read_text())
    first, last = manifest["invocations"]
    assert first["exit_code"] == 130 and last["resumed"]
    for role in ("instructions", "evolution", "responses", "user"):
        assert (
            manifest["teachers"][role]["requests_sent"] == clean["teachers"][role]["requests_sent"]
        )
    assert 0 < last["requests_sent"] < manifest["requests_sent"]
    resumed, whole = (
        records(run / "generated.jsonl"),
        records(tmp_path / "clean" / "runs" / "c" / "generated.jsonl"),
    )
    assert [(r.id, r.messages, r.meta["conversation"]) for r in resumed] == [
        (r.id, r.messages, r.meta["conversation"]) for r in whole
    ]


def test_a_magpie_run_with_evolution_continues_every_row_by_the_model(tmp_path: Path) -> None:
    """Evolved rows of a Magpie run go on as conversations too, by the model itself (the run
    has no simulated user): before, their turn 2 joined the Magpie rows' in one batch of two
    teacher roles and the run died with a traceback after paying for every first turn."""
    config = magpie_config(
        tmp_path, {"spec": "fake", "cache": False}, num_instructions=4, evol={"rounds": 1},
        conversation={"turns": 2},
        magpie={"tokenizer": str(tokenizer_dir(tmp_path, "chatml")), "tags": False},
    )  # fmt: skip
    assert run_generate(config) == 0
    rows = records(tmp_path / "runs" / "m" / "generated.jsonl")
    evolved = [r for r in rows if r.origin.startswith("evol:")]
    assert evolved and any(r.origin == "magpie" for r in rows)
    for row in rows:
        turn2 = [c for c in row.trace if c.purpose == calls.MAGPIE_USER_TURN.purpose]
        assert len(turn2) == 1 and turn2[0].prompt is not None
        assert turn2[0].prompt.endswith("<|im_start|>user\n")
        assert not [c for c in row.trace if c.purpose == calls.USER_SIMULATOR.purpose]


@pytest.mark.slow
def test_kill_9_of_the_cli_inside_turn_3_resumes_paying_only_the_request_in_flight(
    server: MockLLMServer, tmp_path: Path
) -> None:
    """The real CLI killed with SIGKILL while turn 3's answers are on their way (not at a
    stage boundary), then re-run: every row has its 4 turns, and the server saw at most one
    request more than an uninterrupted run (the one in flight: concurrency 1)."""
    import yaml

    server.configure(
        completions=[f"Describe a habit of animal number {i}." for i in range(200)],
        latency_s=0.1,  # chat answers only: the kill lands inside a stage
    )
    tok = str(tokenizer_dir(tmp_path, "chatml"))
    teacher = {**openai_config(server, tmp_path, cache=False, concurrency=1).model_dump(
        mode="json"), "spec": "vllm:mock-model"}  # fmt: skip

    def command(out: str) -> list[str]:
        config = {"method": "magpie", "output_dir": str(tmp_path / out), "run_id": "m",
                  "num_instructions": 3, "quiet": True, "teacher": teacher,
                  "evol": {"rounds": 0}, "conversation": {"turns": 4},
                  "magpie": {"tokenizer": tok, "tags": False, "language": None}}  # fmt: skip
        path = tmp_path / f"{out}.yaml"
        path.write_text(yaml.safe_dump(config))
        return [sys.executable, "-m", "distillery.cli", "generate", "--config", str(path)]

    def chat() -> int:
        return int(stats(server)["requests"].get("/v1/chat/completions", 0))

    before = _all_requests(server)
    assert subprocess.run(command("clean"), capture_output=True).returncode == 0
    clean = _all_requests(server) - before
    before, chat_before = _all_requests(server), chat()
    proc = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while chat() - chat_before < 3 + 3 + 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # first answers, turn 2's, and one of turn 3's sent
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = tmp_path / "killed" / "m"
    assert not (run / "generated.jsonl").exists()
    assert (run / "journal" / "turn3_user.jsonl").exists()  # killed inside turn 3
    assert subprocess.run(command("killed"), capture_output=True).returncode == 0
    assert clean <= _all_requests(server) - before <= clean + 1
    rows = records(run / "generated.jsonl")
    assert [r.meta["conversation"]["turns"] for r in rows] == [4, 4, 4]
    manifest = json.loads((run / "manifest.json").read_text())
    assert [i["exit_code"] for i in manifest["invocations"]] == ["killed", 0]


def test_a_user_turn_that_repeats_an_earlier_one_ends_the_conversation(
    server: MockLLMServer, tmp_path: Path
) -> None:
    """A model that loops on its question (every draw the same text) does not make a
    conversation of one question asked three times (was: kept, 3 turns of it)."""
    server.configure(completions=["Describe how a cat grooms itself."])
    teacher = {**openai_config(server, tmp_path, cache=False).model_dump(),
               "spec": "vllm:mock-model"}  # fmt: skip
    config = magpie_config(
        tmp_path, teacher, num_instructions=1, conversation={"turns": 3}, max_top_ups=0,
        magpie={"tokenizer": str(tokenizer_dir(tmp_path, "chatml")), "tags": False,
                "language": None},
    )  # fmt: skip
    assert run_generate(config) == 0
    (row,) = records(tmp_path / "runs" / "m" / "generated.jsonl")
    assert [m.role for m in row.messages] == ["user", "assistant"]
    ended = row.meta["conversation"]["ended"]
    assert ended["rule"] == "repeated_user_turn"
    assert ended["evidence"]["turn"] == 2 and ended["evidence"]["same_as_turn"] == 1
