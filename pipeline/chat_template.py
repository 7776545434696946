"""What a model's own chat template says about its turns, derived by rendering, never
written per family: Magpie's pre-query text and where a user or assistant turn ends.

- `pre_query(tokenizer, history, system)`: the text a model sees just before a user
  message would begin - the conversation so far (and the system prompt) rendered with a
  sentinel user message, cut at the sentinel. An aligned model continued from there writes
  a plausible user message (Magpie, Xu et al. 2024).
- `user_turn_end(tokenizer)`: the text that closes a user message (ChatML's `<|im_end|>`,
  Mistral's `[/INST]`): where a generated user message stops - the first turn marker
  (`turn_markers`: an added token, special or not) after it, or its first piece of text.
- `assistant_turn_end(tokenizer)`: the same for an assistant turn, from a probe turn: the
  text after the answer up to and including the first special token (training's masking
  derives the supervised end-of-turn text the same way).

A template that writes no text before a user message (nothing to continue from) is a
`ChatTemplateError`. Neutral: imports no stage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SENTINEL = "DistillerySentinelUserMessage"
PROBE_USER = "Probe question from distillery."
PROBE_ANSWER = "Probe answer from distillery."


class ChatTemplateError(ValueError):
    """The chat template cannot give what was asked (one line, for a `UserError`)."""


# Llama 3.2/3.3's templates stamp today's date into the system turn (`date_string`, else
# `strftime_now`): fixed to Llama's own fallback, so a pre-query text - and the journal and
# cache keys of every draw made from it - do not change at midnight. (transformers passes
# template variables as plain data: a template that calls `strftime_now` itself still sees
# today.)
FIXED_DATE_STRING = "26 Jul 2024"


def render(tokenizer: Any, messages: list[dict[str, str]], gen: bool = False) -> str:
    """The tokenizer's chat template applied to `messages` (as text), on `FIXED_DATE_STRING`."""
    try:
        return str(
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=gen,
                date_string=FIXED_DATE_STRING,
            )
        )  # fmt: skip
    except Exception as exc:  # jinja errors, template exceptions (raise_exception)
        why = " ".join(str(exc).split())
        raise ChatTemplateError(f"the chat template does not render: {why}") from None


def template_sha256(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's chat template source (a named set of templates: as JSON)."""
    source = tokenizer.chat_template
    if source is None:
        raise ChatTemplateError("the tokenizer has no chat template")
    text = source if isinstance(source, str) else json.dumps(source, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def special_tokens(tokenizer: Any) -> list[str]:
    """The tokenizer's special tokens (those generation can stop on), longest first."""
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return sorted({*tokenizer.all_special_tokens, *added}, key=len, reverse=True)


def _with_system(history: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + list(history)


def pre_query(tokenizer: Any, history: list[dict[str, str]], system: str | None = None) -> str:
    """The text before the next user message: `history` (alternating user and assistant
    turns, ending with an assistant turn or empty), after the system prompt when given,
    rendered with a sentinel user message and cut where the sentinel starts."""
    messages = _with_system(history, system)
    whole = render(tokenizer, [*messages, {"role": "user", "content": SENTINEL}])
    at = whole.find(SENTINEL)
    if at < 0:
        raise ChatTemplateError("the chat template does not render a user message's text")
    text = whole[:at]
    try:
        before = render(tokenizer, messages) if messages else ""
    except ChatTemplateError:
        before = ""  # a template that cannot render an empty or system-only conversation
    opening = text[len(before) :] if text.startswith(before) else text
    if not opening.strip() or opening.strip() in {tokenizer.bos_token, system}:
        raise ChatTemplateError(
            f"the chat template has no user-turn opening: it writes {opening!r} before a "
            "user message, nothing that tells the model a user turn begins"
        )
    return text


def turn_markers(tokenizer: Any) -> list[str]:
    """The special tokens and the other added tokens with no whitespace in them: a template's
    turn markers, marked special or not (DeepSeek-R1's `<｜Assistant｜>` is not)."""
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if not t.special]
    plain = [t for t in added if t and not any(c.isspace() for c in t)]
    return sorted({*special_tokens(tokenizer), *plain}, key=len, reverse=True)


def _first_stop(tail: str, markers: list[str]) -> str:
    """The first turn marker in `tail`, or its first whitespace-delimited piece."""
    found = [(tail.find(s), -len(s), s) for s in markers if s in tail]
    if found:
        return min(found)[2]
    pieces = tail.split()
    if not pieces:
        raise ChatTemplateError(f"the chat template ends a turn with {tail!r}: nothing to stop on")
    return pieces[0]


def user_turn_end(tokenizer: Any, system: str | None = None) -> str:
    """The text that closes a user message: the first turn marker after it in the
    rendering with the generation prompt (or, with none, the first piece of text there)."""
    messages = _with_system([{"role": "user", "content": SENTINEL}], system)
    whole = render(tokenizer, messages, gen=True)
    tail = whole[whole.find(SENTINEL) + len(SENTINEL) :]
    return _first_stop(tail, turn_markers(tokenizer))


def assistant_turn_end(tokenizer: Any) -> str:
    """The text that closes an assistant turn, from a probe turn: the first turn marker
    after the answer (or, with none, the first piece of text there)."""
    probe = [
        {"role": "user", "content": PROBE_USER},
        {"role": "assistant", "content": PROBE_ANSWER},
    ]
    try:
        whole = render(tokenizer, probe)
    except ChatTemplateError:  # a template that needs a system message
        whole = render(tokenizer, _with_system(probe, "Probe system."))
    at = whole.rfind(PROBE_ANSWER)
    return _first_stop(whole[at + len(PROBE_ANSWER) :], turn_markers(tokenizer))
