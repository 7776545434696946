"""Defects found by an adversarial review of the masking and its signal check, one test each:
template errors spanning several lines, an assistant-first conversation reported as an
"empty conversation", a prompt mismatch reported without where the texts differ, and a
chat template given as a file not travelling with the saved tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from distillery.errors import UserError
from distillery.training.config import TrainConfig
from distillery.training.data import load_tokenizer, prepare
from distillery.training.masking import MaskingError, end_of_turn, mask_conversation

from tests.tiny_models import CHATML, TEMPLATES, build_tokenizer


def U(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def A(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def test_a_template_exception_is_reported_on_one_line() -> None:
    """A template's raise_exception message with newlines stayed multi-line in the error."""
    tokenizer = build_tokenizer("chatml")
    template = "{{ raise_exception('roles must alternate\nsee the docs') }}"
    with pytest.raises(MaskingError) as caught:
        mask_conversation(tokenizer, [U("a"), A("b")], template=template, end=None, max_length=64)
    assert "\n" not in str(caught.value)
    assert "roles must alternate see the docs" in str(caught.value)


def test_an_assistant_first_conversation_is_a_clear_error_naming_the_row() -> None:
    """It used to fail inside transformers as 'Cannot apply chat template to an empty
    conversation', which names nothing the user wrote."""
    tokenizer = build_tokenizer("chatml")
    config = TrainConfig(model="tiny", max_length=128, packing=False)
    rows = [("d.jsonl:7", [A("Hello, how can I help?"), U("Hi"), A("Sure.")])]
    with pytest.raises(UserError) as caught:
        prepare(config, rows, tokenizer, None, end_of_turn(tokenizer, None))
    message = str(caught.value)
    assert message.startswith("d.jsonl:7: messages[0] is an assistant turn with no prompt")
    assert "\n" not in message


def test_a_prompt_that_differs_before_its_end_is_shown_where_it_differs() -> None:
    """A template whose default system prompt depends on the conversation (here its length)
    renders the prompt and the turn differently far before the prompt's end; the error
    showed only the two (identical) endings."""
    template = (
        "{% if messages[0].role != 'system' %}<|im_start|>system\nDefault "
        "{{ messages|length }}<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(MaskingError) as caught:
        end_of_turn(build_tokenizer("chatml"), template)
    message = str(caught.value)
    assert "Default 1" in message and "Default 2" in message
    assert "\n" not in message


def test_a_chat_template_file_becomes_the_saved_tokenizers_template(tmp_path: Path) -> None:
    """Training with --chat-template FILE saved the tokenizer with its own template, so the
    model was served with a template it was not trained on."""
    build_tokenizer("chatml").save_pretrained(tmp_path / "model")
    custom = CHATML + "{#- the template this model was trained with -#}"
    (tmp_path / "t.jinja").write_text(custom)
    config = TrainConfig(model=str(tmp_path / "model"), chat_template=str(tmp_path / "t.jinja"))
    tokenizer, template, end = load_tokenizer(config)
    assert template == custom and end is not None
    tokenizer.save_pretrained(tmp_path / "saved")
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "saved").chat_template == custom


def test_an_anchor_that_ends_the_probe_is_checked_with_text_after_it() -> None:
    """Sentencepiece (prepend_scheme="first") marks the first word of a piece tokenized on
    its own but not after an added token; a template whose probe rendering ends with its
    only added token gave nothing to check that on, so the shortcut was used, the next
    turn's start moved back over the user's text (supervised) and the signal check refused
    a correct conversation."""
    from distillery.training.masking import IGNORE
    from distillery.training.signal import SignalCounts, check_example

    template = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}"
        "{% if m.role == 'assistant' %}<|im_end|>{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    tokenizer = build_tokenizer("chatml", sentencepiece=True)
    end = end_of_turn(tokenizer, template)
    messages = [U("hi"), A("Hello there."), U("the"), A("the fox.")]
    (ex,) = mask_conversation(
        tokenizer, messages, template=template, end=end, max_length=512
    ).examples
    supervised = [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE]
    assert "user" not in tokenizer.decode(supervised)
    check_example(tokenizer, ex, SignalCounts())


def test_an_unsupervised_first_answer_token_is_named_as_such() -> None:
    """A turn whose supervision starts one token late was reported only as 'the tokens
    before the answer are not the tokens of its inference-time prompt', which points at the
    prompt rather than at the answer token left out; the error now names that token."""
    from distillery.training.masking import IGNORE
    from distillery.training.signal import SignalCounts, SignalError, check_example

    tokenizer = build_tokenizer("chatml")
    end = end_of_turn(tokenizer, None)
    (ex,) = mask_conversation(
        tokenizer, [U("hi"), A("Hello there.")], template=None, end=end, max_length=512
    ).examples
    turn = ex.turns[0]
    first = tokenizer.decode(ex.input_ids[turn.start : turn.start + 1])
    ex.labels[turn.start] = IGNORE
    turn.start += 1
    with pytest.raises(SignalError) as caught:
        check_example(tokenizer, ex, SignalCounts())
    assert str(caught.value) == (
        "messages[1]: the tokens before the answer are not the tokens of its inference-time "
        f"prompt: 1 token(s) after that prompt ({first!r}) are not supervised, though the "
        "model writes them"
    )


def test_inline_reasoning_the_template_drops_from_the_turn_is_an_error() -> None:
    """The published DeepSeek-R1 template cuts `...</think>` from every assistant turn, the
    last one too: R1-style rows (reasoning inline in the content) trained the answers only,
    silently - unlike `reasoning_content`, which is an error when the template drops it."""
    template = (TEMPLATES / "deepseek_r1.jinja").read_text()
    cut_all = template.replace("not loop.last and '</think>' in content", "'</think>' in content")
    assert cut_all != template
    tokenizer = build_tokenizer("deepseek_r1")
    end = end_of_turn(tokenizer, cut_all)
    for content in ("<think>\nAdd them.\n</think>\n\n4", "Add them.\n</think>\n\n4"):
        with pytest.raises(MaskingError, match=r"^messages\[1\] has reasoning in its content"):
            mask_conversation(
                tokenizer, [U("2+2?"), A(content)], template=cut_all, end=end, max_length=256
            )
    kept = mask_conversation(
        tokenizer,
        [U("2+2?"), A("<think>\nAdd them.\n</think>\n\n4")],
        template=template,
        end=end_of_turn(tokenizer, template),
        max_length=256,
    )
    assert len(kept.examples) == 1


def test_named_templates_still_get_the_generation_marker_check() -> None:
    """A tokenizer saved with several named templates has a dict `chat_template`; the
    {% generation %} cross-check was skipped for it, silently."""
    from distillery.training.signal import has_generation_markers

    tokenizer = build_tokenizer("chatml_generation")
    marked = (TEMPLATES / "chatml_generation.jinja").read_text()
    tokenizer.chat_template = {"default": marked, "tool_use": CHATML}
    assert has_generation_markers(tokenizer, None)
    tokenizer.chat_template = {"default": CHATML, "tool_use": marked}
    assert not has_generation_markers(tokenizer, None)


def test_a_decoding_mismatch_late_in_a_long_answer_is_shown_where_it_is() -> None:
    """The error showed the first 80 characters of both texts: for an unrepresentable
    character far into an answer, two identical beginnings and not the difference."""
    from distillery.training.signal import SignalCounts, SignalError, check_example

    tokenizer = build_tokenizer("chatml", sentencepiece=True)
    answer = "The quick brown fox jumps over the lazy dog. " * 4 + "A snowman: \u2603"
    (ex,) = mask_conversation(
        tokenizer,
        [U("hi"), A(answer)],
        template=None,
        end=end_of_turn(tokenizer, None),
        max_length=512,
    ).examples
    with pytest.raises(SignalError) as caught:
        check_example(tokenizer, ex, SignalCounts())
    message = str(caught.value)
    assert "<unk>" in message and "\u2603" in message and "they differ at character" in message


def _qwen3_with_generation_markers() -> str:
    """Qwen3's template with {% generation %} around what each assistant turn writes."""
    template = (TEMPLATES / "qwen3.jinja").read_text()
    branch = "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) -%}"
    edits = [
        (branch, "{{ '<|im_start|>assistant\\n' }}{%- generation -%}" + branch),
        ("{{ '<|im_start|>assistant\\n<think>\\n'", "{{ '<think>\\n'"),
        ("{{ '<|im_start|>assistant\\n' + content }}", "{{ content }}"),
        (
            "{{ '<|im_end|>\\n' }}\n{%- elif message.role == 'tool'",
            "{{ '<|im_end|>' }}{%- endgeneration -%}{{ '\\n' }}\n{%- elif message.role == 'tool'",
        ),
    ]
    for old, new in edits:
        assert template.count(old) == 1, old
        template = template.replace(old, new)
    return template


def test_a_split_conversation_passes_the_generation_marker_check() -> None:
    """A history-rewriting template with {% generation %} markers: the sequence that trains
    the last turn holds an earlier assistant turn trained in its own example, which the
    template marks; the check compared the marks with this sequence's labels and refused
    every correct multi-turn conversation."""
    template = _qwen3_with_generation_markers()
    tokenizer = build_tokenizer("qwen3")
    config = TrainConfig(model="tiny", max_length=512, packing=False)
    rows = [("a:1", [U("What is 2+2?"), A("4"), U("And 3+3?"), A("6")])]
    _, stats = prepare(config, rows, tokenizer, template, end_of_turn(tokenizer, template))
    assert (stats.split_conversations, stats.signal_generation_marked) == (1, 2)
