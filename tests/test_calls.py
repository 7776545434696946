"""The LLM call definitions (`distillery.calls`) and the scripted `fake` teacher that answers
them by name and variables, never by the prompt's wording."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from distillery import calls
from distillery.generate.config import EVOL_OPERATIONS
from distillery.prompts import PROMPTS_DIR, template_ref
from distillery.seeds import load_seeds
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.fake import SCRIPTS
from distillery.teacher.types import ChatRequest

# The words the old scripted teacher looked for in the prompts' prose, and more.
REWORDINGS = {
    "numbered": "counted",
    "Task:": "Assignment:",
    "<instruction>": "<prompt_to_rewrite>",
    "</instruction>": "</prompt_to_rewrite>",
    "<response_a>": "<first_answer>",
    "</response_a>": "</first_answer>",
    "<response_b>": "<second_answer>",
    "</response_b>": "</second_answer>",
}
PREAMBLE = "Read everything below carefully before you answer; take your time.\n\n"


def test_every_call_is_defined_once_with_its_template_and_a_scripted_answer() -> None:
    names = [c.name for c in calls.ALL]
    assert len(names) == len(set(names))
    assert len(calls.BY_PURPOSE) == len(names)  # a trace's purpose names its call
    templated = {c.name for c in calls.ALL if c.template is not None}
    assert set(SCRIPTS) == templated  # the fake teacher answers every templated call
    for call in calls.ALL:
        if call.template is not None:
            template_ref(call.template)  # the prompt file exists
    assert tuple(calls.EVOL) == EVOL_OPERATIONS  # generate's config knows every operation


def _sample_variables() -> dict[str, dict[str, Any]]:
    """Template variables for each templated call, as the stages pass them."""
    seeds = load_seeds("seeds")[:4]
    examples = [
        SimpleNamespace(instruction=s.instruction, input=s.instances[0].input,
                        output=s.instances[0].output)
        for s in seeds
    ]  # fmt: skip
    rewrite = {"prompt": "Explain photosynthesis.", "min_added_words": 10, "max_added_words": 20}
    evol = {
        f"evol_{op}": ({"prompt": "Explain photosynthesis."} if op == "breadth" else rewrite)
        for op in calls.EVOL
    }
    instances = {"examples": examples, "instruction": "Classify this review.", "max_instances": 2}
    return {
        "self_instruct_generate": {"tasks": [s.instruction for s in seeds], "num_tasks": 6},
        "self_instruct_classify": {"examples": seeds, "instruction": "Classify this review."},
        "self_instruct_instances_input_first": instances,
        "self_instruct_instances_output_first": instances,
        "alpaca_batch": {"examples": examples, "num_tasks": 20},
        **evol,
        "evol_equality": {"first": "Explain photosynthesis.", "second": "Explain it in depth."},
        "response": {"instruction": "Explain photosynthesis.", "input": "for a child"},
        "judge_quality": {
            "instruction": "Explain photosynthesis.",
            "response": "Plants eat light.",
        },
        "judge_pairwise": {
            "instruction": "Explain photosynthesis.",
            "response_a": "Plants eat light.",
            "response_b": "Plants turn light, water and CO2 into sugar and oxygen.",
        },
        "judge_conversation": {
            "system_prompt": "",
            "turns": [
                {"user": "Explain photosynthesis.", "assistant": "Plants eat light."},
                {"user": "Is that all?", "assistant": "They also make oxygen from water."},
            ],
        },
        "magpie_tags": {"instruction": "Explain photosynthesis."},
        "user_simulator": {
            "turns": [{"user": "Explain photosynthesis.", "assistant": "Plants eat light."}]
        },
    }


def _answers(requests: list[ChatRequest]) -> list[tuple[str | None, str | None]]:
    async def go() -> list[tuple[str | None, str | None]]:
        async with Teacher(TeacherConfig(spec="fake", cache=False)) as teacher:
            results = [await teacher.complete(r) for r in requests]
        return [(r.status, r.text) for r in results]

    return asyncio.run(go())


def _requests(variables: dict[str, dict[str, Any]]) -> list[ChatRequest]:
    system = {"response": "response_step_by_step"}
    return [
        calls.BY_NAME[name].request(system=system.get(name), **v) for name, v in variables.items()
    ]


def test_rewording_the_prompts_changes_no_answer_of_the_fake_teacher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = _sample_variables()
    assert set(variables) == set(SCRIPTS)
    shipped = _requests(variables)
    before = _answers(shipped)

    reworded = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, reworded)
    for path in reworded.glob("*.jinja"):
        text = path.read_text()
        for old, new in REWORDINGS.items():
            text = text.replace(old, new)
        path.write_text(PREAMBLE + text)
    monkeypatch.setenv("DISTILLERY_PROMPTS_DIR", str(reworded))
    edited = _requests(variables)
    after = _answers(edited)

    for a, b in zip(shipped, edited, strict=True):
        assert a.messages != b.messages  # the teacher is sent the reworded prompts...
        assert a.template != b.template  # ...recorded with the edited templates' hashes
    assert after == before  # ...and the scripted answers are the same
    assert all(status == "ok" for status, _ in before)


def test_the_fake_teacher_reads_the_call_not_the_messages() -> None:
    request = calls.JUDGE_PAIRWISE.request(
        instruction="Explain photosynthesis.", response_a="Short.", response_b="A longer answer."
    )
    garbled = ChatRequest(
        messages=[{"role": "user", "content": "unrelated words"}],
        purpose=request.purpose,
        call=request.call,
    )
    assert _answers([request]) == _answers([garbled])


def test_a_call_parses_its_answer_and_a_failed_call_is_a_parse_failure() -> None:
    from distillery.parsing import ParseFailure
    from distillery.records import LLMCall
    from distillery.teacher.types import CallResult

    ok = CallResult(trace=LLMCall(model="fake", response="1. Write a poem.\n2. Sing a song."))
    assert calls.SELF_INSTRUCT_GENERATE.parsed(ok) == ["Write a poem.", "Sing a song."]
    failed = CallResult(
        trace=LLMCall(model="fake", response="1. Write", status="failed", error="cut off")
    )
    assert failed.text == "1. Write" and failed.response is None  # the raw text is kept
    with pytest.raises(ParseFailure, match="cut off"):
        calls.SELF_INSTRUCT_GENERATE.parsed(failed)
    with pytest.raises(ValueError, match="one teacher role"):
        calls.role_of([calls.RESPONSE.request(instruction="x", input=""), ok_request()])


def ok_request() -> ChatRequest:
    return calls.EVOL_EQUALITY.request(first="a", second="b")


def test_a_journal_line_written_before_call_results_reads_as_the_same_call() -> None:
    from distillery.teacher.types import CallResult

    trace = {"model": "fake", "purpose": "response", "response": "Hi.", "status": "ok"}
    old = {
        "id": "q1", "fingerprint": "f" * 16, "status": "ok", "response": "Hi.",
        "finish_reason": "stop", "usage": {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0},
        "model": "fake", "error": None, "cached": False, "attempts": 1, "latency_s": 0.1,
        "parsed": None, "trace": trace,
    }  # fmt: skip
    row = CallResult.model_validate(old)
    assert (row.id, row.fingerprint, row.attempts) == ("q1", "f" * 16, 1)
    assert row.ok and row.response == "Hi." and row.trace.purpose == "response"


def test_the_worked_example_of_docs_llm_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/llm-calls.md: a new kind of call is one template plus one definition."""
    from distillery.calls import Call
    from distillery.parsing import ParseFailure
    from distillery.teacher.jobs import JobItem, run_job

    from tests.helpers.teacher import ScriptedTeacher

    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    (prompts / "rate_difficulty.jinja").write_text(
        "{# Vars: instruction (str). How hard an instruction is to answer well, 1-5. #}\n"
        "How hard is it to answer the following instruction well?\n\n"
        "<instruction>\n{{ instruction }}\n</instruction>\n\n"
        "Reply with one number from 1 (trivial) to 5 (expert work) and nothing else.\n"
    )
    monkeypatch.setenv("DISTILLERY_PROMPTS_DIR", str(prompts))

    def difficulty(text: str) -> int:
        word = text.strip().rstrip(".")
        if word not in {"1", "2", "3", "4", "5"}:
            raise ParseFailure(f"expected a number from 1 to 5, got {text.strip()[:40]!r}")
        return int(word)

    rate = Call(
        name="rate_difficulty",
        template="rate_difficulty",
        role="judge",
        purpose="judge:difficulty",
        parse=difficulty,
        output=int,
    )

    def judge(request: ChatRequest, params: dict[str, Any]) -> str:  # answers by the call
        assert request.call is not None and request.call.name == "rate_difficulty"
        return "5" if "proof" in request.call.variables["instruction"] else "too hard to say"

    rows = {"a": "Write a proof of Fermat's last theorem.", "b": "Say hi."}
    items = [JobItem(i, rate.request(instruction=text)) for i, text in rows.items()]

    async def go() -> dict[str, Any]:
        async with ScriptedTeacher(judge) as teacher:
            return (await run_job(teacher, items, tmp_path / "difficulty.jsonl", quiet=True)).rows

    done = asyncio.run(go())
    assert rate.parsed(done["a"]) == 5
    with pytest.raises(ParseFailure, match="too hard to say"):
        rate.parsed(done["b"])
    trace = done["a"].trace
    assert trace.purpose == "judge:difficulty" and trace.template is not None
    assert trace.template.name == "rate_difficulty"
    assert "Fermat" in trace.messages[0].content


def test_a_demo_run_with_reworded_prompts_makes_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the offline demo generates depends on the calls, not on the teacher prompts'
    wording: only the prompts sent and the template hashes change. (`user_turn` stays: it is
    the rows' own format, and an evolution rewrites the user turn, so its text is data.)"""
    import json

    from distillery.cli import main

    def run(name: str) -> list[dict[str, Any]]:
        args = ["generate", "--config", "configs/generate_offline_demo.yaml", "quiet=true",
                f"output_dir={tmp_path / name}", "run_id=r", "num_instructions=16",
                "teacher.cache=false"]  # fmt: skip
        assert main(args) == 0
        lines = (tmp_path / name / "r" / "generated.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    shipped = run("shipped")
    reworded = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, reworded)
    for path in reworded.glob("*.jinja"):
        if path.stem == "user_turn":
            continue
        text = path.read_text()
        for old, new in REWORDINGS.items():
            text = text.replace(old, new)
        path.write_text(PREAMBLE + text)
    monkeypatch.setenv("DISTILLERY_PROMPTS_DIR", str(reworded))
    edited = run("reworded")

    same = ("id", "instruction", "input", "origin", "parent_ids", "round", "category")
    assert [{k: r[k] for k in same} for r in edited] == [{k: r[k] for k in same} for r in shipped]
    assert [r["messages"] for r in edited] == [r["messages"] for r in shipped]
    sent = [[m["content"] for c in r["trace"] for m in c["messages"]] for r in edited]
    assert sent != [[m["content"] for c in r["trace"] for m in c["messages"]] for r in shipped]
    assert edited[0]["template"]["sha256"] != shipped[0]["template"]["sha256"]
