"""Judge verdicts as judges really write them: one stated score (or winner) is the verdict,
two different ones are a parse error (never the first or the last), a refusal is a verdict
that gives no score and declines."""

from __future__ import annotations

import pytest
from distillery.verdicts import ParseFailure, parse_verdict, parse_winner

# (verdict text, status, score); the comment says what the old parser returned where it erred
POINTWISE = [
    # the shape the prompt asks for, and harmless variations of it
    ('{"explanation": "Correct, complete and well organised.", "score": 9}', "ok", 9.0),
    ('{"explanation": "Minor omissions.", "score": 7.5}', "ok", 7.5),
    ('```json\n{"explanation": "Accurate.", "score": 8}\n```', "ok", 8.0),
    ('Here is my evaluation:\n{"explanation": "Clear.", "score": 6}', "ok", 6.0),
    ('{"explanation": "Good.", "score": "8/10"}', "ok", 8.0),
    ('{"explanation": "Good.", "score": "4/5"}', "ok", 8.0),
    ('{"explanation": "Good.", "score": "4 out of 5"}', "ok", 8.0),  # old: parse_error
    ('{"explanation": "Good.", "score": 8, "score": 8}', "ok", 8.0),  # repeated, not changed
    (
        '{"explanation": "It misses 2 of the 3 requested examples, so 4.", "score": 4}',
        "ok",
        4.0,
    ),
    (
        '{"explanation": "I cannot rate this higher than a 9: one edge case is unhandled.", '
        '"score": 9}',
        "ok",
        9.0,
    ),
    (
        '{"explanation": "The student earned a score of 85 in the example; the response\'s '
        'average of 84.3 is right.", "score": 9}',
        "ok",
        9.0,
    ),
    ('{"explanation": "The JSON it returns, {\\"a\\": 1}, is valid.", "score": 8}', "ok", 8.0),
    ("The response is accurate and complete. Score: 9/10", "ok", 9.0),
    ("The answer is mostly right. Score: 8/10 (on a scale of 1 to 10)", "ok", 8.0),
    ("**Score:** 7\n\nThe response follows every constraint.", "ok", 7.0),  # old: parse_error
    ("Score: 4 out of 5", "ok", 8.0),  # old: 4 (unscaled)
    ("Rating: 4 out of 5", "ok", 8.0),  # old: parse_error
    ("I would rate it 4 out of 5.", "ok", 8.0),  # old: parse_error
    ("I'd give it an 8 out of 10.", "ok", 8.0),  # old: parse_error
    ("Overall this deserves 8/10.", "ok", 8.0),  # old: parse_error
    ("Rating: [[8]]", "ok", 8.0),  # MT-Bench's single-answer form; old: parse_error
    ("Score - 6/10", "ok", 6.0),
    ("**7**", "ok", 7.0),  # nothing but the score; old: parse_error
    ("Score: -2", "parse_error", None),  # not read as 2
    # a refusal-sounding phrase next to a score is a score
    ("I cannot rate this higher than a 9, as one edge case is missed. Score: 9", "ok", 9.0),  # old: refusal
    ("I can't give it full marks. Score: 8/10", "ok", 8.0),  # old: refusal
    ("I'm not able to find any error in it. Score: 10", "ok", 10.0),  # old: refusal
    # two different scores: never the first or the last
    ("Score: 8/10 ... on second thought the code has a bug, honestly 3.", "parse_error", None),  # old: 8
    ("Score: 8/10. Hmm, actually the final answer is wrong: honestly 3", "parse_error", None),  # old: 8
    ("I'd give it 8/10. Wait - the date is wrong. Revised score: 3/10", "parse_error", None),  # old: 3
    ("Score: 7. Actually, score: 8.", "parse_error", None),
    (
        '{"explanation": "Fine.", "score": 8}\nOn reflection the math is wrong; honestly 3.',
        "parse_error",
        None,
    ),  # old: 8 (the first)
    (
        '{"explanation": "Well written, I\'d give it 8/10, but the result is wrong.", '
        '"score": 3}',
        "parse_error",
        None,
    ),  # old: 3 (the last)
    ('{"explanation": "x", "score": 8, "score": 3}', "parse_error", None),  # old: 3 (last key)
    ('{"score": 8, "explanation": "x", "score": 3}', "parse_error", None),  # old: 3 (last key)
    ('{"explanation": "a", "score": 8}\n{"explanation": "b", "score": 3}', "parse_error", None),
    (
        '{"correctness": 9, "helpfulness": 6, "completeness": 7, "score": 7}',
        "parse_error",
        None,
    ),  # old: 7 (per-aspect scores ignored)
    (
        '{"scores": {"correctness": 9, "helpfulness": 5}, "explanation": "x", "score": 7}',
        "parse_error",
        None,
    ),  # old: 7
    ('{"explanation": "x", "score": 6, "overall_score": 8}', "parse_error", None),  # old: 6
    ("Correctness: 9/10\nHelpfulness: 6/10\nOverall score: 7/10", "parse_error", None),  # old: 7
    ('{"explanation": "x", "score": 8, "max_score": 10}', "ok", 8.0),  # the scale is no score
    # agreeing per-aspect and overall scores are one score
    ('{"correctness": 8, "helpfulness": 8, "explanation": "x", "score": 8}', "ok", 8.0),
    # refusals: no score, and the judge declines
    ("I cannot evaluate this response because it is harmful.", "refusal", None),
    ("I'm sorry, but I can't help with assessing this content.", "refusal", None),
    ('{"explanation": "I will not assess sexual content involving minors.", "score": null}',
     "refusal", None),  # old: parse_error
    ('{"explanation": "Not applicable.", "score": "N/A"}', "refusal", None),  # old: parse_error
    # no score and no refusal
    ("", "parse_error", None),
    ("The response is good.", "parse_error", None),
    ('{"explanation": "no score given"}', "parse_error", None),
    ('{"explanation": "x", "rating": 8}', "parse_error", None),
    ('{"explanation": "x", "score": "high"}', "parse_error", None),
    ('{"explanation": "x", "score": true}', "parse_error", None),
    ('{"explanation": "x", "score": 11}', "parse_error", None),
    ('{"explanation": "x", "score": 0}', "parse_error", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "status", "score"), POINTWISE)
def test_pointwise_verdicts(text: str, status: str, score: float | None) -> None:
    verdict = parse_verdict(text)
    assert (verdict.status, verdict.score) == (status, score), verdict.error
    assert (verdict.error == "") == (status == "ok")


def test_a_contradiction_names_both_scores_and_the_explanation_is_kept() -> None:
    bad = parse_verdict("Score: 8/10. Actually, honestly 3.")
    assert bad.status == "parse_error" and "8" in bad.error and "3" in bad.error
    good = parse_verdict('{"explanation": "Clear and correct.", "score": 9}')
    assert good.explanation == "Clear and correct."


PAIRWISE = [
    ('{"explanation": "A is more accurate.", "winner": "A"}', "A"),
    ('x {"explanation": "e", "winner": "tie"} y', "tie"),
    ('{"winner": "b"}', "B"),
    ('```json\n{"explanation": "B follows the format.", "winner": "B"}\n```', "B"),
    ('{"explanation": "Both equal.", "winner": "Tie"}', "tie"),
    ('{"explanation": "e", "winner": "Response A"}', "A"),  # old: parse failure
    # the explanation compares the two; only a stated winner counts
    ('{"explanation": "Response A is better formatted, but B is correct.", "winner": "B"}', "B"),
    ("After comparing both, the winner is B.", "B"),
    ("Final verdict: [[A]]", "A"),
    ("[[C]]", "tie"),  # MT-Bench's tie
    ("**B**", "B"),  # nothing but the winner
    ("Tie.", "tie"),
    ('{"explanation": "e", "winner": "A", "winner": "A"}', "A"),
]


@pytest.mark.parametrize(("text", "winner"), PAIRWISE)
def test_pairwise_verdicts(text: str, winner: str) -> None:
    assert parse_winner(text) == winner


PAIRWISE_ERRORS = [
    '{"winner": "both"}',
    "Both are fine.",
    "",
    '{"explanation": "A is clearer."}',
    '{"explanation": "e", "winner": "A", "winner": "B"}',  # old: B (the last key)
    '{"explanation": "e", "winner": "A"}\nActually, on reflection the winner is B.',  # old: A
    '{"explanation": "The winner is B on correctness.", "winner": "A"}',  # old: A
    '{"explanation": "a", "winner": "A"}\n{"explanation": "b", "winner": "B"}',
    '{"explanation": "e", "winner": "A", "verdict": "B"}',  # old: A
    "Winner: A. Hmm, no - winner: B.",
]


@pytest.mark.parametrize("text", PAIRWISE_ERRORS)
def test_pairwise_verdicts_that_name_no_single_winner(text: str) -> None:
    with pytest.raises(ParseFailure):
        parse_winner(text)
