"""The pre-flight signal check on every prepared example, its counts in the prep stats,
history-rewriting splits, {% generation %} markers, and the label preview."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from distillery.errors import UserError
from distillery.training import masking
from distillery.training.config import TrainConfig
from distillery.training.data import prepare
from distillery.training.masking import end_of_turn

from tests.tiny_models import TEMPLATES, build_tiny_lm, build_tokenizer


def U(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def A(text: str, **fields: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **fields}


ROWS = [
    ("d.jsonl:1", [U("What is 2+2?"), A("4"), U("And 3+3?"), A("6", reasoning_content="Add.")]),
    ("d.jsonl:2", [U("Hi"), A("Hello!")]),
]


def run_prepare(family: str, rows: list[tuple[str, list[dict[str, Any]]]], **settings: Any) -> Any:
    tokenizer = build_tokenizer(family)
    template = settings.pop("template", None)
    config = TrainConfig(model="tiny", max_length=512, packing=False, **settings)
    end = end_of_turn(tokenizer, template)
    return prepare(config, rows, tokenizer, template, end)


def test_every_turn_is_checked_and_splits_are_counted() -> None:
    rows, stats = run_prepare("qwen3", ROWS)
    assert stats.conversations == 2 and stats.examples == 3 == len(rows)
    assert stats.split_conversations == 1 and stats.split_extra_examples == 1
    assert stats.split_extra_tokens > 0
    assert stats.signal_checked_turns == 3 and stats.signal_generation_marked == 0
    assert stats.end_of_turn == "<|im_end|>"
    assert {"split_extra_tokens", "signal_checked_turns"} <= set(stats.as_dict())
    assert "samples" not in stats.as_dict() and len(stats.samples) == 3


def test_history_rewrite_error_names_the_example() -> None:
    with pytest.raises(UserError, match=r"^d\.jsonl:1: the chat template renders messages\[1\]"):
        run_prepare("qwen3", ROWS, history_rewrite="error")


@pytest.mark.parametrize(
    ("shift", "message"),
    [
        ((1, 0), "tokens before the answer are not the tokens of its inference-time prompt"),
        ((0, 1), "supervised tokens decode to"),
        ((-1, 0), "supervision starts inside the inference-time prompt"),
        ((0, -1), "supervised tokens decode to"),
    ],
)
def test_a_wrong_label_fails_the_check_with_the_example_named(
    monkeypatch: pytest.MonkeyPatch, shift: tuple[int, int], message: str
) -> None:
    """Over- or under-supervising by one token at either end is caught before training."""
    real = masking.token_turns

    def off_by_one(
        tokenizer: Any, text: str, turns: list[masking.Turn], *anchors: Any
    ) -> list[int]:
        ids = real(tokenizer, text, turns, *anchors)
        if len(ids) > 30:  # the second row only
            for t in turns:
                t.start, t.end = t.start + shift[0], t.end + shift[1]
        return ids

    monkeypatch.setattr(masking, "token_turns", off_by_one)
    rows = [("ok.jsonl:1", [U("Hi"), A("Yo")]), ("bad.jsonl:7", [U("Hi " * 9), A("Hello there")])]
    with pytest.raises(UserError, match=rf"^bad\.jsonl:7: signal check: .*{message}"):
        run_prepare("chatml", rows)
    assert run_prepare("chatml", rows, signal_check=False)[1].signal_checked_turns == 0


def test_boundary_merge_is_supervised_and_counted() -> None:
    """A token merging the prompt's trailing space with the answer's first characters is
    supervised; the check accepts it because the merged prompt text is exactly the end of
    the inference-time prompt."""
    template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}"
        "{% if m['role'] == 'assistant' %}{{ '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    _, stats = run_prepare(
        "chatml", [("r:1", [U("Fox?"), A("quick and brown.")])], template=template
    )
    assert stats.signal_checked_turns == 1 and stats.signal_boundary_merges == 1


def test_generation_markers_are_used_and_must_agree(tmp_path: Path) -> None:
    rows = [("r:1", [U("Hi"), A("Hello"), U("Bye"), A("")])]
    _, stats = run_prepare("chatml_generation", rows)
    assert stats.signal_generation_marked == 1
    wrong = (TEMPLATES / "chatml_generation.jinja").read_text()
    wrong = wrong.replace("{{ message.content + '<|im_end|>' }}", "{{ message.content }}")
    wrong = wrong.replace(
        "{%- endgeneration -%}\n{{ '\\n' }}", "{%- endgeneration -%}\n{{ '<|im_end|>\\n' }}"
    )
    assert wrong.count("generation") == 4
    with pytest.raises(
        UserError, match=r"^r:1: signal check: .*markers and the derived supervision"
    ):
        run_prepare("chatml_generation", rows, template=wrong)


def test_prepare_only_writes_the_counts_and_a_label_preview(tmp_path: Path) -> None:
    from distillery.cli import main
    from distillery.training.preview import write_label_preview

    lm = build_tiny_lm(tmp_path / "qwen3", family="qwen3")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for _, m in ROWS))
    out = tmp_path / "p"
    args = ["train", "--prepare-only", "--model", str(lm), "--data", str(data)]
    assert main([*args, "--output-dir", str(out)]) == 0
    stats = json.loads((out / "prepared_stats.json").read_text())
    assert stats["signal_checked_turns"] == 3 and stats["split_conversations"] == 1
    tokenizer = build_tokenizer("qwen3")
    _, prep = run_prepare("qwen3", [("x<1>", [U("<b>hi</b>"), A("a < b & c")])])
    summary = write_label_preview(prep.samples, tokenizer, tmp_path / "v.html", n=8)
    html = (tmp_path / "v.html").read_text()
    assert "&lt;b&gt;hi&lt;/b&gt;" in html and "<b>hi" not in html  # escaped
    assert '<span class="sup">&lt;think&gt;' in html and "a &lt; b &amp; c&lt;|im_end|&gt;" in html
    assert (
        "x<1>: " in summary and "learns '<think>\\n\\n</think>\\n\\na < b & c<|im_end|>'" in summary
    )


def test_text_the_tokenizer_cannot_represent_fails_the_check() -> None:
    """A tokenizer without byte fallback turns an unknown character into <unk>: training
    on it would teach the model to write <unk>, so the check stops at that example."""
    from distillery.training.masking import end_of_turn as derive

    tokenizer = build_tokenizer("chatml", sentencepiece=True)
    config = TrainConfig(model="tiny", max_length=512, packing=False)
    rows = [("a:1", [U("Hi"), A("Hello")]), ("a:2", [U("Snow?"), A("A snowman: \u2603")])]
    with pytest.raises(UserError, match=r"^a:2: signal check: .*decode to '.*<unk>"):
        prepare(config, rows, tokenizer, None, derive(tokenizer, None))
