"""Where character positions fall in a tokenized sequence, without character offsets.

Offsets cannot be trusted (tokenizers with `trim_offsets=True` give all-space tokens zero
width), so a position p is located by what the tokenizer does with `text[:p]`: its ids,
compared with the sequence's. Tokenizing every prefix would cost a full tokenization per
boundary; instead this uses the way tokenizers work - text is split at added tokens first
and each piece between them is tokenized on its own - so the ids of `text[:p]` are the
sequence's ids up to the last *anchor* (an added token of the template) before p, followed
by the ids of the short piece between that anchor and p. An anchor is only used when the
sequence holds as many of its ids as the text holds copies of it (otherwise - an added
token that strips whitespace or is normalised away - the whole prefix is tokenized).
"""

from __future__ import annotations

from typing import Any


def template_anchors(tokenizer: Any, rendered: str) -> tuple[tuple[str, int], ...]:
    """Added tokens that appear in `rendered` (a probe rendering of the template) and are
    not part of a longer added token, as (text, id) - or none when, on `rendered` followed
    by text after each anchor (the probe may end with one, or have only another anchor after
    it), the pieces between them do not tokenize as they do in place (a sentencepiece
    pre-tokenizer that marks only the text's first word, `prepend_scheme="first"`, does not)."""
    added = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.content}
    anchors = tuple(
        (s, i)
        for s, i in sorted(added.items())
        if s in rendered and not any(s != o and s in o for o in added)
    )
    text = rendered + "".join(f"{a}Probe {a} probe.\n{a}\nProbe. " for a, _ in anchors)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    positions = list(range(len(text) + 1))
    whole = tokenizer([text[:p] for p in positions], add_special_tokens=False)["input_ids"]
    located = prefix_ids(tokenizer, text, ids, positions, anchors)
    if any(ids[:j] + tail != w for (j, tail), w in zip(located, whole, strict=True)):
        return ()
    return anchors


def _after_kth(ids: list[int], token: int, k: int) -> int:
    """One past the k-th (1-based) occurrence of `token` in ids."""
    at = -1
    for _ in range(k):
        at = ids.index(token, at + 1)
    return at + 1


def prefix_ids(
    tokenizer: Any,
    text: str,
    ids: list[int],
    positions: list[int],
    anchors: tuple[tuple[str, int], ...],
) -> list[tuple[int, list[int]]]:
    """For each position p, (j, tail) with tokenizer(text[:p]) == ids[:j] + tail."""
    usable = [(a, i) for a, i in anchors if ids.count(i) == text.count(a)]
    cuts = []
    for p in positions:
        cut, anchor = 0, None
        for a, i in usable:
            found = text.rfind(a, 0, p)
            if found >= 0 and found + len(a) > cut:
                cut, anchor = found + len(a), (a, i)
        j = _after_kth(ids, anchor[1], text.count(anchor[0], 0, cut)) if anchor else 0
        cuts.append((j, cut))
    pieces = [text[cut:p] for (_, cut), p in zip(cuts, positions, strict=True)]
    tails = tokenizer(pieces, add_special_tokens=False)["input_ids"] if pieces else []
    return [(j, list(tail)) for (j, _), tail in zip(cuts, tails, strict=True)]


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n
