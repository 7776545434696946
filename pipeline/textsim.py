"""Fast text similarity: ROUGE-L F-measure with a bit-parallel LCS.

Tokenisation follows `rouge_score` without stemming (lowercase, non-alphanumerics become
spaces), as Self-Instruct uses it. The LCS length is computed with Hyyrö's bit-vector
algorithm on Python integers: one pass over the second sequence with a few big-int
operations per token, instead of an O(n*m) table.
"""

from __future__ import annotations

import re
import zlib
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


# Tokens so common in instructions that they make poor index keys. They go last in the global
# token order, so prefixes (below) are made of rarer tokens. Any fixed order is correct; this
# one only makes the index fast.
_COMMON = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "and",
    "in",
    "for",
    "is",
    "on",
    "with",
    "that",
    "this",
    "it",
    "be",
    "as",
    "are",
    "by",
    "or",
    "from",
    "at",
    "your",
    "you",
    "what",
    "how",
    "write",
    "give",
    "explain",
    "describe",
    "list",
    "create",
    "make",
    "following",
    "given",
    "use",
    "using",
    "each",
    "into",
    "about",
    "which",
    "can",
    "should",
    "do",
    "not",
    "i",
    "me",
    "my",
    "we",
    "our",
    "their",
    "they",
    "them",
    "its",
    "if",
    "than",
    "then",
    "there",
    "these",
    "those",
    "one",
    "two",
    "three",
    "text",
    "sentence",
    "word",
    "words",
    "paragraph",
    "example",
    "examples",
    "input",
    "output",
    "task",
]
_COMMON_RANK = {tok: i for i, tok in enumerate(reversed(_COMMON))}


def _order_key(element: tuple[str, int]) -> tuple[int, int, str, int]:
    tok, k = element
    rank = _COMMON_RANK.get(tok)
    return (1, rank, tok, k) if rank is not None else (0, zlib.crc32(tok.encode()), tok, k)


class RougePool:
    """A growing set of texts answering "is any member at ROUGE-L F1 >= threshold?" without
    scoring every member.

    Prefix filtering (as in set-similarity joins): F1 = 2L/(la+lb) >= t with L <= lb gives
    L >= t*la/(2-t), so a matching pair shares at least that many tokens (as a multiset),
    and under any fixed global token order the first la - ceil(...) + 1 tokens of one and
    the corresponding prefix of the other must intersect. Only prefixes are indexed and
    probed; the few candidates found are verified with the exact bit-parallel LCS, so the
    decisions equal those of scoring against every member. The bound uses a floor, so
    prefixes are at least as long as needed.
    """

    def __init__(self, threshold: float) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.ratio = threshold / (2 - threshold)
        self.entries: list[LcsIndex] = []
        self.postings: dict[tuple[str, int], list[int]] = {}

    def _prefix(self, tokens: Sequence[str]) -> list[tuple[str, int]]:
        seen: dict[str, int] = {}
        elements = []
        for tok in tokens:
            seen[tok] = seen.get(tok, 0) + 1
            elements.append((tok, seen[tok]))
        elements.sort(key=_order_key)
        need = max(1, int(self.ratio * len(tokens)))  # floor: never shorter than required
        return elements[: len(tokens) - need + 1]

    def candidates(self, tokens: Sequence[str]) -> set[int]:
        found: set[int] = set()
        for element in self._prefix(tokens):
            found.update(self.postings.get(element, ()))
        return found

    def best_match(self, tokens: Sequence[str]) -> tuple[float, int]:
        """(score, index) of the most similar member at or above the threshold, else (0.0, -1)."""
        if not tokens:
            return 0.0, -1
        best, best_i = 0.0, -1
        la = len(tokens)
        for i in sorted(self.candidates(tokens)):
            idx = self.entries[i]
            if 2.0 * min(la, idx.length) / (la + idx.length) < self.threshold:
                continue
            score = 2.0 * idx.lcs(tokens) / (la + idx.length)
            if score >= self.threshold and score > best:
                best, best_i = score, i
        return best, best_i

    def add(self, tokens: Sequence[str]) -> int:
        i = len(self.entries)
        self.entries.append(LcsIndex.of(tokens))
        if tokens:
            for element in self._prefix(tokens):
                self.postings.setdefault(element, []).append(i)
        return i

    def __len__(self) -> int:
        return len(self.entries)
