"""Deduplication at three levels. Each returns, for every removed row, the survivor that
replaced it and the evidence; clusters (including transitive chains A~B~C) resolve to
exactly one survivor.

Survivor rule (documented, deterministic): the highest judge score (`scores["judge"]`) when
rows have one, then the earliest row in input order.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from distillery.records import Drop, Record

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_ASCII_WORD = b"abcdefghijklmnopqrstuvwxyz0123456789_"
_ASCII_FOLD = bytes(  # ASCII: NFKC is the identity; lower-case, and non-word bytes -> space
    c + 32 if 65 <= c <= 90 else c if c in _ASCII_WORD else 32 for c in range(256)
)


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def clusters(self) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            groups.setdefault(self.find(i), []).append(i)
        return groups


SEARCH_CHUNK = 8192  # queries per faiss search in `semantic_edges` (executors.neighbours too)


@dataclass
class Edge:
    a: int
    b: int
    similarity: float


@dataclass
class Duplicate:
    """One row a duplicate cluster drops: its survivor, the similarity of a direct edge
    between the two (None when they are linked only through other rows) and the size."""

    row: int
    keep: int
    direct: float | None
    cluster_size: int


def duplicates(
    edges: Iterable[Edge], score_of: Callable[[int], float | None]
) -> Iterator[Duplicate]:
    """Union the edges (row positions, any order); in each cluster the survivor is the row
    with the highest score (`score_of`, None lowest), then the earliest position; every other
    member is yielded, clusters in order of their earliest member. Memory is in the rows the
    edges touch, not in all rows: the executors' shared core of `resolve`."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    best: dict[tuple[int, int], float] = {}
    for e in edges:
        ra, rb = find(e.a), find(e.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
        key = (min(e.a, e.b), max(e.a, e.b))
        best[key] = max(best.get(key, 0.0), e.similarity)
    groups: dict[int, list[int]] = {}
    for x in sorted(parent):
        groups.setdefault(find(x), []).append(x)
    for members in sorted(groups.values(), key=lambda m: m[0]):
        if len(members) < 2:
            continue

        def rank(i: int) -> tuple[float, int]:
            score = score_of(i)
            return (-(score if score is not None else float("-inf")), i)

        keep = min(members, key=rank)
        for i in members:
            if i != keep:
                direct = best.get((min(i, keep), max(i, keep)))
                yield Duplicate(i, keep, direct, len(members))


def duplicate_drop(
    dup: Duplicate, rule: str, measure: str, survivor_id: str, survivor_instruction: str
) -> Drop:
    """The `Drop` of one duplicate, naming its survivor (the same under every executor)."""
    return Drop(
        rule=rule,
        reason=f"duplicate of {survivor_id} (cluster of {dup.cluster_size})",
        evidence={
            "survivor_id": survivor_id,
            "survivor_instruction": survivor_instruction[:300],
            measure: round(dup.direct, 4) if dup.direct is not None else None,
            "cluster_size": dup.cluster_size,
            "linked_transitively": dup.direct is None,
        },
    )


def resolve(rows: Sequence[Record], edges: list[Edge], rule: str, measure: str) -> dict[int, Drop]:
    """Union the edges; in each cluster keep one survivor, drop the rest with evidence."""
    return {
        d.row: duplicate_drop(d, rule, measure, rows[d.keep].id, rows[d.keep].instruction)
        for d in duplicates(edges, lambda i: rows[i].scores.get("judge"))
    }


def normalise(text: str) -> str:
    """NFKC, lower case, punctuation as space, single spaces (an ASCII text takes a
    byte-translation path that gives the same string)."""
    if text.isascii():
        return b" ".join(text.encode().translate(_ASCII_FOLD).split()).decode()
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_PUNCT.sub(" ", text).split())


def exact_edges(texts: Sequence[str]) -> list[Edge]:
    first: dict[str, int] = {}
    edges = []
    for i, text in enumerate(texts):
        key = normalise(text)
        if key in first:
            edges.append(Edge(first[key], i, 1.0))
        else:
            first[key] = i
    return edges


def shingles(text: str, k: int) -> set[str]:
    words = normalise(text).split()
    if len(words) <= k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def lsh_bands(num_perm: int, jaccard_at: float, detect: float = 0.995) -> tuple[int, int]:
    """(bands, rows per band): the most selective banding that still proposes a pair at
    Jaccard `jaccard_at` with probability >= `detect` (1 - (1 - J^r)^b)."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1 - (1 - jaccard_at**r) ** b >= detect:
            return b, r
    return num_perm, 1


def _signatures(sets: Sequence[set[str]], num_perm: int, chunk: int = 50_000) -> np.ndarray:
    """MinHash signatures (datasketch) as one uint32 matrix, computed in chunks."""
    from datasketch import MinHash

    out = np.zeros((len(sets), num_perm), dtype=np.uint32)
    for start in range(0, len(sets), chunk):
        block = [[x.encode() for x in s] for s in sets[start : start + chunk]]
        for k, mh in enumerate(MinHash.bulk(block, num_perm=num_perm)):
            out[start + k] = mh.hashvalues.astype(np.uint32)
    return out


def near_edges(
    texts: Sequence[str],
    threshold: float,
    k: int,
    num_perm: int = 128,
    lsh_threshold: float | None = None,
    max_bucket: int = 1000,
    method: str = "join",
) -> tuple[list[Edge], dict[str, Any]]:
    """Every pair of rows whose k-word shingle sets have Jaccard >= threshold, as edges
    carrying that Jaccard, sorted by (a, b); and counts of the work done.

    method="join" (default) is an exact set-similarity self-join (`setjoin`: prefix, length
    and positional filters, every candidate verified): all qualifying pairs, recall 1.0.
    method="minhash" is the earlier MinHash-LSH path (`minhash_edges`; num_perm,
    lsh_threshold and max_bucket apply to it only), kept for comparison."""
    if method == "minhash":
        return minhash_edges(texts, threshold, k, num_perm, lsh_threshold, max_bucket)
    from distillery.filter import setjoin

    sets = setjoin.shingle_sets(texts, k)
    pairs, collisions = setjoin.candidate_pairs(sets, threshold)
    i, j = np.divmod(pairs, max(len(sets), 1))
    inter = setjoin.intersections(sets, i, j)
    sizes = sets.sizes
    sim = inter / (sizes[i] + sizes[j] - inter)  # the same float as len(a & b) / len(a | b)
    ok = sim >= threshold
    edges = [
        Edge(a, b, v)
        for a, b, v in zip(i[ok].tolist(), j[ok].tolist(), sim[ok].tolist(), strict=True)
    ]
    stats: dict[str, Any] = {
        "method": "join",
        "prefix_collisions": collisions,
        "candidates": len(pairs),
        "verified": len(edges),
        "rejected_by_verification": len(pairs) - len(edges),
    }
    return edges, stats


def minhash_edges(
    texts: Sequence[str],
    threshold: float,
    k: int,
    num_perm: int,
    lsh_threshold: float | None = None,
    max_bucket: int = 1000,
) -> tuple[list[Edge], dict[str, Any]]:
    """MinHash-LSH candidates, each verified with exact Jaccard >= threshold.

    Signatures come from datasketch; banding is done over the signature matrix with numpy
    (one `unique` per band). Bands are chosen so a pair at Jaccard `lsh_threshold` (default:
    the threshold) is proposed with probability >= 0.995; a pair that shares no band is
    missed. In a bucket larger than `max_bucket` rows, each row is compared with the
    bucket's first `max_bucket` rows only.
    """
    sets = [shingles(t, k) for t in texts]
    hashed = [
        np.unique(np.fromiter((hash(x) for x in s), dtype=np.int64, count=len(s))) for s in sets
    ]
    sig = _signatures(sets, num_perm)
    bands, rows_per_band = lsh_bands(num_perm, lsh_threshold or threshold)
    valid = np.array([bool(s) for s in sets])
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        cols = np.ascontiguousarray(sig[:, band * rows_per_band : (band + 1) * rows_per_band])
        keys = cols.view(np.dtype((np.void, cols.dtype.itemsize * rows_per_band))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(counts)
        for end, size in zip(bounds, counts, strict=True):
            if size < 2:
                continue
            members = [int(m) for m in order[end - size : end] if valid[m]]
            head = members[:max_bucket]
            for pos, i in enumerate(members):
                for j in head[: min(pos, max_bucket)] if pos < max_bucket else head:
                    candidates.add((j, i) if j < i else (i, j))
    edges: list[Edge] = []
    refused = 0
    for i, j in candidates:
        a, b = hashed[i], hashed[j]
        inter = len(np.intersect1d(a, b, assume_unique=True))
        sim = inter / (len(a) + len(b) - inter)
        if sim >= threshold:
            edges.append(Edge(i, j, sim))
        else:
            refused += 1
    edges.sort(key=lambda e: (e.a, e.b))
    stats: dict[str, Any] = {
        "method": "minhash",
        "candidates": len(candidates),
        "verified": len(edges),
        "rejected_by_verification": refused,
        "bands": bands,
        "rows_per_band": rows_per_band,
    }
    return edges, stats


def semantic_edges(
    embeddings: np.ndarray, threshold: float, neighbours: int
) -> tuple[list[Edge], list[float]]:
    """Nearest neighbours by cosine (faiss inner product on normalised vectors). Returns the
    edges at or above the threshold and each row's nearest-neighbour similarity."""
    import faiss

    n, dim = embeddings.shape
    if n < 2:
        return [], [0.0] * n
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    faiss.normalize_L2(vectors)
    index: Any
    if n <= 200_000:
        index = faiss.IndexFlatIP(dim)  # exact; BLAS-blocked, no Python loop over pairs
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 2 * neighbours)
    index.add(vectors)
    k = min(neighbours + 1, n)
    edges = []
    nearest = [0.0] * n
    for start in range(0, n, SEARCH_CHUNK):
        sims, ids = index.search(vectors[start : start + SEARCH_CHUNK], k)
        for row, (s_row, i_row) in enumerate(zip(sims, ids, strict=True)):
            i = start + row
            for sim, j in zip(s_row, i_row, strict=True):
                if j == i or j < 0:
                    continue
                nearest[i] = max(nearest[i], float(sim))
                if j > i and sim >= threshold:
                    edges.append(Edge(i, int(j), float(sim)))
    return edges, nearest
