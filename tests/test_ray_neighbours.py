"""The sharded neighbour search (`executors.neighbours`) gives exactly `dedup.semantic_edges`'
edges and nearest similarities, ties included, and `nearest_eval_block` exactly the
decontamination step's `index_ip.search(vecs, 1)`.

Two kinds of vectors: random ones with planted duplicates (the BLAS path, floats compared
bit for bit) and "tie" vectors with four entries of +-0.5, whose inner products are exact
in any summation order, so that many rows tie at their k-th similarity. The shard and merge
logic is tested in-process (no Ray); one Ray instance (2 CPUs) serves the tests of the
plumbing, which skip when the `ray` extra is absent.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import pytest

faiss = pytest.importorskip("faiss", reason="faiss is not installed (the filter extra)")
from distillery.executors import neighbours as nb  # noqa: E402
from distillery.filter.dedup import semantic_edges  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
faiss.omp_set_num_threads(1)  # semantic_edges below and the shards: the same BLAS threads


def tie_vectors(n: int, dim: int, rng: np.random.Generator, spread: int = 8) -> np.ndarray:
    """Unit vectors with four entries of +-0.5 among the first `spread` columns."""
    x = np.zeros((n, dim), np.float32)
    for row in x:
        row[rng.choice(spread, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def random_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Random vectors; rows 5000, 8500, 8999 copy row 10 exactly and 6000 nearly (other
    shards and pieces than row 10 when n > 9000)."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    for copy in (5000, 8500, 8999):
        if copy < n:
            x[copy] = x[10]
    if n > 6000:
        x[6000] = x[10] + 0.05 * rng.standard_normal(dim).astype(np.float32)
    return x


def local(x: np.ndarray, pos: np.ndarray, threshold: float, k: int) -> tuple[set[Any], list[float]]:
    edges, nearest = semantic_edges(x.copy(), threshold, k)  # it normalises in place
    return {(int(pos[e.a]), int(pos[e.b]), e.similarity) for e in edges}, nearest


def edge_set(edges: nb.Edges) -> set[Any]:
    return {(int(a), int(b), float(s)) for a, b, s in zip(*edges, strict=True)}


def in_process(
    x: np.ndarray, pos: np.ndarray, threshold: float, k: int, piece_rows: int, per_shard: int
) -> tuple[nb.Edges, np.ndarray, np.ndarray]:
    """The Ray flow of `sharded_semantic_edges`, each task called directly."""
    block = {"i": pos, "vec": x}
    pieces = [
        nb.cut_piece(lo, min(lo + piece_rows, len(x)), [0], block)
        for lo in range(0, len(x), piece_rows)
    ]
    kk = min(k + 1, len(x))
    shards = [pieces[s : s + per_shard] for s in range(0, len(pieces), per_shard)]
    merged = [
        nb.merge_piece(kk, threshold, q, *[nb.search_shard(kk, 1, q, *s) for s in shards])
        for q in pieces
    ]
    return nb._collect(merged)


@pytest.mark.parametrize(("n", "k", "piece_rows", "per_shard", "spread"), [
    (1500, 10, 256, 2, 8), (1500, 3, 100, 1, 8), (700, 25, 700, 1, 8), (997, 10, 128, 3, 8),
    (1200, 10, 128, 2, 5), (1200, 3, 600, 1, 5), (5, 10, 2, 1, 8),
])  # fmt: skip
def test_ties_across_shards_as_faiss_breaks_them(
    n: int, k: int, piece_rows: int, per_shard: int, spread: int
) -> None:
    """spread 8: 1120 distinct vectors; spread 5: 80, clusters of ~15 identical rows."""
    rng = np.random.default_rng(n + k)
    x = tie_vectors(n, 32, rng, spread)
    pos = np.arange(n) * 3 + 7  # positions need not be dense
    want, nearest = local(x, pos, 0.5, k)
    edges, got_nearest, positions = in_process(x, pos, 0.5, k, piece_rows, per_shard)
    assert edge_set(edges) == want and len(edges.a) == len(want)
    assert got_nearest.tolist() == nearest
    assert positions.tolist() == pos.tolist()


def test_the_tie_rule_is_not_first_by_position() -> None:
    """The rule the merge reproduces is faiss's heap, not 'highest, then lowest position':
    at a tie that would keep the first rows at the k-th similarity, faiss the last m."""
    q = np.zeros(5, np.int64)
    pos = np.arange(5)
    sim = np.array([0.5, 0.5, 0.5, 0.5, 0.9], np.float32)  # k = 3: first 3 >= 0.5: 0, 1, 2
    keep = nb.faiss_topk(q, pos, sim, 3, 1)
    assert pos[keep].tolist() == [1, 2, 4]  # 0.9 evicts the lowest at 0.5; 3 never enters
    index = faiss.IndexFlatIP(2)
    index.add(np.array([[0.5, 0], [0.5, 0], [0.5, 0], [0.5, 0], [0.9, 0]], np.float32))
    _, ids = index.search(np.array([[1, 0]], np.float32), 3)
    assert sorted(ids[0].tolist()) == [1, 2, 4]


def test_random_vectors_bit_identical_over_two_pieces() -> None:
    """9000 rows: a BLAS-path chunk of 8192 and a per-pair chunk of 808, two shards;
    exact and near copies of row 10 in the other piece."""
    rng = np.random.default_rng(1)
    x = random_vectors(9000, 64, rng)
    pos = np.arange(9000)
    want, nearest = local(x, pos, 0.3, 10)
    edges, got_nearest, _ = in_process(x, pos, 0.3, 10, nb.QUERY_ROWS, 1)
    assert edge_set(edges) == want
    assert got_nearest.tolist() == nearest
    assert {(10, 5000), (10, 6000), (10, 8500), (10, 8999)} <= {(a, b) for a, b, _ in want}


def test_block_positions_must_ascend() -> None:
    vec = np.zeros((3, 4), np.float32)
    assert nb.block_meta({"i": np.array([2, 5, 9]), "vec": vec}) == (3, 2, 9, 4)
    with pytest.raises(ValueError, match="ascend"):
        nb.block_meta({"i": np.array([2, 9, 5]), "vec": vec})


def _attach(batch: dict[str, np.ndarray], box: list[Any]) -> dict[str, np.ndarray]:
    import ray

    return {"i": batch["i"], "vec": ray.get(box[0])[batch["row"]]}


def dataset(ray: Any, x: np.ndarray, pos: np.ndarray, sizes: list[int]) -> Any:
    """(i, vec) blocks of the given sizes, as the filter's embedding actors produce them."""
    import pyarrow as pa

    bounds = np.cumsum([0, *sizes])
    tables = [
        pa.table({"i": pos[a:b], "row": np.arange(a, b)}) for a, b in itertools.pairwise(bounds)
    ]
    return ray.data.from_arrow(tables).map_batches(
        _attach, batch_format="numpy", batch_size=None, fn_args=([ray.put(x)],)
    )


def test_ray_search_matches_local(ray_instance: Any) -> None:
    ray = ray_instance
    rng = np.random.default_rng(2)
    x = random_vectors(9000, 32, rng)  # 8192 x 32 still takes faiss's BLAS path
    pos = np.cumsum(rng.integers(1, 4, 9000))
    want, nearest = local(x, pos, 0.3, 10)
    ds = dataset(ray, x, pos, [1000, 3333, 17, 4000, 650])  # n not a multiple of a piece
    edges, got_nearest, positions = nb.sharded_semantic_edges(ray, ds, 0.3, 10, index_rows=1)
    assert edge_set(edges) == want
    assert got_nearest.tolist() == nearest and positions.tolist() == pos.tolist()

    t = tie_vectors(1200, 32, rng)
    want, nearest = local(t, pos[:1200], 0.5, 10)
    for index_rows in (256, 10**6):  # several shards; a single shard
        ds = dataset(ray, t, pos[:1200], [500, 1, 699])
        edges, got_nearest, _ = nb.sharded_semantic_edges(
            ray, ds, 0.5, 10, index_rows=index_rows, piece_rows=256
        )
        assert edge_set(edges) == want and got_nearest.tolist() == nearest

    for n in (0, 1):
        edges, got_nearest, positions = nb.sharded_semantic_edges(
            ray, dataset(ray, x[:n], pos[:n], [n]), 0.3, 10
        )
        assert len(edges.a) == 0 and got_nearest.tolist() == [0.0] * n
        assert positions.tolist() == pos[:n].tolist()


def test_nearest_eval_block_is_the_local_search(ray_instance: Any) -> None:
    ray = ray_instance
    rng = np.random.default_rng(3)
    evals = rng.standard_normal((300, 384)).astype(np.float32)
    evals[200] = evals[7]  # a tie between eval items: the same winner as local
    faiss.normalize_L2(evals)
    queries = rng.standard_normal((4300, 384)).astype(np.float32)
    queries[100] = evals[7]
    faiss.normalize_L2(queries)
    index = faiss.IndexFlatIP(384)
    index.add(evals)
    sims, ids = index.search(queries, 1)  # Run.decontam_embedding's one search

    box = nb.eval_box(ray, evals)
    pos = np.arange(4300) + 1000
    # the search's 4096-row query blocks; 204 rows alone would take faiss's per-pair path
    ds = dataset(ray, queries, pos, [4096, 204])
    out = ds.map_batches(
        nb.nearest_eval_block,
        batch_format="numpy",
        batch_size=None,
        fn_args=(box,),
        fn_kwargs={"total_queries": len(queries)},
    )
    got = {
        int(i): (float(s), int(e))
        for b in out.iter_batches(batch_format="numpy", batch_size=None)
        for i, s, e in zip(b["i"], b["sim"], b["eval"], strict=True)
    }
    assert got == {
        int(p): (float(s), int(e)) for p, s, e in zip(pos, sims[:, 0], ids[:, 0], strict=True)
    }
    assert got[1100][1] in (7, 200)  # faiss's SIMD top-1 picks 200 here, not the lowest id
