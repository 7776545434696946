"""Semantic dedup's neighbour search: `dedup.semantic_edges` (one flat faiss index in the
driver) against `executors.neighbours.sharded_semantic_edges` (the same search in Ray
tasks), on synthetic vectors, and the agreement of the two on real embeddings.

Synthetic: N unit vectors of DIM (default 50k x 384, the MiniLM size), every 20th row a
copy (every 40th a near copy) of a row far away. The vectors are made by Ray tasks for the
sharded run, so the driver never holds them, and by the driver for the local run. Each
run is its own subprocess: search time, rows/s, the driver's peak RSS and its peak traced
Python/numpy allocation (tracemalloc; faiss's own C++ memory is in RSS only), and the
edges, which must be identical (both with `--threads` BLAS threads per search).

Real (`--real N`, skipped when ../shared/data is absent): N instructions of code_alpaca
and GPTeacher (codegen, toolformer) embedded with the bundled all-MiniLM-L6-v2, then the edges at
semantic.threshold of: local, 1 thread; sharded, 1 thread; local, 2 threads; sharded with
pieces that are not semantic_edges' query chunks (other BLAS blocking). Counts the edges
and nearest values that differ, and the largest similarity difference.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ray_neighbours.py [--rows 50000] [--real 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_vectors(batch: dict[str, np.ndarray], dim: int) -> dict[str, np.ndarray]:
    """Rows `batch["id"]` of the synthetic set: row r is random (seed r), except every 20th
    row, a copy of row r - 7919 (a near copy, noise 0.05, every 40th)."""
    rows = np.asarray(batch["id"], np.int64)
    out = np.empty((len(rows), dim), np.float32)
    for k, r in enumerate(rows.tolist()):
        src = r - 7919 if r % 20 == 0 and r >= 7919 else r
        out[k] = np.random.default_rng(src).standard_normal(dim)
        if src != r and r % 40 == 0:
            out[k] += 0.05 * np.random.default_rng((r, 1)).standard_normal(dim)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return {"i": rows, "vec": out}


def run_local(vecs: np.ndarray, threshold: float, neighbours: int) -> tuple[Any, float]:
    from distillery.filter.dedup import semantic_edges

    start = time.perf_counter()
    edges, nearest = semantic_edges(vecs, threshold, neighbours)
    wall = time.perf_counter() - start
    found = (
        np.array([e.a for e in edges], np.int64),
        np.array([e.b for e in edges], np.int64),
        np.array([e.similarity for e in edges], np.float32),
        np.asarray(nearest, np.float32),
    )
    return found, wall


def run_sharded(ray: Any, ds: Any, threshold: float, neighbours: int, **kw: Any) -> Any:
    from distillery.executors.neighbours import sharded_semantic_edges

    start = time.perf_counter()
    edges, nearest, _ = sharded_semantic_edges(ray, ds, threshold, neighbours, **kw)
    return (edges.a, edges.b, edges.sim, nearest), time.perf_counter() - start


def child(mode: str, args: argparse.Namespace, out: Path) -> None:
    """One run in this process; its edges to `out`.npz, its numbers printed as JSON."""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    info: dict[str, Any] = {"mode": mode, "rows": args.rows}
    if mode == "local":
        vecs = make_vectors({"id": np.arange(args.rows)}, args.dim)["vec"]
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        tracemalloc.start()
        found, wall = run_local(vecs, args.threshold, args.neighbours)
    else:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ds = ray.data.range(args.rows, override_num_blocks=max(1, args.rows // 5000))
        ds = ds.map_batches(
            make_vectors, batch_format="numpy", batch_size=None, fn_args=(args.dim,)
        ).materialize()
        info["ray_start_and_vectors_s"] = round(time.perf_counter() - start, 1)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        tracemalloc.start()
        found, wall = run_sharded(ray, ds, args.threshold, args.neighbours, threads=args.threads)
    info["traced_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    tracemalloc.stop()
    info |= {
        "search_s": round(wall, 1),
        "rows_per_s": round(args.rows / wall),
        "driver_rss_before_search_mb": base,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "edges": len(found[0]),
    }
    info["driver_rss_growth_in_search_mb"] = info["driver_peak_rss_mb"] - base
    np.savez(out, a=found[0], b=found[1], sim=found[2], nearest=found[3])
    print(json.dumps(info))


def same(x: Path, y: Path) -> bool:
    a, b = np.load(x), np.load(y)
    pairs = [
        set(zip(f["a"].tolist(), f["b"].tolist(), f["sim"].tolist(), strict=True)) for f in (a, b)
    ]
    return pairs[0] == pairs[1] and np.array_equal(a["nearest"], b["nearest"])


def synthetic(args: argparse.Namespace) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("local", "ray"):
            cmd = [sys.executable, __file__, "--child", mode, "--out", f"{tmp}/{mode}.npz"]
            cmd += [f"--{k}={v}" for k, v in vars(args).items() if k in KNOBS]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(results[mode]))
        agree = same(Path(tmp, "local.npz"), Path(tmp, "ray.npz"))
    local, ray = results["local"], results["ray"]

    def ratio(key: str) -> float:
        return ray[key] / max(local[key], 0.1)

    print(f"rows/s ray/local: {ratio('rows_per_s'):.2f}; "
          f"driver peak RSS ray/local: {ratio('driver_peak_rss_mb'):.2f}; "
          f"RSS growth in the search ray/local: {ray['driver_rss_growth_in_search_mb']}/"
          f"{local['driver_rss_growth_in_search_mb']} MB; "
          f"traced peak ray/local: {ratio('traced_peak_mb'):.3f}; "
          f"identical edges and nearest: {agree}")  # fmt: skip


def real_vectors(n: int) -> np.ndarray | None:
    """MiniLM vectors of the first n instructions of code_alpaca, then GPTeacher codegen
    and toolformer (14k in all)."""
    from bench.shared_data import DATA

    files = [
        DATA / "code_alpaca/code_alpaca_2k.json",
        DATA / "gpteacher/codegen-instruct.json",
        DATA / "gpteacher/toolformer-dedupe-only-dataset.json",
    ]
    if not all(f.exists() for f in files):
        return None
    from distillery.embeddings import BUNDLED, embed, load_embedder

    texts = [r["instruction"] for f in files for r in json.loads(f.read_text())][:n]
    return embed(load_embedder(BUNDLED, "cpu"), texts)


def differences(x: Any, y: Any) -> dict[str, Any]:
    """Edges in one and not the other, nearest values that differ, largest |sim| change."""
    ex = {(int(a), int(b)): float(s) for a, b, s in zip(x[0], x[1], x[2], strict=True)}
    ey = {(int(a), int(b)): float(s) for a, b, s in zip(y[0], y[1], y[2], strict=True)}
    common = ex.keys() & ey.keys()
    return {
        "edges": len(ex),
        "edges_differing": len(ex.keys() ^ ey.keys()),
        "edge_sims_differing": sum(ex[e] != ey[e] for e in common),
        "nearest_differing": int((x[3] != y[3]).sum()),
        "max_nearest_diff": float(np.abs(x[3].astype(np.float64) - y[3]).max()),
    }


def real(n: int, threshold: float, neighbours: int, cpus: int) -> None:
    import faiss
    import pyarrow as pa
    import ray

    start = time.perf_counter()
    vecs = real_vectors(n)
    if vecs is None:
        print("real: skipped (../shared/data is absent)")
        return
    print(f"real: {len(vecs)} rows embedded in {time.perf_counter() - start:.0f} s")
    runs: dict[str, Any] = {}
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        runs[f"local, {threads} thread(s)"] = run_local(vecs.copy(), threshold, neighbours)[0]
    faiss.omp_set_num_threads(1)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    n = len(vecs)
    blocks = [pa.table({"i": np.arange(lo, min(lo + 1000, n))}) for lo in range(0, n, 1000)]
    ds = ray.data.from_arrow(blocks).map_batches(
        lambda b, box: {"i": b["i"], "vec": ray.get(box[0])[b["i"]]},
        batch_format="numpy",
        batch_size=None,
        fn_args=([ray.put(vecs)],),
    )
    runs["sharded, 1 thread"] = run_sharded(ray, ds, threshold, neighbours)[0]
    runs["sharded, pieces of 1000 (other blocking)"] = run_sharded(
        ray, ds, threshold, neighbours, piece_rows=1000, index_rows=2000
    )[0]
    ray.shutdown()
    ref = runs.pop("local, 1 thread(s)")
    for name, found in runs.items():
        print(f"real, threshold {threshold}: {name} vs local, 1 thread: "
              + json.dumps(differences(ref, found)))  # fmt: skip


KNOBS = ("rows", "dim", "neighbours", "threshold", "threads", "cpus")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--neighbours", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.92)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per search")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    p.add_argument("--real", type=int, default=0, help="rows of real embeddings (0: skip)")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--child", choices=("local", "ray"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args, args.out)
        return
    if not args.skip_synthetic:
        synthetic(args)
    if args.real:
        real(args.real, args.threshold, args.neighbours, args.cpus)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
