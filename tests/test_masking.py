"""Assistant-only masking, golden-tested on five chat-template families."""

from __future__ import annotations

import pytest
from distillery.training.masking import IGNORE, MaskingError, end_of_turn, mask_conversation

from tests.tiny_models import FAMILIES, build_tokenizer

CONVERSATIONS = [
    [
        {"role": "user", "content": "Write a short poem about the sea."},
        {"role": "assistant", "content": "The sea and the sky, blue and wide."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Explain recursion."},
        {"role": "assistant", "content": "A function that calls itself."},
        {"role": "user", "content": "Give one example."},
        {"role": "assistant", "content": "def f(n): return 1 if n == 0 else n * f(n - 1)"},
    ],
]


def supervised_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    prev = False
    for token, label in zip(ids, labels, strict=True):
        on = label != IGNORE
        if on and not prev:
            runs.append([])
        if on:
            runs[-1].append(token)
        prev = on
    return runs


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"qwen3"}))  # think block: see golden
@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["single", "multi-with-system"])
def test_each_turn_supervises_exactly_its_content_and_stop(
    family: str, conversation: list[dict]
) -> None:
    tokenizer = build_tokenizer(family)
    if family in ("mistral", "gemma") and conversation[0]["role"] == "system":
        pass  # these templates fold the system text into the first user turn
    end = end_of_turn(tokenizer, None)
    stop = end.text
    assert stop == FAMILIES[family].stop  # derived from the template, not the eos
    (masked,) = mask_conversation(
        tokenizer, conversation, template=None, end=end, max_length=4096
    ).examples
    runs = supervised_runs(masked.input_ids, masked.labels)
    answers = [m["content"] for m in conversation if m["role"] == "assistant"]
    assert len(runs) == len(answers)
    for run, answer in zip(runs, answers, strict=True):
        decoded = tokenizer.decode(run)
        assert decoded.lstrip() == answer + stop, (family, decoded)
        assert run[-1] == tokenizer.convert_tokens_to_ids(
            stop
        )  # the stop token itself is supervised
    # everything else (system, user, template scaffolding) is masked
    assert masked.supervised == sum(len(r) for r in runs)
    assert all(
        label in (IGNORE, token)
        for token, label in zip(masked.input_ids, masked.labels, strict=True)
    )


def test_truncation_is_counted() -> None:
    tokenizer = build_tokenizer("chatml")
    (masked,) = mask_conversation(
        tokenizer, CONVERSATIONS[1], template=None, end=end_of_turn(tokenizer, None), max_length=20
    ).examples
    assert len(masked.input_ids) == 20 and masked.truncated_turns >= 1


def test_template_errors_and_missing_stop_token() -> None:
    tokenizer = build_tokenizer("mistral")
    bad = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    with pytest.raises(MaskingError, match="does not render"):
        mask_conversation(
            tokenizer, bad, template=None, end=end_of_turn(tokenizer, None), max_length=100
        )
    with pytest.raises(MaskingError, match="has no token '<\\|im_end\\|>'"):
        end_of_turn(tokenizer, None, "<|im_end|>")
    with pytest.raises(MaskingError, match="which has not the stop token '<\\|endoftext\\|>'"):
        end_of_turn(build_tokenizer("chatml"), None, "<|endoftext|>")


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["single", "multi-with-system"])
def test_base_model_template_supervises_each_answer_and_the_eos(conversation: list[dict]) -> None:
    """A base model without a chat template: training/chat_templates/base.jinja closes each
    assistant turn with the tokenizer's eos token, the default stop token."""
    from pathlib import Path

    tokenizer = build_tokenizer("chatml")
    tokenizer.chat_template = None
    tokenizer.eos_token = "<|endoftext|>"
    template = (
        Path(__file__).resolve().parent.parent / "training" / "chat_templates" / "base.jinja"
    ).read_text()
    end = end_of_turn(tokenizer, template)
    stop = end.text
    assert stop == "<|endoftext|>"
    (masked,) = mask_conversation(
        tokenizer, conversation, template=template, end=end, max_length=4096
    ).examples
    runs = supervised_runs(masked.input_ids, masked.labels)
    answers = [m["content"] for m in conversation if m["role"] == "assistant"]
    assert [tokenizer.decode(r).lstrip() for r in runs] == [a + stop for a in answers]


def test_a_token_merging_template_whitespace_with_the_answer_is_supervised() -> None:
    """Byte-level BPE merges the space the template writes before the answer into the
    answer's first word (" qu" + "ick" here): that token straddles the span start and must
    be supervised, or the student never learns its answers' first word."""
    from distillery.training.masking import EndOfTurn, plan_sequences

    tokenizer = build_tokenizer("chatml")
    template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}"
        "{% if m['role'] == 'assistant' %}{{ '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    conversation = [
        {"role": "user", "content": "Describe the fox."},
        {"role": "assistant", "content": "quick and brown."},
    ]
    end = EndOfTurn("<|im_end|>", "\n")
    ((text, turns),), _ = plan_sequences(tokenizer, conversation, template, end)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    (masked,) = mask_conversation(
        tokenizer, conversation, template=template, end=end, max_length=4096
    ).examples
    start = len(turns[0].context)
    straddling = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < start < b]
    assert straddling, "the tokenizer did not merge the space into the answer's first token"
    first = straddling[0]
    assert tokenizer.decode([enc["input_ids"][first]]) == " qu"  # space + answer text
    assert masked.labels[first] == enc["input_ids"][first]
    assert masked.labels[first - 1] == IGNORE  # ':' before it is scaffolding
