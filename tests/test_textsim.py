from __future__ import annotations

import random

import pytest
from distillery.textsim import (
    LcsIndex,
    RejectIf,
    RougePool,
    lcs_length,
    max_rouge_l,
    passes,
    rouge_l_f,
    rouge_l_fmeasure,
    rouge_tokens,
)


def lcs_dp(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = (
                table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
            )
    return table[-1][-1]


def test_bit_parallel_lcs_matches_dynamic_programming() -> None:
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        assert lcs_length(a, b) == lcs_dp(a, b)


def test_rouge_tokens_and_score() -> None:
    assert rouge_tokens("Hello, World! It's 2024.") == ["hello", "world", "it", "s", "2024"]
    a, b = rouge_tokens("the cat sat on the mat"), rouge_tokens("the cat lay on the mat")
    assert abs(rouge_l_f(a, b) - 5 / 6) < 1e-9
    assert rouge_l_f([], b) == 0.0


def test_f_measure_is_rouge_scores_float_at_every_tie() -> None:
    scoring = pytest.importorskip("rouge_score.scoring")
    ties = 0
    for a in range(1, 60):
        for b in range(1, 60):
            for lcs in range(0, min(a, b) + 1):
                ref = scoring.fmeasure(lcs / b, lcs / a)
                assert rouge_l_fmeasure(lcs, a, b) == ref == rouge_l_fmeasure(lcs, b, a)
                ties += 20 * lcs == 7 * (a + b)
    assert ties > 30  # pairs at exactly 0.7 were among them


def test_max_rouge_l_finds_best_and_prunes_by_length() -> None:
    pool = [LcsIndex.of(rouge_tokens(t)) for t in ["a b c d", "x y", "a b c d e f g h i j k l"]]
    score, i = max_rouge_l(rouge_tokens("a b c d"), pool)
    assert (score, i) == (1.0, 0)
    score, i = max_rouge_l(rouge_tokens("q r s t"), pool, threshold=0.7)
    assert i == -1


@pytest.mark.parametrize("fast", [True, False], ids=["rapidfuzz", "bit-parallel"])
@pytest.mark.parametrize("reject_if", [">=", ">"])
def test_indexed_pool_decides_exactly_like_scoring_every_member(
    reject_if: RejectIf, fast: bool
) -> None:
    if fast:
        pytest.importorskip("rapidfuzz")
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(60)] + ["the", "a", "of", "write", "explain"]
    base = [[rng.choice(vocab) for _ in range(rng.randint(1, 25))] for _ in range(150)]
    pool, brute = RougePool(0.7, reject_if, fast=fast), []
    checked = accepted = 0
    for _ in range(2500):
        tokens = list(rng.choice(base))
        for _ in range(rng.randint(0, 5)):  # light edits make near-duplicates
            if tokens and rng.random() < 0.5:
                del tokens[rng.randrange(len(tokens))]
            else:
                tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(vocab))
        fast_score, fast_i = pool.best_match(tokens)
        slow_score, slow_i = max_rouge_l(tokens, brute, threshold=0.7)
        slow_hit = slow_i >= 0 and passes(slow_score, 0.7, reject_if)
        assert (fast_i >= 0) == slow_hit
        if slow_hit:
            assert fast_score == slow_score
        checked += 1
        if fast_i < 0:
            pool.add(tokens)
            brute.append(LcsIndex.of(tokens))
            accepted += 1
    assert checked == 2500 and 100 < accepted < 2400  # both outcomes exercised


def pool_vs_brute(stream: list[list[str]], threshold: float, reject_if: RejectIf) -> int:
    """Feed a stream through the indexed pool and through scoring every member; assert equal
    decisions, scores and chosen members; return how many were rejected."""
    pool, brute = RougePool(threshold, reject_if), []
    rejected = 0
    for tokens in stream:
        score, i = pool.best_match(tokens)
        best, best_i = 0.0, -1
        for k, member in enumerate(brute):
            s = rouge_l_f(member, tokens)
            if passes(s, threshold, reject_if) and s > best:
                best, best_i = s, k
        assert (score, i) == (best, best_i), tokens
        if i < 0:
            pool.add(tokens)
            brute.append(tokens)
        else:
            rejected += 1
    return rejected


@pytest.mark.parametrize("reject_if", [">=", ">"])
@pytest.mark.parametrize("threshold", [0.7, 0.5, 0.9, 1.0])
def test_pool_on_adversarial_streams(threshold: float, reject_if: RejectIf) -> None:
    """Tiny vocabularies (every token frequent), repeats, very short and long texts, exact
    ties at the threshold, and a pool large enough for several index rebuilds."""
    rng = random.Random(int(threshold * 10))
    stream: list[list[str]] = []
    for n in range(700):
        vocab = "abc" if n % 3 == 0 else "abcdefghij"
        tokens = [rng.choice(vocab) for _ in range(rng.choice([1, 2, 3, 5, 10, 20, 45]))]
        stream.append(tokens)
        if n % 4 == 0 and len(tokens) >= 10:  # an exact-tie partner: 7 of 10 kept -> F1 0.82
            stream.append(tokens[:7] + ["z"] * 3)
    rejected = pool_vs_brute(stream, threshold, reject_if)
    if threshold == 1.0 and reject_if == ">":
        assert rejected == 0  # F1 > 1 is impossible
    else:
        assert 50 < rejected < len(stream) - 50


def test_pool_ties_follow_the_operator() -> None:
    a = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    b = ["a", "b", "c", "d", "e", "f", "g", "x", "y", "z"]  # LCS 7 of 10 and 10: F1 exactly 0.7
    ge, gt = RougePool(0.7, ">="), RougePool(0.7, ">")
    ge.add(a)
    gt.add(a)
    assert ge.best_match(b) == (0.7, 0) and gt.best_match(b) == (0.0, -1)


def test_pool_decisions_equal_rouge_score_on_text() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(4)
    words = [
        "write",
        "a",
        "short",
        "poem",
        "story",
        "about",
        "the",
        "sea",
        "cat",
        "dog",
        "in",
        "of",
        "and",
        "explain",
        "why",
    ]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) for _ in range(300)]
    pool, kept = RougePool(0.7, ">"), []
    for text in texts:
        best = max((scorer.score(m, text)["rougeL"].fmeasure for m in kept), default=0.0)
        score, i = pool.best_match(rouge_tokens(text))
        assert (i >= 0) == (best > 0.7)
        if i >= 0:
            assert score == best
        else:
            pool.add(rouge_tokens(text))
            kept.append(text)
