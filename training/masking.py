"""What the model must learn, derived from the chat template: assistant-only labels.

The supervised text of assistant turn i is what the model produces at inference: given the
prompt `render(messages[:i], add_generation_prompt=True)` (the *context*), it writes the
rest of `render(messages[:i + 1])` up to and including the template's end-of-turn text.
The end-of-turn text is derived once per template by rendering a probe turn (the first
special token after the probe answer; `stop_token` overrides it), and the turn's end is
found from the end of its own rendering - never by searching the answer, so an answer
that quotes the stop text cannot move it.

A conversation is trained as one sequence when every turn's context and text appear, as
at inference, at the start of the whole conversation's rendering. A template that renders
earlier turns differently once later turns follow (history rewriting: Qwen3 and
DeepSeek-R1 drop reasoning from earlier turns) cannot be; it is split into one sequence
per such turn (`history_rewrite="split"`), each rendered exactly as at inference and
supervised on its last turn only, or refused (`"error"`).

Token boundaries come from what the tokenizer does with the text before them, not from
character offsets (trimmed offsets give whitespace tokens zero width): the turn starts at
the first token where the sequence's ids leave the ids of `tokenizer(context)` - a token
merging the context's last characters with the answer's first ones is supervised (the
boundary-merge case) - and ends after the ids of `tokenizer(sequence[:turn end])`; see
boundaries.py for how that costs one tokenization per sequence. Labels are unshifted:
equal to `input_ids` where supervised, -100 elsewhere. docs/masking.md has the whole story.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Literal

from distillery.chat_template import PROBE_ANSWER, PROBE_USER, special_tokens
from distillery.training.boundaries import common_prefix, prefix_ids, template_anchors

IGNORE = -100
FIELDS_RENDERED = ("reasoning_content", "tool_calls", "name")  # ids only link calls
INLINE_REASONING = re.compile(r"\s*(?:<think>)?(.*?)</think>", re.DOTALL)  # R1-style content

HistoryRewrite = Literal["split", "error"]


class MaskingError(ValueError):
    """The conversation or template cannot be masked correctly."""


class TemplateRenderError(MaskingError):
    """The chat template raised or failed on a conversation."""


@dataclass(frozen=True)
class EndOfTurn:
    """How the template closes an assistant turn: `text` is supervised (the model writes
    it and generation stops there); `after` is scaffolding the template writes after it
    when the turn ends the conversation (e.g. a newline, or Phi-3's final eos)."""

    text: str
    after: str = ""
    anchors: tuple[tuple[str, int], ...] = ()  # the template's added tokens (boundaries.py)


@dataclass
class Turn:
    """One supervised assistant turn: its inference-time prompt and what it must produce."""

    message: int  # index in the conversation
    context: str  # render(messages[:message], add_generation_prompt=True)
    text: str  # the rendered turn after the context, through the end-of-turn text
    start: int = 0  # first supervised token in the sequence
    end: int = 0  # one past the last (may exceed the truncated length)


@dataclass
class Example:
    """One training sequence of a conversation, its labels and the turns it supervises."""

    input_ids: list[int]
    labels: list[int]
    turns: list[Turn]
    truncated_turns: int  # assistant turns cut by max_length
    supervised: int
    length: int  # tokens before truncation


@dataclass
class Masked:
    """A conversation's training sequences: one, or one per turn when it was split."""

    examples: list[Example]
    split: bool = False  # the template rewrites history: trained turn by turn
    extra_tokens: int = 0  # tokens beyond the one-sequence rendering, when split


def render(tokenizer: Any, messages: list[dict[str, Any]], template: str | None, gen: bool) -> str:
    """The template's text for `messages` (with the generation prompt when `gen`)."""
    try:
        return str(
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=gen, chat_template=template
            )
        )
    except Exception as exc:  # jinja errors, template exceptions (raise_exception)
        raise TemplateRenderError(
            f"the chat template does not render this conversation: {one_line(exc)}"
        ) from None


def one_line(exc: object) -> str:
    """An exception's message on one line (template exceptions may span several)."""
    return " ".join(str(exc).split())


def first_difference(prompt: str, whole: str) -> str:
    """Where a generation prompt and the rendered turn part, shown from both sides."""
    k = next((k for k, (a, b) in enumerate(zip(prompt, whole, strict=False)) if a != b), None)
    if k is None:  # the prompt runs past the turn's rendering
        k = len(whole)
    lo = max(0, k - 30)
    return f"at character {k}: prompt {prompt[lo : k + 30]!r}, turn {whole[lo : k + 30]!r}"


def _probe(tokenizer: Any, template: str | None) -> tuple[str, str]:
    """A probe turn's prompt (with the generation prompt) and its whole rendering; with a
    system message when the template needs one."""
    probe = [
        {"role": "system", "content": "Probe system."},
        {"role": "user", "content": PROBE_USER},
        {"role": "assistant", "content": PROBE_ANSWER},
    ]
    try:
        messages = probe[1:]
        prompt = render(tokenizer, messages[:-1], template, True)
    except TemplateRenderError:
        messages = probe
        prompt = render(tokenizer, messages[:-1], template, True)
    return prompt, render(tokenizer, messages, template, False)


def end_of_turn(tokenizer: Any, template: str | None, stop_token: str | None = None) -> EndOfTurn:
    """Derive the end-of-turn text by rendering a probe turn: the text after the answer up
    to and including the first special token there (or `stop_token`, when given)."""
    if stop_token is not None:
        found = tokenizer.convert_tokens_to_ids(stop_token)
        if found is None or found == tokenizer.unk_token_id:
            raise MaskingError(f"the tokenizer has no token {stop_token!r} (training.stop_token)")
    prompt, whole = _probe(tokenizer, template)
    at = whole.find(PROBE_ANSWER, len(prompt))
    if not whole.startswith(prompt) or at < 0:
        where = (
            f"prompt ends {prompt[-40:]!r}, turn renders {whole[max(0, len(prompt) - 40) :]!r}"
            if whole.startswith(prompt)
            else f"they differ {first_difference(prompt, whole)}"
        )
        raise MaskingError(
            f"the chat template's generation prompt is not how it begins an assistant turn ({where})"
        )
    tail = whole[at + len(PROBE_ANSWER) :]
    ends = [
        (tail.find(s), -len(s), s)
        for s in ([stop_token] if stop_token else special_tokens(tokenizer))
    ]
    ends = [e for e in ends if e[0] >= 0]
    if not ends:
        what = f"not the stop token {stop_token!r}" if stop_token else "no special token to stop on"
        raise MaskingError(
            f"the chat template ends an assistant turn with {tail!r}, which has {what}"
            + ("" if stop_token else ": set training.stop_token")
        )
    at_end, _, token = min(ends)
    cut = at_end + len(token)
    return EndOfTurn(tail[:cut], tail[cut:], template_anchors(tokenizer, whole))


def rendered_turn(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    i: int,
    template: str | None,
    end: EndOfTurn | None,
) -> Turn:
    """Assistant turn i as at inference: its context and the text the model must write."""
    if i == 0:
        raise MaskingError(
            "messages[0] is an assistant turn with no prompt before it (no inference-time "
            "prompt to learn it from): start the conversation with a system or user message"
        )
    context = render(tokenizer, messages[:i], template, True)
    whole = render(tokenizer, messages[: i + 1], template, False)
    if end is None:
        end = end_of_turn(tokenizer, template)  # raises why the probe turn does not render
    if not whole.startswith(context):
        raise MaskingError(
            f"messages[{i}]: the template's generation prompt is not how it begins this "
            f"assistant turn (they differ {first_difference(context, whole)})"
        )
    tail = end.text + end.after
    if not whole.endswith(tail) or len(whole) - len(end.after) < len(context) + len(end.text):
        raise MaskingError(
            f"messages[{i}] does not end with the template's end-of-turn text {end.text!r} "
            f"(the turn renders as {whole[len(context) :][-60:]!r})"
        )
    turn = Turn(i, context, whole[len(context) : len(whole) - len(end.after)])
    inline = INLINE_REASONING.match(messages[i]["content"])
    if inline and inline[1].strip() and inline[1].strip() not in turn.text:
        raise MaskingError(
            f"messages[{i}] has reasoning in its content (before '</think>') that the chat "
            "template leaves out of the turn the model writes (the student would never learn "
            "it): use a template that renders it there, or remove it"
        )
    return turn


def check_fields_rendered(
    tokenizer: Any, messages: list[dict[str, Any]], template: str | None
) -> None:
    """Every field a message carries must change the template's rendering of the
    conversation up to it (where an assistant turn is rendered as at inference); a field
    the template ignores is an error, never silently dropped."""
    for j, message in enumerate(messages):
        fields = [f for f in FIELDS_RENDERED if f in message]
        if message.get("tool_calls") and message["content"].strip():
            fields.append("content")
        if not fields:
            continue
        head = messages[:j]
        base = render(tokenizer, [*head, message], template, False)
        for name in fields:
            without = {k: v for k, v in message.items() if k != name}
            if name == "content":
                without["content"] = ""
            try:
                same = render(tokenizer, [*head, without], template, False) == base
            except MaskingError:
                same = False  # the template needs the field: it is rendered
            if same:
                raise MaskingError(
                    f"messages[{j}] has {name!r}, which the chat template does not render "
                    "(the student would never see or learn it): remove it or use a template "
                    "that renders it"
                )


def _check_spans(turns: list[Turn]) -> None:
    """Each span ends before the next supervised turn's context does (which holds the
    messages between them). A span is the turn's own rendering, which holds no later
    message, so this holds by construction; it is checked, never assumed."""
    for a, b in itertools.pairwise(turns):
        if len(a.context) + len(a.text) > len(b.context):
            raise MaskingError(
                f"the supervised span of messages[{a.message}] runs past the start of "
                f"messages[{a.message + 1}]"
            )


def plan_sequences(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    template: str | None,
    end: EndOfTurn | None,
    history_rewrite: HistoryRewrite = "split",
) -> tuple[list[tuple[str, list[Turn]]], str]:
    """The training sequences of a conversation, as (text, supervised turns), and its
    one-sequence rendering (the only sequence unless the template rewrites history)."""
    turns = [
        rendered_turn(tokenizer, messages, i, template, end)
        for i, m in enumerate(messages)
        if m["role"] == "assistant"
    ]
    full = render(tokenizer, messages, template, False)
    fits = [full.startswith(t.context + t.text) for t in turns]
    if all(fits):
        _check_spans(turns)
        return [(full, turns)], full
    first = turns[fits.index(False)].message
    if history_rewrite == "error":
        raise MaskingError(
            f"the chat template renders messages[{first}] differently once later turns follow "
            "(history rewriting, e.g. reasoning dropped from earlier turns), so this "
            "conversation cannot be trained as one sequence; set "
            "training.history_rewrite=split to train one example per assistant turn"
        )
    own = [(t.context + t.text, [t]) for t, ok in zip(turns, fits, strict=True) if not ok]
    kept = [t for t, ok in zip(turns, fits, strict=True) if ok]
    return own + ([(full, kept)] if kept else []), full


def token_turns(
    tokenizer: Any, text: str, turns: list[Turn], anchors: tuple[tuple[str, int], ...] = ()
) -> list[int]:
    """Tokenize a sequence and set each turn's token range: it starts at the first token
    where the sequence's ids leave the ids of `tokenizer(context)` and ends after the ids
    of `tokenizer(text[:turn end])` (both located by `boundaries.prefix_ids`)."""
    ids: list[int] = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    starts = [len(t.context) for t in turns]
    ends = [s + len(t.text) for s, t in zip(starts, turns, strict=True)]
    located = prefix_ids(tokenizer, text, ids, starts + ends, anchors)
    for k, turn in enumerate(turns):
        j, tail = located[k]
        turn.start = j + common_prefix(tail, ids[j : j + len(tail)])
        j, tail = located[len(turns) + k]
        if ids[j : j + len(tail)] != tail:
            raise MaskingError(
                f"messages[{turn.message}]: the end-of-turn text merges into one token with "
                "the text after it, so the turn has no token boundary where it ends"
            )
        turn.end = j + len(tail)
    return ids


def _example(
    tokenizer: Any, text: str, turns: list[Turn], max_length: int, end: EndOfTurn | None
) -> Example:
    ids = token_turns(tokenizer, text, turns, end.anchors if end else ())
    labels = [IGNORE] * len(ids)
    for t in turns:
        labels[t.start : t.end] = ids[t.start : t.end]
    truncated = sum(1 for t in turns if t.end > max_length)
    length = len(ids)
    ids, labels = ids[:max_length], labels[:max_length]
    return Example(ids, labels, turns, truncated, sum(1 for x in labels if x != IGNORE), length)


def mask_conversation(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    template: str | None,
    end: EndOfTurn | None,
    max_length: int,
    history_rewrite: HistoryRewrite = "split",
) -> Masked:
    """A conversation's training sequences with assistant-only labels (see module doc)."""
    check_fields_rendered(tokenizer, messages, template)
    sequences, full = plan_sequences(tokenizer, messages, template, end, history_rewrite)
    examples = [_example(tokenizer, text, t, max_length, end) for text, t in sequences]
    if len(sequences) == 1 and sequences[0][0] == full:
        return Masked(examples)
    # split: the cost is the tokens beyond the one-sequence rendering
    whole = next((e.length for e, s in zip(examples, sequences, strict=True) if s[0] == full), 0)
    whole = whole or len(tokenizer(full, add_special_tokens=False)["input_ids"])
    return Masked(examples, True, sum(e.length for e in examples) - whole)
