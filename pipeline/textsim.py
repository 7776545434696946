"""Fast text similarity: ROUGE-L F-measure with a bit-parallel LCS.

Tokenisation follows `rouge_score` without stemming (lowercase, non-alphanumerics become
spaces), as Self-Instruct uses it. The LCS length is computed with Hyyrö's bit-vector
algorithm on Python integers: one pass over the second sequence with a few big-int
operations per token, instead of an O(n*m) table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    return _NON_ALNUM.sub(" ", text.lower()).split()


@dataclass(frozen=True)
class LcsIndex:
    """Precomputed match masks of one token sequence, reused across many comparisons."""

    length: int
    masks: dict[str, int]

    @classmethod
    def of(cls, tokens: Sequence[str]) -> LcsIndex:
        masks: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            masks[tok] = masks.get(tok, 0) | (1 << i)
        return cls(len(tokens), masks)

    def lcs(self, other: Sequence[str]) -> int:
        if self.length == 0 or not other:
            return 0
        full = (1 << self.length) - 1
        v = full
        masks = self.masks
        for tok in other:
            m = masks.get(tok)
            if m:
                u = v & m
                v = ((v + u) | (v - u)) & full
        return self.length - v.bit_count()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    return LcsIndex.of(a).lcs(b)


def rouge_l_f(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 between two token lists (symmetric)."""
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    return 2.0 * lcs / (len(a) + len(b))


def max_rouge_l(
    candidate: Sequence[str], pool: Sequence[LcsIndex], threshold: float = 0.0
) -> tuple[float, int]:
    """Best ROUGE-L F1 of `candidate` against `pool` and its index (-1 when the pool is empty).

    Pairs whose lengths alone make F1 >= threshold impossible are skipped
    (F1 = 2*lcs/(la+lb) and lcs <= min(la, lb)); pass threshold=0 for the exact maximum.
    """
    best, best_i = 0.0, -1
    lc = len(candidate)
    if lc == 0:
        return 0.0, -1
    for i, idx in enumerate(pool):
        total = lc + idx.length
        if idx.length == 0 or 2.0 * min(lc, idx.length) / total < max(threshold, best):
            continue
        score = 2.0 * idx.lcs(candidate) / total
        if score > best:
            best, best_i = score, i
    return best, best_i
