"""The exact Jaccard self-join (`distillery.filter.setjoin`, `near_edges(method="join")`)
against brute force: every pair's exact Jaccard from Python sets."""

from __future__ import annotations

import random

import pytest
from distillery.filter import dedup
from distillery.filter.dedup import Edge, jaccard, near_edges, normalise, resolve, shingles

from tests.test_filter_parts import row


def brute_edges(texts: list[str], threshold: float, k: int) -> list[Edge]:
    sets = [shingles(t, k) for t in texts]
    return [
        Edge(i, j, jaccard(sets[i], sets[j]))
        for i in range(len(texts))
        for j in range(i + 1, len(texts))
        if sets[i] and sets[j] and jaccard(sets[i], sets[j]) >= threshold
    ]


def as_tuples(edges: list[Edge]) -> list[tuple[int, int, float]]:
    return [(e.a, e.b, e.similarity) for e in edges]


def corpus(rng: random.Random, n: int, vocab: list[str]) -> list[str]:
    """Bases and edited copies (substitutions, deletions, insertions, repeats), plus short
    and empty rows, punctuation and case noise."""
    texts: list[str] = []
    while len(texts) < n:
        base = [rng.choice(vocab) for _ in range(rng.randint(0, 30))]
        texts.append(" ".join(base))
        for _ in range(rng.randint(0, 4)):
            words = list(base)
            for _ in range(rng.randint(0, 3)):
                op = rng.random()
                if op < 0.4 and words:
                    words[rng.randrange(len(words))] = rng.choice(vocab)
                elif op < 0.7 and words:
                    del words[rng.randrange(len(words))]
                else:
                    words.insert(rng.randrange(len(words) + 1), rng.choice(vocab))
            if words and rng.random() < 0.2:
                words[0] = words[0].upper() + "!"
            texts.append(" ".join(words) + rng.choice(["", ".", " ?", "\n"]))
    return texts[:n]


@pytest.mark.parametrize(
    ("k", "threshold", "vocab_size", "seed"),
    [
        (3, 0.8, 40, 0),
        (3, 0.5, 15, 1),
        (1, 0.7, 30, 2),
        (2, 0.9, 20, 3),
        (5, 0.6, 25, 4),
        (3, 1.0, 10, 5),
        (3, 0.75, 6, 6),
    ],
)
def test_join_edges_equal_brute_force(k: int, threshold: float, vocab_size: int, seed: int) -> None:
    rng = random.Random(seed)
    texts = corpus(rng, 400, [f"w{i}" for i in range(vocab_size)])
    truth = brute_edges(texts, threshold, k)
    edges, stats = near_edges(texts, threshold, k)
    assert as_tuples(edges) == as_tuples(truth)  # same pairs, same floats, same order
    assert stats["verified"] == len(truth) > 20
    assert stats["candidates"] >= len(truth)


@pytest.mark.parametrize(
    "texts", [[], [""], ["a"], ["", ""], ["a", "a"], ["!!!", "???"], ["a b", "a b", ""]]
)
def test_join_on_degenerate_inputs(texts: list[str]) -> None:
    assert as_tuples(near_edges(texts, 0.8, 3)[0]) == as_tuples(brute_edges(texts, 0.8, 3))


def test_join_finds_ties_exactly_at_the_threshold() -> None:
    # 4 shared shingles of 5 in the union: Jaccard exactly 0.8 must count (>=)
    texts = ["a b c d e f", "a b c d e f g", "x y z", "x y z w v u t s r q"]
    edges, _ = near_edges(texts, 0.8, 3)
    assert as_tuples(edges) == [(0, 1, 0.8)]


def test_join_with_a_large_vocabulary_re_densifies_shingle_keys_exactly() -> None:
    # 5-word shingles over ~8000 distinct words: the base-(vocab+1) key would overflow int64
    rng = random.Random(9)
    vocab = [f"t{i}" for i in range(8000)]
    texts = corpus(rng, 300, vocab) + [" ".join(vocab[i : i + 40]) for i in range(0, 8000, 40)]
    assert as_tuples(near_edges(texts, 0.6, 5)[0]) == as_tuples(brute_edges(texts, 0.6, 5))


def test_join_on_unicode_text_matches_python_sets() -> None:
    texts = [
        "Ｃafé naïve ΣΟΦΟΣ — déjà vu",
        "cafe naive σοφος deja vu",
        "Café naïve σοφος — déjà vu!",
        "ﬁne ﬂour ① ② x",
        "fine flour 1 2 x",
    ]
    assert as_tuples(near_edges(texts, 0.3, 2)[0]) == as_tuples(brute_edges(texts, 0.3, 2))


def test_ascii_fast_path_of_normalise_equals_the_unicode_path() -> None:
    import re
    import unicodedata

    def slow(text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower()
        return " ".join(re.sub(r"[^\w\s]", " ", text).split())

    every_ascii = "".join(chr(c) for c in range(128))
    for text in [every_ascii, "Hello,World!!  foo_bar\tBAZ\x1cq", "", "   ", "a\x00b\x7fc"]:
        assert normalise(text) == slow(text)


def test_transitive_chains_resolve_like_brute_force() -> None:
    # A~B, B~C, C~D with A !~ C: one cluster, and the evidence of each drop is its direct
    # Jaccard to the survivor, or "linked transitively" when that pair is below threshold
    words = [f"c{i}" for i in range(60)]
    chain = [" ".join(words[s : s + 40]) for s in range(0, 16, 4)]
    rng = random.Random(3)
    texts = chain + corpus(rng, 200, [f"w{i}" for i in range(30)])
    rows = [row(t, "x", i, scores={"judge": float(i % 7)}) for i, t in enumerate(texts)]
    edges, _ = near_edges(texts, 0.7, 3)
    truth = brute_edges(texts, 0.7, 3)
    assert (0, 2) not in {(e.a, e.b) for e in truth} and (0, 1) in {(e.a, e.b) for e in truth}
    got = resolve(rows, edges, "near_duplicate", "jaccard")
    want = resolve(rows, truth, "near_duplicate", "jaccard")
    assert got == want
    assert any(d.evidence["linked_transitively"] for d in want.values())


def test_minhash_path_still_available_and_verified() -> None:
    rng = random.Random(5)
    texts = corpus(rng, 200, [f"w{i}" for i in range(40)])
    truth = {(e.a, e.b) for e in brute_edges(texts, 0.8, 3)}
    edges, stats = dedup.near_edges(texts, 0.8, 3, 128, method="minhash")
    assert stats["method"] == "minhash" and {(e.a, e.b) for e in edges} <= truth
