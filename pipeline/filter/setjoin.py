"""Exact Jaccard self-join of word-shingle sets, vectorised with numpy.

Flow: texts -> normalised words -> integer word ids (pandas' hash factorisation) -> k-word
shingle ids (exact: built by re-factorising id tuples, no hashing, so no collisions) -> one
sorted array of distinct shingle ids per row (CSR: `indptr`, `tokens`) -> candidate pairs by
prefix filtering -> exact Jaccard of each candidate.

Prefix filtering (AllPairs / PPJoin): shingles are renumbered by a global order, rarest
first. If J(x, y) >= t then |x & y| >= t * max(|x|, |y|), so the first |x| - ceil(t|x|) + 1
shingles of x and the first |y| - ceil(t|y|) + 1 of y share at least one shingle: every pair
at or above the threshold is proposed (recall 1.0 by construction, not by probability). A
proposed pair is then pruned only by bounds that no qualifying pair can fail: the length
filter (|y| >= t|x|) and the positional filter (a pair whose first common shingle sits at
positions i, j can share at most 1 + min(|x|-i-1, |y|-j-1) shingles, and J >= t needs
t(|x|+|y|)/(1+t)). Bounds keep a 1e-9 slack so float rounding never prunes a tie. The
survivors are verified with the same float expression as before, inter / (|x|+|y|-inter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from distillery.filter.dedup import normalise

_SLACK = 1e-9


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique for int64 by sorting (numpy's hash-based unique is slower here)."""
    out = np.sort(values)
    if len(out) > 1:
        out = out[np.concatenate(([True], out[1:] != out[:-1]))]
    return out


@dataclass
class ShingleSets:
    """Row r's distinct shingles are tokens[indptr[r]:indptr[r+1]], ascending (rarest first)."""

    indptr: np.ndarray  # int64, n + 1
    tokens: np.ndarray  # int64, ranks in the global order (0 = rarest)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.indptr)

    def __len__(self) -> int:
        return len(self.indptr) - 1


def _word_ids(norm: list[str]) -> tuple[np.ndarray, int]:
    """Every word of the normalised rows, in order, as ids in a vocabulary (pyarrow's hash
    dictionary; words are compared as strings, so ids are exact)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    big = " ".join(t for t in norm if t)
    if not big:
        return np.zeros(0, np.int64), 0
    words = pc.list_flatten(pc.split_pattern(pa.array([big], pa.large_string()), " "))
    encoded = pc.dictionary_encode(words)
    return encoded.indices.to_numpy().astype(np.int64), len(encoded.dictionary)


def _dense(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, ids): a stable sort of keys and each sorted key's dense id (0, 1, ...)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    new = np.ones(len(keys), bool)
    new[1:] = ordered[1:] != ordered[:-1]
    return order, np.cumsum(new) - 1


def _gram_keys(codes: np.ndarray, vocab: int, lens: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """(row, key) of every k-word shingle; a row of 1..k-1 words is one shingle padded with
    the id `vocab`. Keys are exact: base-(vocab+1) numbers, re-densified before overflow."""
    n = len(lens)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    grams = np.maximum(lens - k + 1, (lens > 0).astype(np.int64))
    row = np.repeat(np.arange(n, dtype=np.int64), grams)
    gram_start = np.repeat(starts - np.concatenate(([0], np.cumsum(grams)[:-1])), grams)
    gram_start += np.arange(len(row), dtype=np.int64)
    offset = gram_start - starts[row]
    key = codes[gram_start] if len(row) else np.zeros(0, np.int64)
    size = vocab
    for i in range(1, k):
        if (size + 1) * (vocab + 1) >= 2**62:  # re-densify the keys so far
            order, ids = _dense(key)
            key = np.empty_like(key)
            key[order] = ids
            size = int(ids[-1]) + 1 if len(ids) else 0
        inside = offset + i < lens[row]
        nxt = np.where(inside, codes[np.minimum(gram_start + i, max(len(codes) - 1, 0))], vocab)
        key = key * (vocab + 1) + nxt
        size = (size + 1) * (vocab + 1)
    return row, key


def shingle_sets(texts: Sequence[str], k: int) -> ShingleSets:
    """Distinct k-word shingles per row, as `dedup.shingles` defines them (a row of 1..k
    words is one shingle, an empty row has none), renumbered rarest first."""
    if not texts:
        return ShingleSets(np.zeros(1, np.int64), np.zeros(0, np.int64))
    norm = [normalise(t) for t in texts]
    lens = np.fromiter((t.count(" ") + 1 if t else 0 for t in norm), np.int64, len(norm))
    codes, vocab = _word_ids(norm)
    del norm  # the strings are no longer needed: free them before the integer work
    row, key = _gram_keys(codes, vocab, lens, k)
    order, shingle = _dense(key)  # rows ascend within a key (stable sort)
    row = row[order]
    keep = np.ones(len(row), bool)
    keep[1:] = (shingle[1:] != shingle[:-1]) | (row[1:] != row[:-1])  # distinct per row
    row, shingle = row[keep], shingle[keep]
    n_shingles = int(shingle[-1]) + 1 if len(shingle) else 0
    df = np.minimum(np.bincount(shingle, minlength=n_shingles), 65535).astype(np.uint16)
    rank = np.empty(n_shingles, np.int64)
    rank[np.argsort(df, kind="stable")] = np.arange(n_shingles)  # rarest first, then key
    flat = np.sort(row * max(n_shingles, 1) + rank[shingle])
    row, tokens = np.divmod(flat, max(n_shingles, 1))
    indptr = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=len(texts)), out=indptr[1:])
    return ShingleSets(indptr, tokens)


def _prefix_len(sizes: np.ndarray, overlap_ratio: float) -> np.ndarray:
    """|x| - ceil(ratio * |x|) + 1 for non-empty rows (ratio taken a hair low: longer)."""
    need = np.ceil(overlap_ratio * sizes - _SLACK).astype(np.int64)
    return np.where(sizes > 0, np.minimum(sizes - need + 1, sizes), 0)


def _prefix_entries(sets: ShingleSets, threshold: float) -> tuple[np.ndarray, ...]:
    """(token, row, position, is_index) of every probe-prefix shingle, sorted by token, then
    size, then row. A row probes with |x| - ceil(t|x|) + 1 shingles; it is indexed with
    |y| - ceil(2t/(1+t)|y|) + 1 (AllPairs): enough against any row at least as large."""
    sizes = sets.sizes
    plen = _prefix_len(sizes, threshold)
    ilen = _prefix_len(sizes, 2 * threshold / (1 + threshold))
    row = np.repeat(np.arange(len(sets), dtype=np.int64), plen)
    pos = np.arange(len(row), dtype=np.int64) - np.repeat(np.cumsum(plen) - plen, plen)
    token = sets.tokens[sets.indptr[row] + pos]
    order = np.lexsort((row, sizes[row], token))
    row, pos, token = row[order], pos[order], token[order]
    return token, row, pos, pos < ilen[row]


def candidate_pairs(
    sets: ShingleSets, threshold: float, batch: int = 4_000_000
) -> tuple[np.ndarray, int]:
    """Pairs (as i * n + j, i < j, unique, sorted) that pass the prefix, length and
    positional filters, and the number of prefix collisions generated.

    Each probe entry x meets the indexed entries y of the same shingle that sort before it
    (smaller, or as large and earlier) and are not too short: |y| >= t|x|. Sorted by
    (shingle, size, row), those are one contiguous run of the indexed entries."""
    token, row, pos, is_index = _prefix_entries(sets, threshold)
    sizes = sets.sizes
    n = len(sets)
    width = int(sizes.max()) + 2 if n else 1
    ipos = np.flatnonzero(is_index)  # positions of indexed entries, in sorted order
    before = np.cumsum(is_index) - is_index  # indexed entries before each entry
    lowest = np.ceil(threshold * sizes[row] - _SLACK).astype(np.int64)
    start = np.searchsorted(token[ipos] * width + sizes[row[ipos]], token * width + lowest)
    count = np.maximum(before - start, 0)
    cum = np.cumsum(count)
    kept: list[np.ndarray] = []
    lo = 0
    while lo < len(token):
        base = cum[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(cum, base + batch, side="right")), lo + 1)
        q = count[lo:hi]
        me = np.repeat(np.arange(lo, hi), q)
        other = ipos[
            np.repeat(start[lo:hi], q) + (np.arange(len(me)) - np.repeat(np.cumsum(q) - q, q))
        ]
        kept.append(_filter(row[other], row[me], pos[other], pos[me], sizes, threshold, n))
        lo = hi
    generated = int(cum[-1]) if len(cum) else 0
    pairs = _sorted_unique(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    return pairs, generated


def _filter(
    ra: np.ndarray,
    rb: np.ndarray,
    pa: np.ndarray,
    pb: np.ndarray,
    sizes: np.ndarray,
    t: float,
    n: int,
) -> np.ndarray:
    """Positional filter: from the first common shingle at positions pa, pb, at most
    1 + min(remaining) more can be shared; J >= t needs t(|a|+|b|)/(1+t)."""
    na, nb = sizes[ra], sizes[rb]
    ok = 1 + np.minimum(na - pa - 1, nb - pb - 1) >= t * (na + nb) / (1 + t) - _SLACK
    i, j = np.minimum(ra[ok], rb[ok]), np.maximum(ra[ok], rb[ok])
    return _sorted_unique(i * n + j)


def intersections(
    sets: ShingleSets, i: np.ndarray, j: np.ndarray, step: int = 500_000
) -> np.ndarray:
    """|set_i & set_j| for each pair (scipy's sparse elementwise product: a merge in C)."""
    from scipy import sparse

    width = int(sets.tokens.max()) + 1 if len(sets.tokens) else 1
    ones = np.ones(len(sets.tokens), np.float32)
    x = sparse.csr_matrix((ones, sets.tokens, sets.indptr), shape=(len(sets), width))
    out = np.zeros(len(i), np.int64)
    for lo in range(0, len(i), step):
        prod = x[i[lo : lo + step]].multiply(x[j[lo : lo + step]])
        out[lo : lo + step] = np.rint(np.asarray(prod.sum(axis=1)).ravel())
    return out
