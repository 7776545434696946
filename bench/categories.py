"""Agreement of generate's category assignment with the seeds' own categories, leave-one-out.

Each seed is classified against the other seeds (its own left out of its category's centroid,
or out of the ROUGE-L candidates), as a new instruction is against all of them; the share
that gets its own category back is the agreement. Also per category, since the categories
with a step-by-step system prompt matter most.

    OMP_NUM_THREADS=1 .venv/bin/python bench/categories.py [--seeds builtin]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import torch
from distillery.embeddings import BUNDLED, embed, load_embedder
from distillery.generate.categories import ROUGE_TOP, seed_text
from distillery.seeds import load_seeds
from distillery.textsim import rouge_l_f, rouge_tokens


def loo_embedding(seeds: list, cats: np.ndarray) -> np.ndarray:
    vecs = embed(load_embedder(BUNDLED), [seed_text(s, False) for s in seeds])
    names = sorted(set(cats))
    sums = {c: vecs[cats == c].sum(0) for c in names}
    counts = Counter(cats.tolist())
    predicted = []
    for i, v in enumerate(vecs):
        best, best_sim = "", -2.0
        for c in names:
            own = c == cats[i]
            mean = (sums[c] - (v if own else 0)) / (counts[c] - (1 if own else 0))
            sim = float(v @ mean / np.linalg.norm(mean))
            if sim > best_sim:
                best, best_sim = c, sim
        predicted.append(best)
    return np.array(predicted)


def loo_rouge(seeds: list, cats: np.ndarray) -> np.ndarray:
    tokens = [rouge_tokens(seed_text(s, True)) for s in seeds]
    n = len(seeds)
    sims = np.full((n, n), -1.0)
    for i in range(n):
        for j in range(i + 1, n):
            sims[i, j] = sims[j, i] = rouge_l_f(tokens[i], tokens[j])
    predicted = []
    for i in range(n):
        scores = {
            c: float(np.mean(np.sort(sims[i][(cats == c) & (np.arange(n) != i)])[-ROUGE_TOP:]))
            for c in sorted(set(cats))
        }
        predicted.append(max(sorted(scores), key=lambda c: scores[c]))
    return np.array(predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="builtin")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = load_seeds(args.seeds)
    cats = np.array([s.category for s in seeds])
    print(f"{len(seeds)} seeds, {len(set(cats))} categories (chance {1 / len(set(cats)):.1%})")
    for name, fn in (("embedding", loo_embedding), ("rouge", loo_rouge)):
        t0 = time.monotonic()
        predicted = fn(seeds, cats)
        seconds = time.monotonic() - t0
        print(
            f"{name:<10} leave-one-out agreement {np.mean(predicted == cats):.1%} ({seconds:.1f} s)"
        )
        per = {c: np.mean(predicted[cats == c] == c) for c in sorted(set(cats))}
        print("  " + ", ".join(f"{c} {v:.0%}" for c, v in per.items()))


if __name__ == "__main__":
    main()
