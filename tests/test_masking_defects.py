"""One test per masking defect of issue #12, each failing on the code before the fix:
history rewriting supervising user text, the eos as default stop, tool calls and reasoning
silently stripped, trimmed offsets leaving whitespace unsupervised, and a copy of the stop
text inside an answer moving the end of its span."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from distillery.errors import UserError
from distillery.training.masking import IGNORE, MaskingError, end_of_turn, mask_conversation

from tests.tiny_models import build_tiny_lm, build_tokenizer


def U(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def A(text: str, **fields: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **fields}


def supervised_texts(tokenizer: Any, messages: list[dict[str, Any]], **kw: Any) -> list[str]:
    """The decoded supervised runs of every example of the conversation, in order."""
    end = end_of_turn(tokenizer, kw.pop("template", None))
    masked = mask_conversation(tokenizer, messages, template=None, end=end, max_length=4096, **kw)
    out = []
    for ex in masked.examples:
        run: list[int] = []
        for token, label in zip([*ex.input_ids, -1], [*ex.labels, IGNORE], strict=True):
            if label != IGNORE:
                run.append(token)
            elif run:
                out.append(tokenizer.decode(run))
                run = []
    return out


def test_history_rewriting_template_never_supervises_user_text() -> None:
    """Defect 1: Qwen3 drops <think> from earlier turns; the old span search started past
    the shorter rendered turn and ran over the next user turn."""
    tokenizer = build_tokenizer("qwen3")
    messages = [
        U("What is 2+2?"),
        A("<think>\nAdd them.\n</think>\n\n4"),
        U("And 3+3?"),
        A("<think>\nAdd.\n</think>\n\n6"),
    ]
    got = supervised_texts(tokenizer, messages)
    assert got == [
        "<think>\nAdd them.\n</think>\n\n4<|im_end|>",
        "<think>\nAdd.\n</think>\n\n6<|im_end|>",
    ]
    assert not any("And 3+3?" in text for text in got)
    with pytest.raises(MaskingError, match=r"renders messages\[1\] differently"):
        supervised_texts(tokenizer, messages, history_rewrite="error")


def test_end_of_turn_comes_from_the_template_not_the_eos() -> None:
    """Defect 2: Phi-3 ends turns with <|end|> and the conversation with the eos; with the
    eos as stop token the first span ran to the end of the conversation."""
    tokenizer = build_tokenizer("phi3")
    assert tokenizer.eos_token == "<|endoftext|>"
    end = end_of_turn(tokenizer, None)
    assert (end.text, end.after) == ("<|end|>", "\n<|endoftext|>")
    messages = [U("Hi there"), A("Hello."), U("Bye now"), A("Bye.")]
    assert supervised_texts(tokenizer, messages) == ["Hello.<|end|>", "Bye.<|end|>"]
    assert end_of_turn(tokenizer, None, "<|end|>") == end  # stop_token stays an override


def test_heldout_loss_never_scores_user_tokens(tmp_path: Path) -> None:
    """Defect 2 in `distillery eval loss`: it shares the training derivation."""
    from distillery.training.heldout import heldout_loss

    lm = build_tiny_lm(tmp_path / "phi3", family="phi3")
    tokenizer = build_tokenizer("phi3")
    rows = [[U("Hi there"), A("Hello."), U("Bye now"), A("Bye.")], [U("Sea?"), A("Blue.")]]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    result = heldout_loss(str(lm), str(data), device="cpu")
    answers = ["Hello.", "Bye.", "Blue."]
    want = sum(
        len(tokenizer(a + "<|end|>", add_special_tokens=False)["input_ids"]) for a in answers
    )
    assert result["supervised_tokens"] == want
    assert result["end_of_turn"] == "<|end|>"


def test_tool_calls_and_reasoning_reach_the_template_and_are_supervised(tmp_path: Path) -> None:
    """Defect 3: an assistant message with tool_calls (and null content) passed validation
    with the call removed, so the student learned to answer with an empty turn."""
    from distillery.training.data import load_conversations

    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    row = {
        "messages": [
            U("Add one."),
            {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None},
            {"role": "tool", "content": "2", "tool_call_id": "c1"},
            A("It is 2."),
        ]
    }
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(row) + "\n")
    ((_, messages),) = load_conversations(str(data))
    assert messages[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1}'}
    got = supervised_texts(build_tokenizer("qwen25"), messages)
    assert got == [
        '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call><|im_end|>',
        "It is 2.<|im_end|>",
    ]


@pytest.mark.parametrize(
    ("family", "message", "field"),
    [
        ("chatml", A("4", reasoning_content="Add."), "reasoning_content"),
        ("chatml", A("", tool_calls=[{"function": {"name": "f", "arguments": {}}}]), "tool_calls"),
        ("qwen25", {"role": "user", "content": "Hi", "name": "ann"}, "name"),
        (
            "llama31",  # renders the call, drops the text beside it
            A("Let me check.", tool_calls=[{"function": {"name": "f", "arguments": {}}}]),
            "content",
        ),
    ],
)
def test_a_field_the_template_does_not_render_is_an_error(
    family: str, message: dict[str, Any], field: str
) -> None:
    messages = [U("Question?"), message] if message["role"] == "assistant" else [message, A("Hi.")]
    with pytest.raises(
        MaskingError, match=f"has '{field}', which the chat template does not render"
    ):
        supervised_texts(build_tokenizer(family), messages)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": [U("x"), A("y", weight=0)]}, "has field 'weight'"),
        ({"messages": [U("x"), A("y", tool_call_id="c")]}, "has field 'tool_call_id'"),
        ({"messages": [U("x"), {"role": "assistant"}]}, "'content' must be a string"),
        ({"messages": [U("x"), A("y")], "tools": [{"type": "function"}]}, "field 'tools'"),
        (
            {"messages": [U("x"), A("", tool_calls=[{"function": {"name": "f"}}])]},
            r"tool_calls\[0\] must be like",
        ),
    ],
)
def test_training_messages_are_validated_not_stripped(
    tmp_path: Path, row: dict[str, Any], message: str
) -> None:
    from distillery.training.data import load_conversations

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=message):
        load_conversations(str(data))


def test_teacher_requests_keep_role_and_content_only() -> None:
    """`chat_messages` (complete's request rows) is unchanged: {role, content} only."""
    from distillery.records import chat_messages

    assert chat_messages([{"role": "user", "content": "x", "name": "a"}], "f:1") == [
        {"role": "user", "content": "x"}
    ]


def test_whitespace_tokens_are_supervised_with_trimmed_offsets() -> None:
    """Defect 4: with a trim_offsets post-processor all-space tokens have zero-width
    offsets; the old overlap test never supervised them (code indentation unlearned)."""
    tokenizer = build_tokenizer("chatml", trim_offsets=True)
    enc = tokenizer("a\n    b", add_special_tokens=False, return_offsets_mapping=True)
    assert any(a == b for a, b in enc["offset_mapping"])  # the tokenizer does trim
    answer = "def f():\n    return 1\n\n    \tx = 2  "
    assert supervised_texts(tokenizer, [U("code"), A(answer)]) == [answer + "<|im_end|>"]


@pytest.mark.parametrize("family", ["chatml", "qwen3", "mistral", "phi3"])
def test_a_copy_of_the_stop_text_in_the_answer_does_not_end_the_span(family: str) -> None:
    """Defect 5: the old search for the stop text could stop at a copy in the answer
    (Qwen3's think block made the search start inside the answer)."""
    tokenizer = build_tokenizer(family)
    stop = end_of_turn(tokenizer, None).text
    for answer in (f"Say {stop} to stop.", f"It ends with {stop}", f"{stop}{stop}"):
        (got,) = supervised_texts(tokenizer, [U("Quote it."), A(answer)])
        assert got.endswith(answer + stop)
