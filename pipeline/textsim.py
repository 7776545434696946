"""Fast text similarity: ROUGE-L F-measure with a bit-parallel LCS.

Tokenisation follows `rouge_score` without stemming (lowercase, non-alphanumerics become
spaces), as Self-Instruct uses it. The LCS length is computed with Hyyrö's bit-vector
algorithm on Python integers: one pass over the second sequence with a few big-int
operations per token, instead of an O(n*m) table. The F-measure is then computed in
rouge-score's own float arithmetic, so a score that lands on a threshold compares the way
rouge-score's does (7 shared tokens of 10 and 10 give exactly 0.7; of 7 and 13,
0.7000000000000001; of 23 and 37 with 21 shared, 0.6999999999999998).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

RejectIf = Literal[">", ">="]
"""How a score is compared with a similarity threshold: Self-Instruct's code rejects `>`."""

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


def rouge_l_fmeasure(lcs: int, len_a: int, len_b: int) -> float:
    """ROUGE-L F1 from an LCS length, as `rouge_score` computes it (`_score_lcs`, `fmeasure`):
    precision and recall first, then 2*p*r/(p+r). Symmetric in the two lengths."""
    if lcs <= 0 or len_a <= 0 or len_b <= 0:
        return 0.0
    precision = lcs / len_b
    recall = lcs / len_a
    return 2 * precision * recall / (precision + recall)


def passes(score: float, threshold: float, reject_if: RejectIf) -> bool:
    """True when `score` reaches the threshold under the rule (`>` or `>=`)."""
    return score > threshold if reject_if == ">" else score >= threshold


def rouge_l_f(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 between two token lists (symmetric), equal to rouge-score's float."""
    if not a or not b:
        return 0.0
    return rouge_l_fmeasure(lcs_length(a, b), len(a), len(b))


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
        bound = rouge_l_fmeasure(min(lc, idx.length), lc, idx.length)
        if idx.length == 0 or bound < max(threshold, best):
            continue
        score = rouge_l_fmeasure(idx.lcs(candidate), lc, idx.length)
        if score > best:
            best, best_i = score, i
    return best, best_i


class RougePool:
    """A growing set of texts answering "is any member at ROUGE-L F1 >= threshold?" (or `>`,
    with reject_if=">"; scores in rouge-score's arithmetic) without scoring every member (prefix filtering, as in set-similarity joins such as PPJoin).

    F1 = 2L/(la+lb) >= t with L <= min(la, lb) gives L >= t*l/(2-t) for either length, so a
    matching pair shares at least need(l) = floor(t*l/(2-t)) tokens (as multisets). Under one
    global token order, two multisets sharing >= o tokens have intersecting prefixes of sizes
    la-o+1 and lb-o+1; prefixes of la-need(la)+1 and lb-need(lb)+1 are at least that long.
    So only members' prefixes are indexed, a query probes only its own prefix, and the few
    candidates are verified with the exact bit-parallel LCS: decisions equal scoring every
    member. The order puts frequent tokens last (short posting lists); it is recomputed from
    the pool's token frequencies whenever the pool doubles, and the index is rebuilt with it,
    so the order is fixed between rebuilds as the principle requires. Tokens unseen at the
    last rebuild sort first. need(l) is taken a hair low (a longer prefix) so that float
    rounding at an exact tie can never drop a candidate.
    """

    def __init__(self, threshold: float, reject_if: RejectIf = ">=") -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        if reject_if not in (">", ">="):
            raise ValueError("reject_if must be '>' or '>='")
        self.threshold = threshold
        self.reject_if: RejectIf = reject_if
        self.ratio = threshold / (2 - threshold)
        self.entries: list[LcsIndex] = []
        self.tokens: list[tuple[str, ...]] = []
        self.postings: dict[tuple[str, int], list[int]] = {}
        self.rank: dict[str, int] = {}  # token -> document frequency at the last rebuild
        self.df: dict[str, int] = {}
        self._next_rebuild = 256

    def _prefix(self, tokens: Sequence[str]) -> list[tuple[str, int]]:
        seen: dict[str, int] = {}
        elements = []
        for tok in tokens:
            seen[tok] = seen.get(tok, 0) + 1
            elements.append((tok, seen[tok]))
        rank = self.rank
        elements.sort(key=lambda e: (rank.get(e[0], -1), e))
        need = max(1, int(self.ratio * len(tokens) - 1e-9))  # floor: never too short
        return elements[: len(tokens) - need + 1]

    def candidates(self, tokens: Sequence[str]) -> set[int]:
        found: set[int] = set()
        postings = self.postings
        for element in self._prefix(tokens):
            hits = postings.get(element)
            if hits:
                found.update(hits)
        return found

    def best_match(self, tokens: Sequence[str]) -> tuple[float, int]:
        """(score, index) of the most similar member that passes the threshold (under
        `reject_if`), else (0.0, -1)."""
        if not tokens:
            return 0.0, -1
        best, best_i = 0.0, -1
        la = len(tokens)
        for i in sorted(self.candidates(tokens)):
            idx = self.entries[i]
            bound = rouge_l_fmeasure(min(la, idx.length), la, idx.length)
            if not passes(bound, self.threshold, self.reject_if):
                continue
            score = rouge_l_fmeasure(idx.lcs(tokens), la, idx.length)
            if passes(score, self.threshold, self.reject_if) and score > best:
                best, best_i = score, i
        return best, best_i

    def _index(self, i: int, tokens: Sequence[str]) -> None:
        for element in self._prefix(tokens):
            self.postings.setdefault(element, []).append(i)

    def _rebuild(self) -> None:
        self.rank = dict(self.df)
        self.postings = {}
        for i, tokens in enumerate(self.tokens):
            self._index(i, tokens)
        self._next_rebuild = 2 * len(self.tokens)

    def add(self, tokens: Sequence[str]) -> int:
        i = len(self.entries)
        self.entries.append(LcsIndex.of(tokens))
        self.tokens.append(tuple(tokens))
        for tok in set(tokens):
            self.df[tok] = self.df.get(tok, 0) + 1
        if len(self.tokens) >= self._next_rebuild:
            self._rebuild()
        else:
            self._index(i, tokens)
        return i

    def __len__(self) -> int:
        return len(self.entries)
