from __future__ import annotations

import random

from pipeline.textsim import LcsIndex, lcs_length, max_rouge_l, rouge_l_f, rouge_tokens


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


def test_max_rouge_l_finds_best_and_prunes_by_length() -> None:
    pool = [LcsIndex.of(rouge_tokens(t)) for t in ["a b c d", "x y", "a b c d e f g h i j k l"]]
    score, i = max_rouge_l(rouge_tokens("a b c d"), pool)
    assert (score, i) == (1.0, 0)
    score, i = max_rouge_l(rouge_tokens("q r s t"), pool, threshold=0.7)
    assert i == -1
