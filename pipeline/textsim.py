"""Fast text similarity: ROUGE-L F-measure with a bit-parallel LCS.

Tokenisation follows `rouge_score` without stemming (lowercase, non-alphanumerics become
spaces), as Self-Instruct uses it. The LCS length is computed with Hyyrö's bit-vector
algorithm on Python integers: one pass over the second sequence with a few big-int
operations per token, instead of an O(n*m) table (`RougePool` uses rapidfuzz's C++ LCS for
whole candidate lists when it is installed: the same lengths). The F-measure is then computed in
rouge-score's own float arithmetic, so a score that lands on a threshold compares the way
rouge-score's does (7 shared tokens of 10 and 10 give exactly 0.7; of 7 and 13,
0.7000000000000001; of 23 and 37 with 21 shared, 0.6999999999999998).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal

import numpy as np

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
    with reject_if=">"; scores in rouge-score's arithmetic) without scoring every member
    (prefix filtering, as in set-similarity joins such as PPJoin).

    F1 = 2L/(la+lb) >= t with L <= min(la, lb) gives L >= t*l/(2-t) for either length, so a
    matching pair shares at least need(l) = floor(t*l/(2-t)) tokens (as multisets). Under one
    global token order, two multisets sharing >= o tokens have intersecting prefixes of sizes
    la-o+1 and lb-o+1; prefixes of la-need(la)+1 and lb-need(lb)+1 are at least that long.
    So only members' prefixes are indexed, a query probes only its own prefix, and the
    candidates are verified with an exact LCS: decisions equal scoring every member. The
    order puts frequent tokens last (short posting lists); it is recomputed from the pool's
    token frequencies whenever the pool doubles, and the index is rebuilt with it, so the
    order is fixed between rebuilds as the principle requires. Tokens unseen at the last
    rebuild sort first. need(l) is taken a hair low (a longer prefix) so that float rounding
    at an exact tie can never drop a candidate.

    Each posting records the member's length and the element's position in its prefix, so
    a probe keeps only members that pass the length and positional bounds (`candidates`).
    The survivors' LCS lengths come from one call of rapidfuzz's `cdist` (`LCSseq` on
    strings with one character per distinct token; exact) when rapidfuzz is installed, else
    from the bit-parallel `LcsIndex`; only pairs with 2L >= t(la+lb) (minus a hair) get
    rouge-score's float F1 and the operator.
    """

    def __init__(self, threshold: float, reject_if: RejectIf = ">=", fast: bool = True) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        if reject_if not in (">", ">="):
            raise ValueError("reject_if must be '>' or '>='")
        self.threshold = threshold
        self.reject_if: RejectIf = reject_if
        self.ratio = threshold / (2 - threshold)
        self.tokens: list[tuple[str, ...]] = []
        # element -> flat (member, length << 32 | position in its prefix) pairs
        self.postings: dict[tuple[str, int], array[int]] = {}
        self.rank: dict[str, int] = {}  # token -> document frequency at the last rebuild
        self.df: dict[str, int] = {}
        self._next_rebuild = 256
        self._lengths = np.zeros(256, np.int64)
        self._cdist = _rapidfuzz_lcs() if fast else None
        self._last: tuple[tuple[str, ...], list[tuple[str, int]]] | None = None
        self._vocab: dict[str, str] = {}
        self._ids: list[str] = []  # members as strings of token codes (rapidfuzz path)
        self._masks: list[LcsIndex] = []  # members' LCS masks (fallback path)

    def _prefix(self, tokens: Sequence[str]) -> list[tuple[str, int]]:
        key = tuple(tokens)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        seen: dict[str, int] = {}
        rank = self.rank
        elements = []
        for tok in tokens:
            seen[tok] = occurrence = seen.get(tok, 0) + 1
            elements.append((rank.get(tok, -1), tok, occurrence))
        elements.sort()
        need = max(1, int(self.ratio * len(tokens) - 1e-9))  # floor: never too short
        prefix = [(tok, occurrence) for _, tok, occurrence in elements[: len(tokens) - need + 1]]
        self._last = (key, prefix)
        return prefix

    def candidates(self, tokens: Sequence[str]) -> np.ndarray:
        """Members (ascending) sharing a prefix element with `tokens` where the length and
        positional bounds allow a match. If that element is the pair's first common one (at
        positions i and j of the two ordered prefixes), their multiset overlap, which bounds
        the LCS, is at most 1 + min(la-i-1, lb-j-1); F1 >= t needs LCS >= t(la+lb)/2. A
        qualifying pair's first common element is in both prefixes and passes, so no
        qualifying member is missed."""
        postings = self.postings
        parts, at = [], []
        for position, element in enumerate(self._prefix(tokens)):
            entries = postings.get(element)
            if entries:
                parts.append(np.frombuffer(entries, np.int64))
                at.append(position)
        if not parts:
            return np.zeros(0, np.int64)
        flat = np.concatenate(parts)
        member, packed = flat[0::2], flat[1::2]
        i = np.repeat(np.array(at, np.int64), [len(p) // 2 for p in parts])
        lb, j = packed >> 32, packed & 0xFFFFFFFF
        la, t = len(tokens), self.threshold
        bound = 1 + np.minimum(la - i - 1, lb - j - 1)
        keep = bound >= t * (la + lb) / 2 - 1e-9
        found = np.sort(member[keep])
        if len(found) > 1:
            found = found[np.concatenate(([True], found[1:] != found[:-1]))]
        return found

    def _lcs(self, tokens: Sequence[str], members: np.ndarray) -> np.ndarray:
        """LCS length of `tokens` with each member (exact)."""
        if self._cdist is not None:
            vocab = self._vocab
            query = "".join([vocab.get(t, "\0") for t in tokens])  # "\0": in no member
            ids = self._ids
            chosen = itemgetter(*members.tolist())(ids) if len(members) > 1 else [ids[members[0]]]
            return self._cdist([query], list(chosen))[0]
        masks = self._masks
        return np.array([masks[m].lcs(tokens) for m in members.tolist()], np.int64)

    def best_match(self, tokens: Sequence[str]) -> tuple[float, int]:
        """(score, index) of the most similar member that passes the threshold (under
        `reject_if`; the lowest index among equal scores), else (0.0, -1)."""
        if not tokens:
            return 0.0, -1
        members = self.candidates(tokens)
        la, t = len(tokens), self.threshold
        lb = self._lengths[members]
        fits = 2 * np.minimum(la, lb) >= t * (la + lb) - 1e-9  # L <= min(la, lb)
        members, lb = members[fits], lb[fits]
        if not len(members):
            return 0.0, -1
        lcs = self._lcs(tokens, members)
        near = np.flatnonzero(2 * lcs >= t * (la + lb) - 1e-9)  # F1 = 2L/(la+lb), in reals
        best, best_i = 0.0, -1
        for k in near.tolist():
            score = rouge_l_fmeasure(int(lcs[k]), la, int(lb[k]))
            if passes(score, t, self.reject_if) and score > best:
                best, best_i = score, int(members[k])
        return best, best_i

    def _index(self, i: int, tokens: Sequence[str]) -> None:
        packed = len(tokens) << 32
        postings = self.postings
        for j, element in enumerate(self._prefix(tokens)):
            entries = postings.get(element)
            if entries is None:
                postings[element] = entries = array("q")
            entries.append(i)
            entries.append(packed | j)

    def _rebuild(self) -> None:
        self._last = None
        self.rank = dict(self.df)
        self.postings = {}
        for i, tokens in enumerate(self.tokens):
            self._index(i, tokens)
        self._next_rebuild = 2 * len(self.tokens)

    def add(self, tokens: Sequence[str]) -> int:
        i = len(self.tokens)
        if i == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros(i, np.int64)])
        self._lengths[i] = len(tokens)
        if self._cdist is not None and len(self._vocab) + len(tokens) >= _MAX_CODES:
            self._cdist = None  # more distinct tokens than characters: the fallback path
            self._masks = [LcsIndex.of(member) for member in self.tokens]
        if self._cdist is not None:
            vocab = self._vocab
            for t in tokens:
                if t not in vocab:
                    vocab[t] = _code_char(len(vocab))
            self._ids.append("".join([vocab[t] for t in tokens]))
        else:
            self._masks.append(LcsIndex.of(tokens))
        self.tokens.append(tuple(tokens))
        for tok in set(tokens):
            self.df[tok] = self.df.get(tok, 0) + 1
        if len(self.tokens) >= self._next_rebuild:
            self._rebuild()
        else:
            self._index(i, tokens)
        return i

    def __len__(self) -> int:
        return len(self.tokens)


_MAX_CODES = 0x10FFFF - 0x800 - 1


def _code_char(i: int) -> str:
    """A distinct character per token id, skipping NUL (unknown) and the surrogates."""
    i += 1
    return chr(i + 0x800 if i >= 0xD800 else i)


def _rapidfuzz_lcs() -> Callable[[list[str], list[str]], np.ndarray] | None:
    """rapidfuzz's batched LCS length (C++, one thread), or None when it is not installed."""
    try:
        from rapidfuzz import process
        from rapidfuzz.distance import LCSseq
    except ImportError:
        return None

    def lcs(queries: list[str], choices: list[str]) -> np.ndarray:
        return process.cdist(queries, choices, scorer=LCSseq.similarity, dtype=np.int64, workers=1)

    return lcs
