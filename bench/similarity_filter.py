"""Self-Instruct's novelty filter at scale: add texts one at a time to a growing pool, keeping a
text only when its ROUGE-L F1 against every pool member is < 0.7.

Compares the indexed pool (`pipeline.textsim.RougePool`: prefix-filtered candidates, exact
bit-parallel LCS) with the straightforward approach of the original scripts (score each
candidate against every pool member with the `rouge-score` package), on real text from
../shared/data: its ~25k instructions first, then sentences from the same files' inputs and
outputs to reach 100k. Reports time growth from 10k to 100k, the speed-up at 10k and 50k,
and the agreement of decisions with scoring every member (every disagreement is printed).

    .venv/bin/python bench/similarity_filter.py [--max 100000] [--sample 40]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillery.textsim import LcsIndex, RougePool, max_rouge_l, rouge_tokens  # noqa: E402

from bench.shared_data import DATA, shared_rows  # noqa: E402

THRESHOLD = 0.7


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
    parser.add_argument("--sample", type=int, default=40, help="candidates timed for the baseline")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent (the benchmark needs real instruction text)")
        return
    texts, n_instructions = load_texts(args.max)
    print(
        f"{len(texts):,} texts ({n_instructions:,} instructions, the rest sentences from inputs/outputs)"
    )
    tokens = [rouge_tokens(t) for t in texts]

    pool = RougePool(THRESHOLD)
    kept_tokens: list[list[str]] = []
    decisions: list[bool] = []
    checkpoints = {10_000, 25_000, 50_000, 100_000, len(texts)}
    start = last = time.perf_counter()
    last_n = 0
    snapshots: dict[int, tuple[int, list[list[str]]]] = {}
    print(f"{'texts':>8} {'pool':>8} {'total s':>9} {'s per 10k (last slice)':>24}")
    for i, tok in enumerate(tokens, 1):
        _, j = pool.best_match(tok)
        keep = j < 0 and bool(tok)
        decisions.append(keep)
        if keep:
            pool.add(tok)
            kept_tokens.append(tok)
        if i in checkpoints:
            now = time.perf_counter()
            print(
                f"{i:>8,} {len(pool):>8,} {now - start:>9.2f} {(now - last) / (i - last_n) * 10_000:>24.2f}"
            )
            last, last_n = now, i
            if i in (10_000, 50_000):
                snapshots[i] = (len(pool), list(kept_tokens))

    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(1)
    for n, (pool_size, members) in sorted(snapshots.items()):
        # the straightforward approach: every candidate against every pool member
        sample = rng.sample(range(n, len(texts)), min(args.sample, len(texts) - n)) or rng.sample(
            range(n), args.sample
        )
        member_texts = [" ".join(m) for m in members]
        t0 = time.perf_counter()
        for k in sample:
            best = 0.0
            for m in member_texts:
                best = max(best, scorer.score(m, texts[k])["rougeL"].fmeasure)
        per_candidate = (time.perf_counter() - t0) / len(sample)
        per_pair = per_candidate / max(1, pool_size)
        # a stream of n insertions scores sum(pool size before each) pairs
        pairs = pool_size * n / 2  # the pool grows about linearly over the stream
        baseline_total = pairs * per_pair
        print(
            f"\nat {n:,} texts (pool {pool_size:,}): rouge-score against every member "
            f"{per_candidate * 1000:.1f} ms per candidate ({per_pair * 1e6:.1f} us per pair)"
        )
        print(
            f"  straightforward stream of {n:,}: ~{baseline_total:,.0f} s (extrapolated from the timed sample)"
        )
        ours = _stream_time(tokens[:n])
        print(
            f"  indexed pool, same {n:,}: {ours:.2f} s  -> speed-up ~{baseline_total / ours:,.0f}x"
        )

    # agreement: the indexed pool against scoring every member exactly, on the first 10k
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
        if keep_f != keep_b:
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
    # and the exact LCS against the rouge-score package on sampled pairs
    mismatch = 0
    for _ in range(2000):
        a, b = rng.randrange(n_check), rng.randrange(n_check)
        ref = scorer.score(texts[a], texts[b])["rougeL"].fmeasure
        ours_score = (
            2 * LcsIndex.of(tokens[a]).lcs(tokens[b]) / max(1, len(tokens[a]) + len(tokens[b]))
        )
        mismatch += abs(ref - ours_score) > 1e-9
    print(f"bit-parallel ROUGE-L vs rouge-score on 2,000 random pairs: {mismatch} mismatches")


def _stream_time(tokens: list[list[str]]) -> float:
    pool = RougePool(THRESHOLD)
    t0 = time.perf_counter()
    for tok in tokens:
        if pool.best_match(tok)[1] < 0 and tok:
            pool.add(tok)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
