"""`distillery filter` on multi-turn rows: heuristics per turn, dedup on the first user turn
and on the whole conversation, decontamination of every turn, the conversation judge, turn
counts in summary.json and the report; and the `tags` step on LLM tags (`meta.tags`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from distillery.cli import main
from distillery.filter.config import HeuristicsConfig
from distillery.filter.heuristics import Heuristics
from distillery.records import LLMCall, Message, Record

TURNS = [
    (
        "Explain photosynthesis in one sentence.",
        "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside "
        "chloroplasts.",
    ),
    (
        "Now explain why most leaves look green to us.",
        "Chlorophyll absorbs red and blue light strongly and reflects much of the green part "
        "of the spectrum, so that is the colour we see.",
    ),
    (
        "And what happens inside the plant at night?",
        "Without light, photosynthesis stops while respiration goes on: the plant burns some of "
        "its stored sugar and releases carbon dioxide until morning.",
    ),
]


def conversation(turns: list[tuple[str, str]], i: int = 0, **kw: Any) -> Record:
    messages = []
    for user, answer in turns:
        messages += [Message(role="user", content=user), Message(role="assistant", content=answer)]
    return Record(id=f"c{i}", instruction=turns[0][0], origin="external", messages=messages, **kw)


# turn 2 of 3 broken, turns 1 and 3 fine: the rule must look past the first and last turn
BAD_TURN_2 = [
    ("empty", (TURNS[1][0], "   ")),
    ("instruction_too_short", ("Why?", TURNS[1][1])),
    ("response_too_short", (TURNS[1][0], "Chlorophyll.")),
    ("refusal", (TURNS[1][0], "As an AI language model, I think " + TURNS[1][1])),
    ("leaked_scaffold", ("#Rewritten Prompt#: " + TURNS[1][0], TURNS[1][1])),
    (
        "wrong_language",
        (
            TURNS[1][0],
            "La chlorophylle absorbe la lumière rouge et bleue et renvoie surtout la lumière "
            "verte, que nous voyons.",
        ),
    ),
    ("repetition", (TURNS[1][0], "the leaf reflects green light " * 10)),
]


@pytest.mark.parametrize(("rule", "turn2"), BAD_TURN_2, ids=[r for r, _ in BAD_TURN_2])
def test_each_heuristic_fires_on_a_later_turn_and_names_it(
    rule: str, turn2: tuple[str, str]
) -> None:
    rules = Heuristics(HeuristicsConfig())
    assert rules.check(conversation(TURNS)) is None
    drop = rules.check(conversation([TURNS[0], turn2, TURNS[2]]))
    assert drop is not None and drop.rule == rule
    assert drop.evidence["turn"] == 2 and drop.reason.startswith("turn 2: ")


def test_a_turn_cut_off_in_the_middle_of_the_trace_is_caught() -> None:
    calls = [
        LLMCall(model="m", purpose="response", response=TURNS[0][1], finish_reason="stop"),
        LLMCall(model="m", purpose="response", response=TURNS[1][1], finish_reason="length"),
        LLMCall(model="m", purpose="response", response=TURNS[2][1], finish_reason="stop"),
    ]
    drop = Heuristics(HeuristicsConfig()).check(conversation(TURNS, trace=calls))
    assert drop is not None and drop.rule == "cut_off" and drop.evidence["turn"] == 2
    calls[1] = calls[1].model_copy(update={"finish_reason": "stop"})
    assert Heuristics(HeuristicsConfig()).check(conversation(TURNS, trace=calls)) is None


def test_an_unanswered_last_user_turn_is_empty() -> None:
    row = conversation(TURNS[:2])
    row = row.model_copy(update={"messages": [*row.messages, Message(role="user", content="Hm?")]})
    drop = Heuristics(HeuristicsConfig()).check(row)
    assert drop is not None and drop.rule == "empty" and drop.evidence["turn"] == 3


# ---- end to end, through `distillery filter`, on JSONL `messages` rows ----------------------
SHARED = [  # the long later turns two conversations share
    (
        "Which gases does a leaf exchange with the air during a sunny afternoon and why?",
        "During a sunny afternoon a leaf takes in carbon dioxide through its stomata and "
        "releases oxygen made when water is split in the light reactions. It also loses water "
        "vapour by transpiration, which pulls water and minerals up from the roots through "
        "the xylem and cools the leaf surface in the heat.",
    ),
    (
        "How do the guard cells decide when the stomata should close in a drought?",
        "When the soil dries out the roots send abscisic acid to the leaves, potassium ions "
        "leave the guard cells, water follows by osmosis and the cells go slack, which closes "
        "the pore and saves water at the cost of less carbon dioxide for photosynthesis.",
    ),
]


def messages_row(turns: list[tuple[str, str]], rid: str) -> dict[str, Any]:
    messages = []
    for user, answer in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"id": rid, "messages": messages}


OTHER_OPENER = ("Tell me about leaves and gas exchange.", "Leaves trade gases with the air.")
LISBON = [
    (
        "Plan a three day trip to Lisbon for a family.",
        "Day one: the old town and the castle; day two: Belem and its tower; day three: a "
        "train ride to Sintra.",
    ),
    (
        "Add a rainy day option please.",
        "Swap Sintra for the aquarium and the tile museum, both indoors and easy to reach by "
        "metro.",
    ),
]
COPPER = {
    "id": "single",
    "instruction": "Name three uses of copper in houses.",
    "input": "",
    "output": "Water pipes, electrical wiring and roofing sheets.",
}


def conversations_file(tmp_path: Path) -> Path:
    """a; b: a's first turn, then other turns; c: another first turn, then a's later turns;
    d: an unrelated conversation; single: a single-turn Alpaca row."""
    rows = [
        messages_row([TURNS[0], *SHARED], "a"),
        messages_row([TURNS[0], TURNS[1], TURNS[2]], "b"),
        messages_row([OTHER_OPENER, *SHARED], "c"),
        messages_row(LISBON, "d"),
        COPPER,
    ]
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(tmp_path: Path, inp: Path, *extra: str, out: str = "out") -> int:
    return main(["filter", "--input", str(inp), "--output-dir", str(tmp_path / out), *extra])


def outputs(tmp_path: Path, out: str = "out") -> tuple[list[Record], list[Record], dict]:
    d = tmp_path / out
    kept = [Record.model_validate_json(x) for x in (d / "kept.jsonl").read_text().splitlines()]
    dropped = [
        Record.model_validate_json(x) for x in (d / "dropped.jsonl").read_text().splitlines()
    ]
    return kept, dropped, json.loads((d / "summary.json").read_text())


def test_dedup_on_the_first_user_turn_and_on_the_whole_conversation(tmp_path: Path) -> None:
    inp = conversations_file(tmp_path)
    assert run(tmp_path, inp, "--steps", "exact,near", "near.threshold=0.7") == 0
    kept, dropped, summary = outputs(tmp_path)
    by_id = {d.id: d.dropped_by for d in dropped}
    assert sorted(by_id) == ["b", "c"] and [r.id for r in kept] == ["a", "d", "single"]
    b, c = by_id["b"], by_id["c"]
    assert b and b.rule == "exact_duplicate" and b.evidence["survivor_id"] == "a"
    assert c and c.rule == "near_duplicate_conversation" and c.evidence["survivor_id"] == "a"
    assert c.evidence["jaccard"] >= 0.7
    assert summary["near"]["conversation"]["verified"] == 1
    assert summary["dropped_by_rule"] == {"exact_duplicate": 1, "near_duplicate_conversation": 1}
    # user turns per row, before and after, in summary.json and the report
    assert summary["turns_per_conversation"] == {
        "before": {"1": 1, "2": 1, "3": 3},
        "after": {"1": 1, "2": 1, "3": 1},
    }
    assert "User turns per conversation" in (tmp_path / "out" / "report.html").read_text()


def test_semantic_dedup_of_whole_conversations(tmp_path: Path) -> None:
    inp = conversations_file(tmp_path)
    assert run(tmp_path, inp, "--steps", "semantic", "semantic.threshold=0.85") == 0
    _, dropped, _ = outputs(tmp_path)
    rules = {d.id: d.dropped_by.rule for d in dropped if d.dropped_by}
    assert rules == {"b": "semantic_duplicate", "c": "semantic_duplicate_conversation"}
    c = next(d.dropped_by for d in dropped if d.id == "c")
    assert c and c.evidence["survivor_id"] == "a" and c.evidence["cosine"] >= 0.85


BENCH_PROMPT = "What is the boiling point of water at sea level in degrees Celsius?"


@pytest.fixture
def contaminated(tmp_path: Path) -> tuple[Path, Path]:
    bench = tmp_path / "ifeval.jsonl"
    bench.write_text(json.dumps({"key": 1, "prompt": BENCH_PROMPT}) + "\n")
    third = (BENCH_PROMPT, "It boils at 100 degrees Celsius at standard pressure.")
    inp = tmp_path / "in.jsonl"
    rows = [messages_row([TURNS[0], TURNS[1], third], "hit"), messages_row(TURNS, "clean")]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return inp, bench


def test_decontamination_checks_every_turn(tmp_path: Path, contaminated: tuple[Path, Path]) -> None:
    inp, bench = contaminated
    args = ["--steps", "decontam", "--against", str(bench)]
    assert run(tmp_path, inp, *args, "decontam.embedding_threshold=null") == 0
    kept, dropped, summary = outputs(tmp_path)
    assert [r.id for r in kept] == ["clean"] and [d.id for d in dropped] == ["hit"]
    drop = dropped[0].dropped_by
    assert drop and drop.rule == "decontam_ngram" and drop.evidence["turn"] == 3
    assert drop.evidence["eval_source"] == "ifeval.jsonl" and drop.reason.startswith("turn 3: ")
    assert "each user turn" in summary["decontam"]["text_checked"]
    # the embedding check compares every user turn too (n-grams switched off here)
    assert run(tmp_path, inp, *args, "decontam.min_overlap=1000", out="emb") == 0
    kept, dropped, _ = outputs(tmp_path, "emb")
    drop = dropped[0].dropped_by if dropped else None
    assert [r.id for r in kept] == ["clean"]
    assert drop and drop.rule == "decontam_embedding" and drop.evidence["turn"] == 3


def test_the_judge_scores_a_conversation_whole_with_its_own_prompt(tmp_path: Path) -> None:
    inp = conversations_file(tmp_path)
    code = run(
        tmp_path,
        inp,
        "--steps", "judge", "--judge", "fake",
        "judge.min_score=null", "judge.max_parse_failure_rate=1",
        f"judge.teacher.cache_path={tmp_path / 'c.sqlite'}",
    )  # fmt: skip
    assert code == 0
    kept, dropped, summary = outputs(tmp_path)
    rows = {r.id: r for r in [*kept, *dropped]}
    for rid in ("a", "b", "c", "d"):  # more than one assistant turn: the conversation judge
        call = rows[rid].trace[-1]
        assert call.purpose == "judge:conversation"
        assert call.template and call.template.name == "judge_conversation"
        last_user = [m.content for m in rows[rid].messages if m.role == "user"][-1]
        assert last_user in call.messages[0].content
    single = next(r for r in rows.values() if len(r.messages) == 2)
    assert single.trace[-1].purpose == "judge:quality"
    assert summary["judge"]["prompts"] == {"judge_conversation": 4, "judge_quality": 1}


# ---- the tags step ---------------------------------------------------------------------------
def tagged(i: int, tags: dict[str, Any] | None) -> dict[str, Any]:
    row = conversation(TURNS[:1], i, meta={"tags": tags} if tags is not None else {})
    return row.model_dump(mode="json")


@pytest.fixture
def tagged_rows(tmp_path: Path) -> Path:
    rows = [
        tagged(0, {"task_category": "science", "input_quality": "good", "difficulty": "medium"}),
        tagged(1, {"task_category": "science", "input_quality": "poor", "difficulty": "easy"}),
        tagged(2, {"task_category": "math", "input_quality": "excellent", "difficulty": "very hard"}),
        tagged(3, None),
        tagged(4, {"task_category": "science", "input_quality": "great", "difficulty": "easy"}),
    ]  # fmt: skip
    path = tmp_path / "tagged.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tags_keep_and_drop_rows_with_rule_and_evidence(tmp_path: Path, tagged_rows: Path) -> None:
    bounds = ["tags.min_input_quality=good", "tags.max_difficulty=hard"]
    assert run(tmp_path, tagged_rows, "--steps", "tags", *bounds) == 0
    kept, dropped, summary = outputs(tmp_path)
    assert [r.id for r in kept] == ["c0", "c3"]  # an untagged row is kept by default
    drops = {d.id: d.dropped_by for d in dropped}
    assert {k: v.rule for k, v in drops.items() if v} == {
        "c1": "tag_input_quality",
        "c2": "tag_difficulty",
        "c4": "tag_invalid",
    }
    assert drops["c1"] and drops["c1"].evidence == {
        "tag": "input_quality", "value": "poor", "min": "good", "max": None,
    }  # fmt: skip
    assert all(d.meta["filter_step"] == "tags" for d in dropped)
    assert [f["step"] for f in summary["funnel"]] == ["input", "tags"]
    # the tags before and after, in scale order (a value off the scale last), and charted
    assert summary["tags"]["before"]["input_quality"] == {
        "poor": 1, "good": 1, "excellent": 1, "great": 1,
    }  # fmt: skip
    assert summary["tags"]["after"] == {
        "task_category": {"science": 1}, "input_quality": {"good": 1}, "difficulty": {"medium": 1},
    }  # fmt: skip
    assert "Tag input quality after filtering" in (tmp_path / "out" / "report.html").read_text()

    more = ["tags.untagged=drop", "tags.task_categories=[science]"]
    assert run(tmp_path, tagged_rows, "--steps", "tags", *more, out="strict") == 0
    kept, dropped, _ = outputs(tmp_path, "strict")
    assert [r.id for r in kept] == ["c0", "c1", "c4"]
    assert {d.id: d.dropped_by.rule for d in dropped if d.dropped_by} == {
        "c2": "tag_task_category",
        "c3": "tag_missing",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the tags step has no rule"),
        (["tags.min_difficulty=hard", "tags.max_difficulty=easy"], "is harder than"),
        (["tags.min_input_quality=great"], "tags.min_input_quality"),
    ],
)
def test_bad_tag_settings_fail_with_one_line(
    tmp_path: Path,
    tagged_rows: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert run(tmp_path, tagged_rows, "--steps", "tags", *args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_conversation_judge_sees_the_system_turn_and_every_turn() -> None:
    from distillery.filter.conversations import judge_row

    row = conversation(TURNS)
    system = Message(role="system", content="You are a botany tutor for teenagers.")
    row = row.model_copy(update={"messages": [system, *row.messages]})
    request = judge_row(row).request("")
    assert request.call and request.call.name == "judge_conversation"
    prompt = request.messages[0]["content"]
    assert "<system>\nYou are a botany tutor for teenagers.\n</system>" in prompt
    assert all(user in prompt and answer in prompt for user, answer in TURNS)
    assert '<user turn="3">' in prompt
    single = judge_row(conversation(TURNS[:1])).request("")
    assert single.call and single.call.name == "judge_quality"
