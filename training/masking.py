"""Assistant-only labels for chat conversations, computed from the chat template itself.

For each assistant turn i the template is rendered twice: the conversation up to turn i
with the generation prompt (everything before the assistant's content) and up to turn i
inclusive (content and the template's end-of-turn text). The difference is that turn's
character span; it is cut right after the turn's stop token, so the newline a template
puts after `<|im_end|>` is scaffolding, not supervised. The full conversation is then
tokenised once with offsets, and a token is supervised when its characters overlap an
assistant span - so a tokenizer that merges the template's whitespace into the first
content token still supervises that token. Labels follow the unshifted convention: equal
to `input_ids` where supervised, -100 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE = -100


class MaskingError(ValueError):
    """The conversation or template cannot be masked correctly."""


@dataclass
class Masked:
    input_ids: list[int]
    labels: list[int]
    truncated_turns: int  # assistant turns cut by max_length
    supervised: int


def _render(
    tokenizer: Any, messages: list[dict[str, str]], template: str | None, generation: bool
) -> str:
    try:
        return str(
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation, chat_template=template
            )
        )
    except Exception as exc:  # jinja errors, template exceptions (raise_exception)
        raise MaskingError(f"the chat template does not render this conversation: {exc}") from None


def stop_text(tokenizer: Any, stop_token: str | None) -> str:
    """The end-of-turn text the template writes after each assistant message."""
    text = stop_token or tokenizer.eos_token
    if not text:
        raise MaskingError(
            "no stop token: set training.stop_token or give the tokenizer an eos_token"
        )
    ids = tokenizer.convert_tokens_to_ids(text)
    if ids is None or ids == tokenizer.unk_token_id:
        raise MaskingError(f"the tokenizer has no token {text!r} (the template's stop token)")
    return str(text)


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, str]], template: str | None, stop: str
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn (+ stop)."""
    full = _render(tokenizer, messages, template, generation=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], template, generation=True)
        if not full.startswith(before):
            raise MaskingError(
                "the chat template is not prefix-consistent (the conversation before an "
                "assistant turn renders differently when the turn follows); give a template "
                "file with training.chat_template"
            )
        start = len(before)
        stop_at = full.find(stop, start + len(message["content"].strip()))
        if stop_at < 0:
            raise MaskingError(
                f"assistant turn {i} does not end with the stop token {stop!r} in this template"
            )
        spans.append((start, stop_at + len(stop)))
    return full, spans


def mask_conversation(
    tokenizer: Any,
    messages: list[dict[str, str]],
    *,
    template: str | None,
    stop: str,
    max_length: int,
) -> Masked:
    text, spans = assistant_spans(tokenizer, messages, template, stop)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    labels = [IGNORE] * len(ids)
    span_i = 0
    for t, (a, b) in enumerate(offsets):
        while span_i < len(spans) and spans[span_i][1] <= a:
            span_i += 1
        if span_i < len(spans) and a < spans[span_i][1] and b > spans[span_i][0] and b > a:
            labels[t] = ids[t]
    truncated = 0
    if len(ids) > max_length:
        cut_at = offsets[max_length - 1][1] if max_length > 0 else 0
        truncated = sum(1 for s, e in spans if e > cut_at)
        ids, labels = ids[:max_length], labels[:max_length]
    return Masked(ids, labels, truncated, sum(1 for x in labels if x != IGNORE))
