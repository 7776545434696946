"""Exact nearest-neighbour search over vectors held in Ray's object store: the semantic
dedup step's neighbours and the decontamination step's nearest eval item, computed by Ray
tasks so that the driver never holds the vectors.

`sharded_semantic_edges` is `dedup.semantic_edges` (exact branch) cut into tasks:
- the input is a Ray Dataset of blocks with columns `i` (int64 positions, ascending within
  and across blocks, not necessarily dense) and `vec` (float32, fixed dim); row r in
  position order is row r of the matrix `semantic_edges` would be given;
- the rows are re-cut into pieces of `QUERY_ROWS` rows by rank, L2-normalised with faiss
  as `semantic_edges` does. A piece is both one of `semantic_edges`' query chunks and a
  part of the index; `index_rows` rows (whole pieces) form one index shard;
- one task per (query piece, index shard) runs faiss `IndexFlatIP.search` for each row's
  top 2k (k = neighbours + 1) and returns its candidates: every shard row at or above the
  row's k-th similarity in the shard. A row with more than k shard rows tied there (a
  cluster of identical vectors) keeps those above and the first k at it by position,
  found by searching the shard again one 1024-row block at a time (one more pass);
- one merge task per query piece picks, from the candidates of all shards, the k
  neighbours faiss's own search over all rows would return, then applies the same rule as
  `semantic_edges`: self skipped, edge (i, j) for j > i with sim >= threshold, nearest =
  max(0, best non-self sim). The driver receives edges and n floats, never vectors.

Same floats. faiss computes a similarity with BLAS (sgemm over blocks of 4096 queries x
1024 database rows) when a search has at least 128000 / dim queries, else with a SIMD dot
product; the last bits of a similarity depend on the block shapes, on where the pair sits
in its block, and on the number of BLAS threads (measured: up to 5e-7, about 4 ulp at 1.0).
Here each search sees exactly the query chunks and database blocks `semantic_edges` uses,
so the similarities are bit-identical to `semantic_edges` run with the same number of
threads (`threads`; `semantic_edges` uses faiss's default, the machine's cores unless
OMP_NUM_THREADS says otherwise). With a different thread count, a pair within ~5e-7 of
the threshold (or of a row's k-th similarity) can be decided differently, as between two
local runs on machines with different core counts. Not reproduced: a last query chunk of
fewer rows than threads (faiss then splits the database by thread, not by block).

Same ties. For k < 100 faiss keeps a heap that admits a new row only when it beats the
current k-th similarity strictly and evicts, among equal k-th similarities, the lowest
position first. Scanning positions in order, the result is: every row above the k-th
similarity t, plus the last m (by position) rows at t among the first k rows at or above
t, m = k minus the rows above t. The merge applies exactly that (checked against faiss
1.15 on tie-heavy vectors in tests/test_ray_neighbours.py). For neighbours >= 99 faiss
switches to a quickselect reservoir whose choice among rows tied at the k-th similarity
is not reproduced: then the edges can differ only for a row with a tie at its k-th
similarity at or above the threshold (more than neighbours rows at one similarity).

Beyond 200k rows `semantic_edges` switches to HNSW (approximate: it can miss some of a
row's true nearest neighbours and return farther rows instead); this search stays exact,
so there the edges can differ from local: every true top-k neighbour at or above the
threshold is an edge, and each nearest similarity is at least HNSW's. The cost is exact
all-pairs work, n^2 * dim multiply-adds spread over the cluster's CPUs.

`nearest_eval_block` is the decontamination step's `index_ip.search(vecs, 1)` for one block
of rows against the eval vectors, which are put in the object store once and indexed once
per worker process.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from distillery.filter.dedup import SEARCH_CHUNK

QUERY_ROWS = SEARCH_CHUNK  # the query chunk of `dedup.semantic_edges`; pieces are its chunks
DB_BLOCK = 1024  # faiss's database block (faiss.cvar.distance_compute_blas_database_bs)
_EVAL_INDEX: dict[str, Any] = {}  # per worker process: eval-set index built once


class Edges(NamedTuple):
    """Edges (a < b, positions) with their cosine similarity, sorted by (a, -sim, b)."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    sim: np.ndarray  # float32, as faiss computed it


def block_meta(block: dict[str, np.ndarray]) -> tuple[int, int, int, int]:
    """(rows, first position, last position, dim) of a block; positions must ascend."""
    if "i" not in block or not len(block["i"]):  # an empty block may have no columns
        return 0, 0, 0, 0
    pos, vec = block["i"], block["vec"]
    if len(pos) and np.any(np.diff(pos) <= 0):
        raise ValueError("vectors: column i must ascend within a block")
    return len(pos), int(pos[0]), int(pos[-1]), int(vec.shape[1])


def cut_piece(lo: int, hi: int, starts: list[int], *blocks: dict[str, np.ndarray]) -> Any:
    """Rows lo..hi (ranks) of the blocks (block b starts at rank starts[b]), as
    {"i": positions, "vec": L2-normalised float32 rows}."""
    import faiss

    pos, vecs = [], []
    for start, block in zip(starts, blocks, strict=True):
        a, b = max(lo - start, 0), min(hi - start, len(block["i"]))
        pos.append(np.asarray(block["i"][a:b], np.int64))
        vecs.append(np.asarray(block["vec"][a:b], np.float32))
    vec = np.ascontiguousarray(np.concatenate(vecs), dtype=np.float32)
    faiss.normalize_L2(vec)  # as semantic_edges: the same per-row rounding
    return {"i": np.concatenate(pos), "vec": vec}


def search_shard(k: int, threads: int, query: Any, *shard: Any) -> dict[str, np.ndarray]:
    """Candidates of each query row in one index shard (whole pieces, in order), as flat
    arrays q (query row), pos, sim: every row above the shard's k-th similarity and at
    least the first k by position at it (all rows when the shard has at most k).

    faiss returns each row's top 2k; when all of a row's rows at its k-th similarity are
    among them (the 2k-th is below it), they are its candidates; else (more than k rows
    tie there) `tied_candidates` finds them block by block."""
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(query["vec"].shape[1])
    for piece in shard:
        index.add(piece["vec"])
    pos = np.concatenate([piece["i"] for piece in shard])
    sims, ids = index.search(query["vec"], min(2 * k, index.ntotal))
    cut = sims[:, min(k, index.ntotal) - 1]  # each row's k-th similarity (or its last)
    keep = sims >= cut[:, None]
    tied = (sims[:, -1] >= cut) & (sims.shape[1] < index.ntotal)
    keep[tied] = False
    rows = np.broadcast_to(np.arange(len(sims))[:, None], sims.shape)
    out = {"q": rows[keep], "pos": pos[ids[keep]], "sim": sims[keep]}
    if tied.any():
        extra = tied_candidates(k, query["vec"], shard, np.nonzero(tied)[0], cut[tied])
        out = {key: np.concatenate([out[key], extra[key]]) for key in out}
    return out


def tied_candidates(
    k: int, queries: np.ndarray, shard: tuple[Any, ...], rows: np.ndarray, cut: np.ndarray
) -> dict[str, np.ndarray]:
    """For the query `rows` with more than k shard rows at their k-th similarity `cut`:
    every shard row above the cut and the first k at it, by position. Each database block
    is searched alone with the whole query chunk (so faiss computes the same floats), for
    its top 2k, or for all its rows when some query has 2k or more at or above its cut."""
    import faiss

    found: dict[str, list[np.ndarray]] = {"q": [], "pos": [], "sim": []}
    at_cut = np.zeros(len(rows), np.int64)  # rows at the cut kept so far, per tied query
    for piece in shard:
        for lo in range(0, len(piece["i"]), DB_BLOCK):
            block = faiss.IndexFlatIP(queries.shape[1])
            block.add(piece["vec"][lo : lo + DB_BLOCK])
            sims, ids = block.search(queries, min(2 * k, block.ntotal))
            if sims.shape[1] < block.ntotal and (sims[rows, -1] >= cut).any():
                sims, ids = block.search(queries, block.ntotal)
            sims, ids = sims[rows], ids[rows]
            order = np.argsort(ids, axis=1, kind="stable")  # by position
            sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
            above, tie = sims > cut[:, None], sims == cut[:, None]
            tie &= np.cumsum(tie, axis=1) + at_cut[:, None] <= k
            at_cut += tie.sum(axis=1)
            keep = above | tie
            found["q"].append(np.broadcast_to(rows[:, None], keep.shape)[keep])
            found["pos"].append(piece["i"][lo + ids[keep]])
            found["sim"].append(sims[keep])
    return {key: np.concatenate(parts) for key, parts in found.items()}


def _rank(mask: np.ndarray, q: np.ndarray, nq: int) -> np.ndarray:
    """For elements grouped by query q (ascending): the rank of each among the masked
    elements of its query (valid where mask)."""
    before = np.cumsum(mask) - mask
    start = np.concatenate([[0], np.cumsum(np.bincount(q, minlength=nq))[:-1]])
    return before - before[start][q]


def faiss_topk(q: np.ndarray, pos: np.ndarray, sim: np.ndarray, k: int, nq: int) -> np.ndarray:
    """Which candidates (sorted by (q, pos)) faiss's k-heap keeps for each query: all above
    the k-th similarity t, and of the first k at or above t (by position) the last m at t,
    m = k - (number above t)."""
    counts = np.bincount(q, minlength=nq)
    by_sim = np.lexsort((-sim, q))
    t = sim[by_sim[np.cumsum(counts) - counts + k - 1]][q]
    above, first_k = sim > t, sim >= t
    first_k &= _rank(first_k, q, nq) < k
    at_t = first_k & ~above
    m = k - np.bincount(q, weights=above, minlength=nq).astype(np.int64)
    n_at_t = np.bincount(q, weights=at_t, minlength=nq).astype(np.int64)
    keep = above | (at_t & (_rank(at_t, q, nq) >= (n_at_t - m)[q]))
    assert (np.bincount(q, weights=keep, minlength=nq) == k).all()
    return keep


def merge_piece(k: int, threshold: float, query: Any, *found: dict[str, np.ndarray]) -> Any:
    """The edges and nearest similarities of one query piece from its candidates in every
    shard: {"a", "b", "sim", "nearest" (one per query row), "i" (the rows' positions)}."""
    qpos = query["i"]
    q, pos, sim = (np.concatenate([f[key] for f in found]) for key in ("q", "pos", "sim"))
    order = np.lexsort((pos, q))
    q, pos, sim = q[order], pos[order], sim[order]
    keep = faiss_topk(q, pos, sim, k, len(qpos))
    other = keep & (pos != qpos[q])
    nearest = np.zeros(len(qpos), np.float32)
    np.maximum.at(nearest, q[other], sim[other])
    edge = other & (pos > qpos[q]) & (sim >= threshold)  # float32 compare, as semantic_edges
    a, b, s = qpos[q[edge]], pos[edge], sim[edge]
    order = np.lexsort((b, -s, a))
    return {"a": a[order], "b": b[order], "sim": s[order], "nearest": nearest, "i": qpos}


def _pieces(ray: Any, vectors: Any, piece_rows: int) -> tuple[list[Any], int]:
    """The dataset's rows re-cut by rank into pieces of QUERY_ROWS rows (object refs), and
    the number of rows; the blocks are put in position order and checked."""
    refs = vectors.to_numpy_refs()
    meta = ray.get([ray.remote(block_meta).remote(r) for r in refs])
    blocks = sorted(
        ((m, r) for m, r in zip(meta, refs, strict=True) if m[0]), key=lambda x: x[0][1]
    )
    if len({m[3] for m, _ in blocks}) > 1:
        raise ValueError("vectors: blocks differ in dimension")
    if any(m[2] >= nxt[1] for (m, _), (nxt, _) in itertools.pairwise(blocks)):
        raise ValueError("vectors: positions overlap between blocks")
    starts = np.cumsum([0] + [m[0] for m, _ in blocks]).tolist()
    cut = ray.remote(cut_piece)
    pieces = []
    for lo in range(0, starts[-1], piece_rows):
        hi = min(lo + piece_rows, starts[-1])
        mine = [b for b in range(len(blocks)) if starts[b] < hi and starts[b + 1] > lo]
        args = [blocks[b][1] for b in mine]
        pieces.append(cut.remote(lo, hi, [starts[b] for b in mine], *args))
    return pieces, starts[-1]


def sharded_semantic_edges(
    ray: Any,
    vectors: Any,
    threshold: float,
    neighbours: int,
    *,
    index_rows: int = 8 * QUERY_ROWS,
    threads: int = 1,
    in_flight: int = 8,
    piece_rows: int = QUERY_ROWS,
) -> tuple[Edges, np.ndarray, np.ndarray]:
    """`dedup.semantic_edges` (exact) over a Ray Dataset of (i, vec) blocks, in Ray tasks.

    Returns (edges, nearest, positions): edges with a < b as positions; `positions` all
    positions ascending (int64) and `nearest` (float32) each one's best non-self similarity
    (0.0 when none is positive), as `semantic_edges`' list is for row r. `index_rows`: rows
    per index shard (rounded up to whole pieces of QUERY_ROWS); `threads`: BLAS threads
    (and CPUs) per search task; `in_flight`: query pieces searched at once. The driver holds
    the edges, n floats and n positions, never the vectors. `piece_rows` other than
    QUERY_ROWS changes the floats' last bits (tests use it with vectors whose inner products
    are exact in any order)."""
    pieces, n = _pieces(ray, vectors, piece_rows)
    k = min(neighbours + 1, n)
    per_shard = max(1, -(-index_rows // piece_rows))
    shards = [pieces[s : s + per_shard] for s in range(0, len(pieces), per_shard)]
    search = ray.remote(search_shard).options(num_cpus=threads)
    merge = ray.remote(merge_piece)
    pending: list[Any] = []
    done: list[dict[str, np.ndarray]] = []
    for query in pieces:
        found = [search.remote(k, threads, query, *shard) for shard in shards]
        pending.append(merge.remote(k, float(threshold), query, *found))
        if len(pending) >= in_flight:
            done.append(ray.get(pending.pop(0)))
    done.extend(ray.get(pending))
    return _collect(done)


def _collect(parts: list[dict[str, np.ndarray]]) -> tuple[Edges, np.ndarray, np.ndarray]:
    """The merged pieces (in position order) as (edges, nearest, positions)."""

    def cat(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype)] + [p[key] for p in parts]).astype(dtype)

    edges = Edges(cat("a", np.int64), cat("b", np.int64), cat("sim", np.float32))
    return edges, cat("nearest", np.float32), cat("i", np.int64)


def eval_box(ray: Any, eval_vecs: np.ndarray) -> list[Any]:
    """The eval set's vectors in the object store, boxed so Ray passes the ref unresolved
    (for `nearest_eval_block`'s `box`)."""
    return [ray.put(np.ascontiguousarray(eval_vecs, dtype=np.float32))]


def _eval_index(box: list[Any]) -> Any:
    """The flat inner-product index of the boxed eval vectors, built once per process."""
    import faiss
    import ray

    key = box[0].hex()
    if key not in _EVAL_INDEX:
        _EVAL_INDEX.clear()  # one eval set at a time: a long-lived worker serves many runs
        index = faiss.IndexFlatIP(ray.get(box[0]).shape[1])
        index.add(ray.get(box[0]))
        _EVAL_INDEX[key] = index
    return _EVAL_INDEX[key]


@contextlib.contextmanager
def _search_path(total_queries: int | None, dim: int) -> Iterator[None]:
    """Makes faiss take the path (BLAS or per-pair SIMD) a search of `total_queries` rows
    would take, whatever the block's size; None: the block's own."""
    import faiss

    saved = faiss.cvar.distance_compute_blas_threshold
    if total_queries is not None:
        version = tuple(int(x) for x in re.findall(r"\d+", faiss.__version__)[:3])
        size = total_queries * dim if version >= (1, 14, 2) else total_queries  # its rule
        faiss.cvar.distance_compute_blas_threshold = 0 if size >= saved else 2**31 - 1
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved


def nearest_eval_block(
    batch: dict[str, np.ndarray],
    box: list[Any],
    *,
    total_queries: int | None = None,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """{"i", "sim" (float32), "eval" (int64 row of the eval vectors)}: each row's most
    similar eval item, as `index_ip.search(vecs, 1)` over all rows at once gives it (same
    tie rule: the same faiss search on the same eval index). The block's vectors are used
    as given (unit vectors from `embed`, not renormalised, as in `Run.decontam_embedding`).

    The floats are bit-identical to that one search when the block is one of its 4096-row
    query blocks (rows in the same order, the block starting at a multiple of 4096),
    `total_queries` is the number of rows that search had (it picks BLAS or per-pair dot
    products) and `threads` is its BLAS thread count; otherwise within ~5e-7."""
    import faiss

    index = _eval_index(box)
    vecs = np.ascontiguousarray(batch["vec"], dtype=np.float32)
    faiss.omp_set_num_threads(threads)
    with _search_path(total_queries, index.d):
        sims, ids = index.search(vecs, 1)
    return {"i": np.asarray(batch["i"], np.int64), "sim": sims[:, 0], "eval": ids[:, 0]}
