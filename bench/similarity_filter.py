"""Self-Instruct's novelty filter at scale: add texts one at a time to a growing pool, keeping a
text only when its ROUGE-L F1 against every pool member is < 0.7.

Compares the indexed pool (`pipeline.textsim.RougePool`: prefix-filtered candidates, exact
bit-parallel LCS) with the straightforward approach of the original scripts (score each
candidate against every pool member with the `rouge-score` package), on real text from
../shared/data: its ~25k instructions first, then sentences from the same files' inputs and
outputs to reach 100k (or more, with --max). Reports time per 10k as the pool grows; at 10k
and 50k texts the pool against the implementation before this change (loaded from git at
BEFORE) and against itself without rapidfuzz (bit-parallel LCS), alternating, best of two;
the extrapolated rouge-score loop; and the agreement of decisions with scoring every
member (every disagreement is printed).

    .venv/bin/python bench/similarity_filter.py [--max 100000] [--sample 40]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillery.textsim import (  # noqa: E402
    LcsIndex,
    RougePool,
    max_rouge_l,
    rouge_l_f,
    rouge_tokens,
)

from bench.shared_data import DATA, shared_rows  # noqa: E402

THRESHOLD = 0.7
BEFORE = "fbae75a"  # the commit whose RougePool this one is compared with


def before_pool() -> type | None:
    """RougePool as it was at BEFORE (from git), or None when git cannot show it."""
    out = subprocess.run(
        ["git", "show", f"{BEFORE}:pipeline/textsim.py"], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode != 0:
        return None
    path = Path(tempfile.mkdtemp()) / "textsim_before.py"
    path.write_text(out.stdout)
    spec = importlib.util.spec_from_file_location("textsim_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["textsim_before"] = module
    spec.loader.exec_module(module)
    return module.RougePool


def load_texts(limit: int) -> tuple[list[str], int]:
    instructions: list[str] = []
    extra: list[str] = []
    for row in shared_rows():
        for key in ("instruction", "prompt"):
            if isinstance(row.get(key), str) and row[key].strip():
                instructions.append(row[key].strip())
        for key in ("input", "output", "response"):
            value = row.get(key)
            if isinstance(value, str):
                for sentence in re.split(r"(?<=[.!?])\s+|\n+", value):
                    if 4 <= len(sentence.split()) <= 60:
                        extra.append(sentence.strip())
    random.Random(0).shuffle(extra)
    return (instructions + extra)[:limit], len(instructions)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max", type=int, default=100_000)
    parser.add_argument(
        "--sample", type=int, default=10, help="candidates timed for the naive loop"
    )
    parser.add_argument("--compare", default="10000,50000", help="stream sizes compared")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent (the benchmark needs real instruction text)")
        return
    texts, n_instructions = load_texts(args.max)
    print(
        f"{len(texts):,} texts ({n_instructions:,} instructions, the rest sentences from "
        f"inputs/outputs); load average {_load()}"
    )
    tokens = [rouge_tokens(t) for t in texts]
    snapshots = growth(tokens)
    compare(tokens, [int(x) for x in args.compare.split(",") if int(x) <= len(tokens)])
    naive(texts, tokens, snapshots, args.sample)
    agreement(texts, tokens)


def growth(tokens: list[list[str]]) -> dict[int, tuple[int, list[list[str]]]]:
    """One stream through the pool: time per 10k texts as the pool grows."""
    pool = RougePool(THRESHOLD)
    kept_tokens: list[list[str]] = []
    start = last = time.perf_counter()
    slices: list[float] = []
    snapshots: dict[int, tuple[int, list[list[str]]]] = {}
    print(f"{'texts':>8} {'pool':>8} {'total s':>9} {'s per 10k (last slice)':>24}")
    for i, tok in enumerate(tokens, 1):
        if pool.best_match(tok)[1] < 0 and tok:
            pool.add(tok)
            kept_tokens.append(tok)
        if i % 10_000 == 0 or i == len(tokens):
            now = time.perf_counter()
            slices.append((now - last) / (i - (len(slices) * 10_000)) * 10_000)
            print(f"{i:>8,} {len(pool):>8,} {now - start:>9.2f} {slices[-1]:>24.2f}")
            last = now
            if i in (10_000, 50_000):
                snapshots[i] = (len(pool), list(kept_tokens))
    for k in (5, 10, 20):
        if len(slices) >= k:
            print(f"time per 10k, slice {k} / slice 1: {slices[k - 1] / slices[0]:.2f}x")
    return snapshots


def compare(tokens: list[list[str]], sizes: list[int]) -> None:
    """This pool, itself without rapidfuzz, and the pool at BEFORE: alternating, best of 2."""
    old = before_pool()
    if old is None:
        print(f"\n(before/after skipped: git cannot show {BEFORE})")
    for n in sizes:
        runs: dict[str, list[float]] = {"indexed": [], "indexed, no rapidfuzz": [], "before": []}
        for _ in range(2):
            runs["indexed"].append(_stream_time(tokens[:n]))
            runs["indexed, no rapidfuzz"].append(_stream_time(tokens[:n], fast=False))
            if old is not None:
                runs["before"].append(_stream_time(tokens[:n], cls=old))
        print(f"\n{n:,} texts, best of 2 alternating (load {_load()}):")
        base = min(runs["before"]) if runs["before"] else None
        for name, times in runs.items():
            if times:
                ratio = f"  ({base / min(times):.2f}x before)" if base else ""
                print(f"  {name:<24} {min(times):8.2f} s{ratio}")


def naive(texts: list[str], tokens: list[list[str]], snapshots: dict, sample: int) -> None:
    """rouge-score against every member, timed on a sample and extrapolated."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(1)
    for n, (pool_size, members) in sorted(snapshots.items()):
        picks = rng.sample(range(n, len(texts)), min(sample, len(texts) - n)) or rng.sample(
            range(n), sample
        )
        member_texts = [" ".join(m) for m in members]
        t0 = time.perf_counter()
        for k in picks:
            best = 0.0
            for m in member_texts:
                best = max(best, scorer.score(m, texts[k])["rougeL"].fmeasure)
        per_candidate = (time.perf_counter() - t0) / len(picks)
        per_pair = per_candidate / max(1, pool_size)
        baseline_total = pool_size * n / 2 * per_pair  # the pool grows about linearly
        ours = _stream_time(tokens[:n])
        print(
            f"\nat {n:,} texts (pool {pool_size:,}): rouge-score against every member "
            f"{per_candidate * 1000:.1f} ms per candidate ({per_pair * 1e6:.1f} us per pair); "
            f"stream ~{baseline_total:,.0f} s (extrapolated); indexed {ours:.2f} s -> "
            f"~{baseline_total / ours:,.0f}x"
        )


def agreement(texts: list[str], tokens: list[list[str]]) -> None:
    """The indexed pool against scoring every member exactly, on the first 10k."""
    n_check = min(10_000, len(tokens))
    brute: list[LcsIndex] = []
    fast = RougePool(THRESHOLD)
    disagreements = []
    t0 = time.perf_counter()
    for i, tok in enumerate(tokens[:n_check]):
        score_f, jf = fast.best_match(tok)
        score_b, jb = max_rouge_l(tok, brute, threshold=THRESHOLD)
        keep_f = jf < 0 and bool(tok)
        keep_b = not (jb >= 0 and score_b >= THRESHOLD) and bool(tok)
        if keep_f != keep_b or (jf >= 0 and score_f != score_b):
            disagreements.append((i, texts[i], score_f, score_b))
        if keep_b:
            brute.append(LcsIndex.of(tok))
        if keep_f:
            fast.add(tok)
    print(
        f"\nagreement with scoring every member, first {n_check:,} decisions: "
        f"{(n_check - len(disagreements)) / n_check:.4%} ({len(disagreements)} disagreements, "
        f"brute force took {time.perf_counter() - t0:.1f} s)"
    )
    for d in disagreements[:20]:
        print("  disagreement:", d)
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(2)
    mismatch = 0
    for _ in range(2000):
        a, b = rng.randrange(n_check), rng.randrange(n_check)
        ref = scorer.score(texts[a], texts[b])["rougeL"].fmeasure
        mismatch += ref != rouge_l_f(tokens[a], tokens[b])
    print(f"ROUGE-L vs rouge-score on 2,000 random pairs: {mismatch} float mismatches")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _stream_time(tokens: list[list[str]], fast: bool = True, cls: type | None = None) -> float:
    pool = cls(THRESHOLD) if cls is not None else RougePool(THRESHOLD, fast=fast)
    t0 = time.perf_counter()
    for tok in tokens:
        if pool.best_match(tok)[1] < 0 and tok:
            pool.add(tok)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
