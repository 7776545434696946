"""Dedup throughput, memory and near-duplicate accuracy.

- Real set: every instruction in ../shared/data (~25k; skipped with a message if absent):
  rows/s and peak RSS for exact, near and semantic dedup, and near-duplicate precision and
  recall against an exhaustive computation of every pair's Jaccard (sparse shingle matrix
  products in blocks: every pair is scored, none is sampled).
- Synthetic set: 1M rows (random words with planted exact and near duplicates): rows/s and
  peak RSS for exact and near dedup; for semantic, the faiss index stage on 1M random unit
  vectors (embedding 1M rows with MiniLM on 2 CPU cores would take about an hour: its
  rate is measured on the real set instead).

Each measurement runs in a fresh subprocess so peak RSS is its own.

    .venv/bin/python bench/dedup.py [--synthetic 1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shared_data import DATA, shared_rows  # noqa: E402


def real_texts() -> list[str]:
    return [
        r.get("instruction") or r.get("prompt")
        for r in shared_rows()
        if r.get("instruction") or r.get("prompt")
    ]


def synthetic_texts(n: int) -> list[str]:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(50_000)]
    texts: list[str] = []
    while len(texts) < n:
        words = [rng.choice(vocab) for _ in range(rng.randint(8, 40))]
        texts.append(" ".join(words))
        r = rng.random()
        if r < 0.1:
            texts.append(" ".join(words))  # exact duplicate
        elif r < 0.2:
            words[rng.randrange(len(words))] = rng.choice(vocab)  # near duplicate
            texts.append(" ".join(words))
    return texts[:n]


def measure(step: str, source: str, n: int) -> dict:
    """Run in a child process: one step, its wall time and its own peak RSS."""
    from distillery.filter import dedup

    texts = real_texts() if source == "real" else synthetic_texts(n)
    t0 = time.perf_counter()
    if step == "exact":
        found = len(dedup.exact_edges(texts))
    elif step == "near":
        edges, _ = dedup.near_edges(texts, threshold=0.8, k=3, num_perm=128)
        found = len(edges)
    elif step == "semantic" and source == "real":
        model = dedup.load_embedder("bundled:all-MiniLM-L6-v2", "cpu")
        t_embed = time.perf_counter()
        vecs = dedup.embed(model, texts, 128)
        embed_s = time.perf_counter() - t_embed
        t_index = time.perf_counter()
        edges, _ = dedup.semantic_edges(vecs, 0.92, 10)
        found = len(edges)
        return {
            "rows": len(texts),
            "seconds": time.perf_counter() - t0,
            "embed_rows_per_s": len(texts) / embed_s,
            "index_seconds": time.perf_counter() - t_index,
            "pairs": found,
            "peak_rss_mb": _rss(),
        }
    else:  # semantic index stage on synthetic unit vectors
        import numpy as np

        vecs = np.random.default_rng(0).standard_normal((n, 384)).astype("float32")
        t0 = time.perf_counter()
        edges, _ = dedup.semantic_edges(vecs, 0.92, 10)
        found = len(edges)
        texts = [""] * n
    seconds = time.perf_counter() - t0
    return {
        "rows": len(texts),
        "seconds": seconds,
        "rows_per_s": len(texts) / seconds,
        "pairs": found,
        "peak_rss_mb": _rss(),
    }


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def exhaustive_near_pairs(texts: list[str], threshold: float) -> set[tuple[int, int]]:
    """Every pair's exact Jaccard via sparse matrix products, in row blocks."""
    import numpy as np
    from distillery.filter.dedup import shingles
    from scipy import sparse

    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, t in enumerate(texts):
        for s in shingles(t, 3):
            rows.append(i)
            cols.append(vocab.setdefault(s, len(vocab)))
    x = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(texts), len(vocab))
    )
    x.data[:] = 1.0  # sets, not multisets
    sizes = np.asarray(x.sum(axis=1)).ravel()
    xt = x.T.tocsc()
    pairs = set()
    for start in range(0, len(texts), 2000):
        inter = (x[start : start + 2000] @ xt).tocoo()
        for a, b, v in zip(inter.row, inter.col, inter.data, strict=True):
            i = start + int(a)
            j = int(b)
            if j <= i:
                continue
            union = sizes[i] + sizes[j] - v
            if union > 0 and v / union >= threshold:
                pairs.add((i, j))
    return pairs


def child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--synthetic", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, metavar=("STEP", "SOURCE", "N"))
    parser.add_argument("--steps", default="exact,near,semantic", help="which steps to time")
    args = parser.parse_args()
    if args.child:
        step, source, n = args.child
        print(json.dumps(measure(step, source, int(n))))
        return
    if DATA.is_dir():
        texts = real_texts()
        print(f"real set: {len(texts):,} instructions from {DATA}")
        for step in [s for s in ("exact", "near", "semantic") if s in args.steps]:
            r = child([step, "real", "0"])
            extra = (
                f", embedding {r['embed_rows_per_s']:.0f} rows/s, index {r['index_seconds']:.1f} s"
                if step == "semantic"
                else f", {r['rows_per_s']:,.0f} rows/s"
            )
            print(
                f"  {step:<9} {r['seconds']:7.1f} s{extra}, {r['pairs']:,} duplicate pairs, peak RSS {r['peak_rss_mb']:,.0f} MB"
            )
        from distillery.filter.dedup import near_edges

        t0 = time.perf_counter()
        truth = exhaustive_near_pairs(texts, 0.8)
        t_truth = time.perf_counter() - t0
        edges, stats = near_edges(texts, threshold=0.8, k=3, num_perm=128)
        found = {(min(e.a, e.b), max(e.a, e.b)) for e in edges}
        tp = len(found & truth)
        from distillery.filter.dedup import UnionFind

        uf = UnionFind(len(texts))
        for e in edges:
            uf.union(e.a, e.b)
        same_cluster = sum(uf.find(i) == uf.find(j) for i, j in truth) / max(1, len(truth))
        precision = tp / len(found) if found else 1.0
        recall = tp / len(truth) if truth else 1.0
        print(
            f"  near-duplicates at Jaccard >= 0.8: {len(truth):,} pairs (exhaustive, {t_truth:.0f} s); "
            f"MinHash-LSH + verification found {len(found):,}: precision {precision:.4f}, pair recall {recall:.4f}, "
            f"pairs ending in one cluster {same_cluster:.4f}; bands {stats['bands']}x{stats['rows_per_band']}, "
            f"LSH candidates {stats['candidates']:,}, refused by verification {stats['rejected_by_verification']:,}"
        )
        for i, j in sorted(truth - found)[:10]:
            print(f"    missed: {texts[i][:70]!r} ~ {texts[j][:70]!r}")
    else:
        print(f"real set skipped: {DATA} is absent")
    n = args.synthetic
    print(f"synthetic set: {n:,} rows")
    for step in [s for s in ("exact", "near", "semantic-index") if s.split("-")[0] in args.steps]:
        r = child([step.split("-")[0], "synthetic", str(n)])
        label = (
            "semantic (faiss index on random unit vectors)" if step == "semantic-index" else step
        )
        print(
            f"  {label:<46} {r['seconds']:8.1f} s, {r['rows_per_s']:>9,.0f} rows/s, {r['pairs']:,} pairs, "
            f"peak RSS {r['peak_rss_mb']:,.0f} MB"
        )


if __name__ == "__main__":
    main()
