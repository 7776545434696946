"""Categories for generated rows, taken from the seed set's categories.

A new base instruction (Self-Instruct or Alpaca) gets the category whose seeds it is most
similar to; an evolution keeps its parent's category. Two measures (`categories.method`):

- `embedding` (default): cosine similarity of the instruction's sentence embedding to each
  category's centroid (the normalised mean of its seeds' embeddings);
- `rouge`: the mean ROUGE-L F1 of the instruction to the category's 3 most similar seeds
  (pure Python, no extra dependency).

Agreement on the 220 shipped seeds, leave-one-out (each seed classified against the other
219): embedding 62.3%, rouge 51.8% (22 categories; chance 4.5%). See docs/benchmarks.md and
bench/categories.py.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from distillery.errors import UserError
from distillery.generate.config import CategoryConfig
from distillery.seeds import SeedTask
from distillery.textsim import rouge_l_f, rouge_tokens

ROUGE_TOP = 3  # seeds per category averaged by the rouge measure


def seed_text(seed: SeedTask, with_input: bool) -> str:
    inp = seed.instances[0].input
    return f"{seed.instruction}\n{inp}" if with_input and inp else seed.instruction


@functools.lru_cache(maxsize=8)
def _centroids(
    model: str, seeds: tuple[tuple[str, str], ...], categories: tuple[str, ...]
) -> np.ndarray:
    """Unit centroid per category of its seeds' embeddings (computed once per process)."""
    from distillery.embeddings import embed, load_embedder

    vecs = embed(load_embedder(model), [text for _, text in seeds])
    cats = np.array([category for category, _ in seeds])
    means = np.stack([vecs[cats == c].mean(0) for c in categories])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


class CategoryModel:
    """Categories of `seeds`, and `assign(texts)` -> (category, similarity) per text."""

    def __init__(self, config: CategoryConfig, seeds: Sequence[SeedTask]) -> None:
        self.method = config.method
        self.categories = sorted({s.category for s in seeds})
        if self.method == "embedding":
            from distillery.embeddings import embed, load_embedder

            try:
                self._model = load_embedder(config.model)
            except UserError as exc:
                raise UserError(
                    f"categories.method=embedding: {exc} (or set categories.method=rouge)"
                ) from None
            self._embed = embed
            pairs = tuple((s.category, seed_text(s, False)) for s in seeds)
            self.centroids = _centroids(config.model, pairs, tuple(self.categories))
        elif self.method == "rouge":
            self.seed_tokens = [(s.category, rouge_tokens(seed_text(s, True))) for s in seeds]

    def assign(self, rows: Sequence[tuple[str, str]]) -> list[tuple[str, float] | None]:
        """(category, similarity) for each (instruction, input), measured as on the seeds:
        the instruction alone for `embedding`, with its input for `rouge`."""
        if self.method == "none" or not rows:
            return [None] * len(rows)
        if self.method == "embedding":
            vecs = self._embed(self._model, [instruction for instruction, _ in rows])
            sims = vecs @ self.centroids.T
            best = sims.argmax(axis=1)
            return [
                (self.categories[b], round(float(s[b]), 4)) for b, s in zip(best, sims, strict=True)
            ]
        return [self._rouge(f"{i}\n{x}" if x else i) for i, x in rows]

    def _rouge(self, text: str) -> tuple[str, float]:
        tokens = rouge_tokens(text)
        by_category: dict[str, list[float]] = defaultdict(list)
        for category, seed in self.seed_tokens:
            by_category[category].append(rouge_l_f(tokens, seed))
        scores = {c: float(np.mean(sorted(v)[-ROUGE_TOP:])) for c, v in by_category.items()}
        best = max(sorted(scores), key=lambda c: scores[c])
        return best, round(scores[best], 4)
