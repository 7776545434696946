"""The signal check: every prepared example is checked against inference before training.

For each supervised turn of an `Example` (from `masking.mask_conversation`):
- the labels are -100 everywhere but on the turns' token ranges, and equal `input_ids` there;
- the ids before the turn are the ids the tokenizer gives its inference-time prompt,
  `tokenizer(apply_chat_template(history, add_generation_prompt=True))`, except in the
  boundary-merge case: the prompt's last token(s) may merge with the answer's first
  characters into a token the sequence has instead; that token is supervised, and the
  merged prompt tokens must decode to exactly the prompt text it covers;
- the supervised ids decode to exactly the turn's text (the answer as the template renders
  it - with reasoning and tool calls - and its end-of-turn text), preceded by the merged
  prompt text in the boundary-merge case. A turn cut by max_length is checked up to the cut.

When the template marks assistant text with `{% generation %}`, transformers' assistant
mask must equal the derived labels too. The first failure is raised as a `SignalError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from distillery.training.masking import IGNORE, Example, one_line

GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


class SignalError(ValueError):
    """A prepared example would train on something other than what inference produces."""


@dataclass
class SignalCounts:
    """What the check saw; lands in PrepStats (and metrics.json)."""

    turns: int = 0  # supervised turns checked
    boundary_merges: int = 0  # turns whose first supervised token merges prompt text
    generation_marked: int = 0  # sequences also checked against {% generation %} masks


def decode_tail(tokenizer: Any, ids: list[int], a: int, b: int, want: str | None) -> str:
    """The text of ids[a:b]; unless it is `want`, as it reads after ids[:a]
    (decoders that drop a leading space at the start of a text - sentencepiece's - would
    otherwise change it)."""
    kw = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    alone = str(tokenizer.decode(ids[a:b], **kw))
    if alone == want or a == 0:
        return alone
    head, whole = str(tokenizer.decode(ids[:a], **kw)), str(tokenizer.decode(ids[:b], **kw))
    return whole[len(head) :] if whole.startswith(head) else alone


def _check_labels(ex: Example) -> None:
    want = [IGNORE] * len(ex.input_ids)
    for t in ex.turns:
        want[t.start : t.end] = ex.input_ids[t.start : t.end]
    if ex.labels != want:
        k = next(k for k, (a, b) in enumerate(zip(ex.labels, want, strict=True)) if a != b)
        raise SignalError(f"label {k} is {ex.labels[k]}, not {want[k]} (supervised only on turns)")


def check_example(tokenizer: Any, ex: Example, counts: SignalCounts) -> None:
    """Check one prepared example (see module doc); raise SignalError on the first fault."""
    _check_labels(ex)
    ids, n = ex.input_ids, len(ex.input_ids)
    prompts = tokenizer([t.context for t in ex.turns], add_special_tokens=False)["input_ids"]
    for t, ctx in zip(ex.turns, prompts, strict=True):
        if t.start > len(ctx) and ids[: len(ctx)] == ctx:
            skipped = decode_tail(tokenizer, ids, len(ctx), min(t.start, n), None)
            raise SignalError(
                f"messages[{t.message}]: the tokens before the answer are not the tokens of its "
                f"inference-time prompt: {t.start - len(ctx)} token(s) after that prompt "
                f"({skipped[:80]!r}) are not supervised, though the model writes them"
            )
        if t.start > len(ctx) or ids[: min(t.start, n)] != ctx[: min(t.start, n)]:
            raise SignalError(
                f"messages[{t.message}]: the tokens before the answer are not the tokens of "
                "its inference-time prompt"
            )
        if t.start >= n:
            continue
        counts.turns += 1
        merged = ""
        if t.start < len(ctx):
            if ids[t.start] == ctx[t.start]:
                raise SignalError(
                    f"messages[{t.message}]: supervision starts inside the inference-time "
                    "prompt (on a token the prompt has too)"
                )
            counts.boundary_merges += 1
            merged = decode_tail(tokenizer, ctx, t.start, len(ctx), None)
            if not merged or not t.context.endswith(merged):
                raise SignalError(
                    f"messages[{t.message}]: the prompt's last tokens, merged into the "
                    f"answer's first token, decode to {merged!r}, not the end of the prompt"
                )
        want = merged + t.text
        got = decode_tail(tokenizer, ids, t.start, min(t.end, n), want)
        if got != want and not (t.end > n and want.startswith(got.rstrip("\ufffd"))):
            k = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
            k = min(len(got), len(want)) if k is None else k
            lo = max(0, k - 30)
            raise SignalError(
                f"messages[{t.message}]: the supervised tokens decode to {got[lo : k + 50]!r}, "
                f"not the turn the model must write at inference {want[lo : k + 50]!r} "
                f"(from character {lo}; they differ at character {k})"
            )


def has_generation_markers(tokenizer: Any, template: str | None) -> bool:
    """Whether the template has a `{% generation %}` block (transformers' assistant mask);
    of a tokenizer's named templates, the one used without tools ("default")."""
    source = template if template is not None else tokenizer.chat_template
    if isinstance(source, dict):
        source = source.get("default")
    return isinstance(source, str) and GENERATION_TAG.search(source) is not None


def check_generation_markers(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    template: str | None,
    ex: Example,
    counts: SignalCounts,
) -> None:
    """The template's own `{% generation %}` assistant mask must agree with the labels of
    the sequence (rendered from the conversation up to its last supervised turn). When a
    history-rewriting conversation was split, the sequence holds assistant turns trained in
    their own examples: as many marked runs as there are such turns, with no supervised
    token in them, are theirs and not compared."""
    last = ex.turns[-1].message
    rendered = messages[: last + 1] if len(ex.turns) == 1 else messages
    supervised = {t.message for t in ex.turns}
    others = sum(m["role"] == "assistant" and i not in supervised for i, m in enumerate(rendered))
    try:
        out = tokenizer.apply_chat_template(
            rendered,
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
    except Exception as exc:
        raise SignalError(
            f"the template's generation markers cannot be read: {one_line(exc)}"
        ) from None
    mask = list(out["assistant_masks"])
    n = min(len(mask), len(ex.input_ids))
    if list(out["input_ids"][:n]) != ex.input_ids[:n]:
        raise SignalError("the {% generation %} rendering tokenizes differently from the sequence")
    derived = [int(x != IGNORE) for x in ex.labels[:n]]
    mask = _without_runs_of_others(mask[:n], derived, others)
    if mask != derived:
        k = next(k for k in range(n) if mask[k] != derived[k])
        raise SignalError(
            f"the template's {{% generation %}} markers and the derived supervision disagree "
            f"at token {k} ({tokenizer.decode(ex.input_ids[k : k + 1])!r}: marked {mask[k]}, "
            f"derived {derived[k]})"
        )
    counts.generation_marked += 1


def _without_runs_of_others(mask: list[int], derived: list[int], others: int) -> list[int]:
    """`mask` with up to `others` marked runs that hold no supervised token cleared (the
    runs of assistant turns this sequence does not supervise); any more stay, and fail."""
    out, k = list(mask), 0
    while k < len(out) and others:
        if not out[k]:
            k += 1
            continue
        j = k
        while j < len(out) and out[j]:
            j += 1
        if not any(derived[k:j]):
            out[k:j] = [0] * (j - k)
            others -= 1
        k = j
    return out
