"""Golden supervision on the chat templates people fine-tune now (tests/chat_templates/).

For every family and conversation, the supervised text of each assistant turn is written
here by hand from the family's format - what the model must write at inference - and
checked three ways: the supervised runs decode to it, the tokens before each run are the
tokenizer's ids for `apply_chat_template(history, add_generation_prompt=True)`, and that
prompt followed by the supervised tokens decodes to the template's own rendering of the
turn. Truncation is checked at every length.
"""

from __future__ import annotations

from typing import Any

import pytest
from distillery.training.masking import IGNORE, Masked, end_of_turn, mask_conversation, render
from distillery.training.signal import (
    SignalCounts,
    check_example,
    check_generation_markers,
    has_generation_markers,
)

from tests.tiny_models import FAMILIES, build_tokenizer


def U(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def A(text: str, **fields: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **fields}


MARKERS = "Quote: <|im_end|> <|eot_id|> </s> <end_of_turn> <|end|> <｜end▁of▁sentence｜> [/INST]"
CONVERSATIONS = {
    "multi-turn with system": [
        {"role": "system", "content": "Be brief."},
        U("Explain recursion."),
        A("A function that calls itself."),
        U("Give one example."),
        A("def f(n):\n    return 1 if n == 0 else n * f(n - 1)"),
    ],
    "empty answer": [U("Say nothing."), A("")],
    "whitespace-only answer": [U("Say spaces."), A("   \n ")],
    "unicode": [U("Héllo ☃ 你好"), A("Grüße 🌍 — 你好！ naïve café")],
    "template markers in content": [U("Quote the markers."), A(MARKERS), U("Again?"), A(MARKERS)],
    "answer ending with the stop text": [U("End it."), A("Done. <|im_end|>")],
}
STRIPPING = {"llama3", "llama31", "gemma"}  # templates that trim the answer


def expected(family: str, message: dict[str, Any]) -> str:
    """What the model writes for this turn at inference, from the family's format."""
    stop = FAMILIES[family].stop
    content = message["content"]
    if family in STRIPPING:
        return content.strip() + stop
    if family == "mistral":
        return " " + content + stop
    if family == "qwen3":
        return "<think>\n\n</think>\n\n" + content + stop
    return content + stop


def supervised(tokenizer: Any, masked: Masked) -> list[tuple[int, list[int], list[int]]]:
    """(message index, context ids, supervised ids) per turn, in conversation order."""
    out = []
    for ex in masked.examples:
        runs, cur = [], []
        for token, label in zip(ex.input_ids, ex.labels, strict=True):
            if label != IGNORE:
                cur.append(token)
            elif cur:
                runs.append(cur)
                cur = []
        runs += [cur] if cur else []
        assert len(runs) == sum(1 for t in ex.turns if t.start < len(ex.input_ids))
        for turn, run in zip(ex.turns, runs, strict=False):
            out.append((turn.message, ex.input_ids[: turn.start], run))
    return sorted(out)


def check_inference_equivalence(
    tokenizer: Any, messages: list[dict[str, Any]], masked: Masked, after: str
) -> None:
    """The inference-time prompt ids, then the supervised ids, decode to the template's
    rendering of the turn (through its end-of-turn text)."""
    for i, context, run in supervised(tokenizer, masked):
        prompt = render(tokenizer, messages[:i], None, True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert context == prompt_ids[: len(context)]
        merged = prompt_ids[len(context) :]
        assert len(merged) <= 1, "more than one prompt token merged into the answer"
        turn = render(tokenizer, messages[: i + 1], None, False)
        turn = turn[: len(turn) - len(after)]
        assert tokenizer.decode(context + run, skip_special_tokens=False) == turn


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_every_turn_supervises_what_the_model_writes_at_inference(family: str, name: str) -> None:
    tokenizer = build_tokenizer(family)
    messages = CONVERSATIONS[name]
    end = end_of_turn(tokenizer, None)
    assert end.text == FAMILIES[family].stop  # derived from the template, not the eos
    masked = mask_conversation(tokenizer, messages, template=None, end=end, max_length=4096)
    got = [tokenizer.decode(run) for _, _, run in supervised(tokenizer, masked)]
    want = [expected(family, m) for m in messages if m["role"] == "assistant"]
    assert got == want
    check_inference_equivalence(tokenizer, messages, masked, end.after)
    counts = SignalCounts()
    for ex in masked.examples:
        check_example(tokenizer, ex, counts)
        if has_generation_markers(tokenizer, None):
            check_generation_markers(tokenizer, messages, None, ex, counts)
    assert counts.turns == len(want)
    assert counts.generation_marked == (
        len(masked.examples) if family.endswith("generation") else 0
    )
    # history rewriting: Qwen3 renders earlier turns without the think block
    assert masked.split == (family == "qwen3" and len(want) > 1)


REASONING = [
    U("What is 2+2?"),
    A("4", reasoning_content="Add two and two."),
    U("And 3+3?"),
    A("6", reasoning_content="\nThree plus three.\n"),
]
INLINE = [
    U("What is 2+2?"),
    A("<think>\nAdd two and two.\n</think>\n\n4"),
    U("And 3+3?"),
    A("<think>\nThree plus three.\n</think>\n\n6"),
]


@pytest.mark.parametrize(
    ("family", "messages"),
    [("qwen3", REASONING), ("qwen3", INLINE), ("deepseek_r1", INLINE)],
    ids=["qwen3-reasoning_content", "qwen3-inline", "deepseek_r1-inline"],
)
def test_reasoning_is_trained_in_its_turn_and_history_is_rendered_as_the_template_does(
    family: str, messages: list[dict[str, Any]]
) -> None:
    """Each turn is its own example: its reasoning supervised, earlier turns in the context
    exactly as the template renders history (reasoning dropped), no user text supervised."""
    tokenizer = build_tokenizer(family)
    end = end_of_turn(tokenizer, None)
    masked = mask_conversation(tokenizer, messages, template=None, end=end, max_length=4096)
    assert masked.split and len(masked.examples) == 2 and masked.extra_tokens > 0
    got = [tokenizer.decode(run) for _, _, run in supervised(tokenizer, masked)]
    assert got == [
        "<think>\nAdd two and two.\n</think>\n\n4" + end.text,
        "<think>\nThree plus three.\n</think>\n\n6" + end.text,
    ]
    second = tokenizer.decode(masked.examples[1].input_ids)
    assert "Add two and two." not in second  # history as the template renders it
    check_inference_equivalence(tokenizer, messages, masked, end.after)
    for ex in masked.examples:
        check_example(tokenizer, ex, SignalCounts())


CALL = {
    "type": "function",
    "id": "call00001",
    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
}
TOOLS = [
    U("Weather in Paris?"),
    A("", tool_calls=[CALL]),
    {"role": "tool", "content": "18C and sunny", "tool_call_id": "call00001"},
    A("It is 18C and sunny in Paris."),
]
TOOL_TURNS = {
    "qwen25": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    "qwen3": '<think>\n\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
    '{"city": "Paris"}}\n</tool_call>',
    "llama31": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    "mistral_v7": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, '
    '"id": "call00001"}]',
}


@pytest.mark.parametrize("family", sorted(TOOL_TURNS))
def test_tool_calls_are_supervised_and_tool_results_are_context(family: str) -> None:
    tokenizer = build_tokenizer(family)
    end = end_of_turn(tokenizer, None)
    masked = mask_conversation(tokenizer, TOOLS, template=None, end=end, max_length=4096)
    got = [tokenizer.decode(run) for _, _, run in supervised(tokenizer, masked)]
    answer = "It is 18C and sunny in Paris."
    final = ("<think>\n\n</think>\n\n" if family == "qwen3" else "") + answer
    assert got == [TOOL_TURNS[family] + end.text, final + end.text]
    assert not any("18C and sunny" in g and "Paris." not in g for g in got)  # result unsupervised
    check_inference_equivalence(tokenizer, TOOLS, masked, end.after)


@pytest.mark.parametrize("family", ["chatml", "qwen3", "phi3", "mistral", "llama31"])
def test_truncation_at_every_length_keeps_a_prefix_of_the_labels(family: str) -> None:
    tokenizer = build_tokenizer(family)
    messages = CONVERSATIONS["multi-turn with system"]
    end = end_of_turn(tokenizer, None)
    whole = mask_conversation(tokenizer, messages, template=None, end=end, max_length=4096)
    for k, full in enumerate(whole.examples):
        for n in range(1, len(full.input_ids) + 1):
            cut = mask_conversation(tokenizer, messages, template=None, end=end, max_length=n)
            ex = cut.examples[k]
            assert ex.input_ids == full.input_ids[:n] and ex.labels == full.labels[:n]
            assert ex.truncated_turns == sum(1 for t in full.turns if t.end > n)
            check_example(tokenizer, ex, SignalCounts())


@pytest.mark.parametrize("family", ["chatml", "llama31", "mistral_v7", "phi3", "deepseek_r1"])
@pytest.mark.parametrize("trim", [False, True])
def test_prefix_ids_equal_tokenizing_every_prefix(family: str, trim: bool) -> None:
    """boundaries.prefix_ids (anchored on the template's added tokens) gives exactly the
    tokenizer's ids of text[:p] at every character position, markers in content included."""
    from distillery.training.boundaries import prefix_ids

    tokenizer = build_tokenizer(family, trim_offsets=trim)
    end = end_of_turn(tokenizer, None)
    assert end.anchors
    messages = [*CONVERSATIONS["template markers in content"], U("Héllo ☃\n\n  x")]
    text = render(tokenizer, messages, None, False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    positions = list(range(len(text) + 1))
    located = prefix_ids(tokenizer, text, ids, positions, end.anchors)
    for p, (j, tail) in zip(positions, located, strict=True):
        assert ids[:j] + tail == tokenizer(text[:p], add_special_tokens=False)["input_ids"], p


@pytest.mark.parametrize("family", ["mistral", "chatml", "llama3"])
@pytest.mark.parametrize(
    "name", ["multi-turn with system", "empty answer", "whitespace-only answer"]
)
def test_sentencepiece_style_tokenizer(family: str, name: str) -> None:
    """A Metaspace BPE that prepends "▁" only to the text's first word (Llama-2/Mistral
    conversions): pieces between special tokens do not tokenize alone as in place, so
    boundaries fall back to whole prefixes; decoding drops a leading space at the start of
    a text, so supervised text is read in place. Both are checked."""
    tokenizer = build_tokenizer(family, sentencepiece=True)
    messages = CONVERSATIONS[name]
    end = end_of_turn(tokenizer, None)
    assert end.anchors == ()  # the anchor shortcut is refused for this tokenizer
    masked = mask_conversation(tokenizer, messages, template=None, end=end, max_length=4096)
    counts = SignalCounts()
    for ex in masked.examples:
        check_example(tokenizer, ex, counts)
    assert counts.turns == sum(1 for m in messages if m["role"] == "assistant")
    for i, context, run in supervised(tokenizer, masked):
        prompt = render(tokenizer, messages[:i], None, True)
        assert context == tokenizer(prompt, add_special_tokens=False)["input_ids"]
        turn = render(tokenizer, messages[: i + 1], None, False)
        want = turn[len(prompt) : len(turn) - len(end.after)]
        whole = tokenizer.decode(context + run)
        assert whole[len(tokenizer.decode(context)) :] == want == expected(family, messages[i])
