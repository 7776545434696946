"""The near-duplicate step cut into per-block pieces for a cluster (`ray_filter`). Each
function takes and returns a pyarrow table, so Ray Data can run it on any block.

Flow: texts -> `shingle_tokens` (each row's distinct k-word shingles, as `dedup.shingles`
defines them, hashed to 64 bits) -> `prefix_entries` (one entry per shingle in the row's
prefix under a global order) -> grouped by shingle -> `verify_group` (exact Jaccard of every
pair in a group that passes the length bound) -> edges (row ids and the Jaccard).

Why every pair at or above the threshold is found (the same edges as `setjoin`, recall 1.0):
with any one total order of shingles, J(x, y) >= t implies that the first
|x| - ceil(t|x|) + 1 shingles of x and the first |y| - ceil(t|y|) + 1 of y share one, so the
pair meets in that shingle's group. The order here is (frequency in a sample, hash): the
sample only makes groups small (rare shingles first); any order is correct. The Jaccard is
computed from the hashed sets with the same expression as `setjoin`, inter / (|x|+|y|-inter);
two distinct shingles share a 64-bit hash with probability ~2^-64 per pair.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from distillery.filter.dedup import shingles

_SLACK = 1e-9  # the same slack as setjoin: float rounding never shortens a prefix


def _list_column(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int64()))


def shingle_tokens(batch: pa.Table, k: int) -> pa.Table:
    """(i, tokens): each row's distinct shingles as ascending signed 64-bit hashes."""
    sets = [sorted(shingles(t, k)) for t in batch.column("text").to_pylist()]
    sizes = np.fromiter((len(s) for s in sets), np.int64, len(sets))
    flat = np.array([x for s in sets for x in s], dtype=object)
    hashed = pd.util.hash_array(flat, categorize=False).view(np.int64) if len(flat) else flat
    values, offsets = [], [0]
    for lo, hi in zip(np.cumsum(sizes) - sizes, np.cumsum(sizes), strict=True):
        row = np.unique(np.asarray(hashed[lo:hi], np.int64))
        values.append(row)
        offsets.append(offsets[-1] + len(row))
    flat_values = np.concatenate(values) if values else np.zeros(0, np.int64)
    return pa.table(
        {"i": batch.column("i"), "tokens": _list_column(np.array(offsets), flat_values)}
    )


def sample_frequencies(tokens: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct tokens ascending, their row counts) over a sample of rows' token sets."""
    if not tokens:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.unique(np.concatenate(tokens), return_counts=True)


def prefix_length(sizes: np.ndarray, threshold: float) -> np.ndarray:
    """|x| - ceil(t|x|) + 1 shingles (0 for an empty row)."""
    need = np.ceil(threshold * sizes - _SLACK).astype(np.int64)
    return np.where(sizes > 0, np.minimum(sizes - need + 1, sizes), 0)


def prefix_entries(
    batch: pa.Table, threshold: float, vocab: np.ndarray, freq: np.ndarray
) -> pa.Table:
    """(key, i, tokens): one entry per prefix shingle of each row, ordered rarest first by
    the sample's frequencies (unseen shingles count 0), ties by hash."""
    tokens = batch.column("tokens").combine_chunks()
    values = tokens.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = tokens.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]  # a sliced block's offsets start past 0
    sizes = np.diff(offsets)
    row = np.repeat(np.arange(len(sizes)), sizes)
    df = np.zeros(len(values), np.int64)
    if len(vocab):
        at = np.minimum(np.searchsorted(vocab, values), len(vocab) - 1)
        df = np.where(vocab[at] == values, freq[at], 0)
    order = np.lexsort((values, df, row))  # rows stay in place; within one: rarest first
    rank_in_row = np.arange(len(values)) - np.repeat(offsets[:-1], sizes)
    picked = order[rank_in_row < np.repeat(prefix_length(sizes, threshold), sizes)]
    owner = row[picked]
    return pa.table(
        {
            "key": pa.array(values[picked], pa.int64()),
            "i": batch.column("i").take(pa.array(owner)),
            "tokens": tokens.take(pa.array(owner)),
        }
    )


def _frequency(values: np.ndarray, vocab: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Each token's count in the sample (0 when unseen): the first key of the order."""
    if not len(vocab) or not len(values):
        return np.zeros(len(values), np.int64)
    at = np.minimum(np.searchsorted(vocab, values), len(vocab) - 1)
    return np.where(vocab[at] == values, freq[at], 0)


def _prefix(tokens: np.ndarray, threshold: float, vocab: np.ndarray, freq: np.ndarray) -> set[int]:
    """The row's prefix shingles, as `prefix_entries` picks them."""
    order = np.lexsort((tokens, _frequency(tokens, vocab, freq)))
    return set(
        tokens[order[: int(prefix_length(np.asarray([len(tokens)]), threshold)[0])]].tolist()
    )


def _first_shared(shared: set[int], vocab: np.ndarray, freq: np.ndarray) -> int:
    """The first of `shared` in the global order (frequency, then hash)."""
    values = np.fromiter(shared, np.int64, len(shared))
    return int(values[np.lexsort((values, _frequency(values, vocab, freq)))[0]])


def verify_group(
    group: pa.Table, threshold: float, vocab: np.ndarray, freq: np.ndarray
) -> pa.Table:
    """(a, b, sim) for every pair in one shingle's group with exact Jaccard >= threshold,
    a < b; pairs failing the length bound |small| >= t|large| are skipped unverified. A pair
    meets in the group of every prefix shingle the two rows share; it is verified and
    emitted only in the first of those (in the global order), so once in all groups."""
    key = int(group.column("key")[0].as_py()) if group.num_rows else 0
    ids = group.column("i").to_pylist()
    sets = [np.asarray(t, np.int64) for t in group.column("tokens").to_pylist()]
    prefixes: list[set[int] | None] = [None] * len(ids)
    found_a: list[int] = []
    found_b: list[int] = []
    found_sim: list[float] = []
    for x in range(len(ids)):
        for y in range(x):
            nx, ny = len(sets[x]), len(sets[y])
            if min(nx, ny) < threshold * max(nx, ny) - _SLACK:
                continue
            for z in (x, y):
                if prefixes[z] is None:
                    prefixes[z] = _prefix(sets[z], threshold, vocab, freq)
            shared = prefixes[x] & prefixes[y]  # type: ignore[operator]
            if len(shared) > 1 and _first_shared(shared, vocab, freq) != key:
                continue  # verified in an earlier group
            inter = len(np.intersect1d(sets[x], sets[y], assume_unique=True))
            sim = inter / (nx + ny - inter)
            if sim >= threshold:
                a, b = sorted((ids[x], ids[y]))
                found_a.append(a)
                found_b.append(b)
                found_sim.append(sim)
    return pa.table(
        {
            "a": pa.array(found_a, pa.int64()),
            "b": pa.array(found_b, pa.int64()),
            "sim": pa.array(found_sim, pa.float64()),
        }
    )
