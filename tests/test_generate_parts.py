"""Generation building blocks: list/JSON parsing, Self-Instruct filters, ROUGE-L against the
reference implementation, Evol-Instruct elimination rules."""

from __future__ import annotations

import json
import random

import pytest
from distillery import parsing as parse
from distillery.generate.config import MODALITY_TERMS, SCAFFOLD_PHRASES, STOP_WORDS, EvolConfig
from distillery.generate.filters import (
    InstructionPool,
    instruction_drop,
    is_sorry_answer,
    leaked_scaffold,
    only_punctuation_and_stop_words,
)
from distillery.seeds import load_seeds
from distillery.textsim import rouge_l_f, rouge_tokens

from tests.test_seeds import SEEDS

MESSY_LIST = """Sure! Here are more tasks:

9. Write a haiku about autumn leaves.
10) Explain how a bicycle gear works
   to a child who just learned to ride.
**11.** Translate "good morning" into Italian.
Task 12: Summarize the plot of a famous novel in two sentences.
13 - Give three tips for a first job interview.

14.
15. List the planets in order from the sun.
Hope this helps!"""


def test_numbered_list_handles_messy_formats() -> None:
    items = parse.numbered_list(MESSY_LIST)
    assert items == [
        "Write a haiku about autumn leaves.",
        "Explain how a bicycle gear works to a child who just learned to ride.",
        'Translate "good morning" into Italian.',
        "Summarize the plot of a famous novel in two sentences.",
        "Give three tips for a first job interview.",
        "List the planets in order from the sun. Hope this helps!",
    ]
    assert parse.numbered_list("no list here at all") == []
    assert parse.numbered_list("1. a\n2. b\n9. c", min_number=9) == ["c"]


def test_json_and_instances_parsing() -> None:
    fenced = '```json\n{"instances": [{"input": "x", "output": "y"}, {"input": "z"}]}\n```'
    assert [(i.input, i.output) for i in parse.instances(fenced)] == [("x", "y")]
    assert (
        parse.instances(
            'Here you go: {"instances": [{"output": "Positive", "input": "great"}]} bye'
        )[0].output
        == "Positive"
    )
    for bad in ("nothing", '{"instances": []}', '{"instances": [{"input": "only"}]}', "[1, 2]"):
        with pytest.raises(parse.ParseFailure):
            parse.instances(bad)
    tasks = parse.alpaca_tasks(
        json.dumps({"tasks": [{"instruction": "a b c d", "input": "", "output": "o"}, {"x": 1}]})
    )
    assert [t.instruction for t in tasks] == ["a b c d"]


@pytest.mark.parametrize(
    ("text", "value"), [("Yes", True), ("no.", False), ("**Yes**, because", True), (" No", False)]
)
def test_yes_no(text: str, value: bool) -> None:
    assert parse.yes_no(text) is value


@pytest.mark.parametrize(
    ("text", "value"),
    [("Equal", True), ("Not Equal", False), ("not equal.", False), ("EQUAL", True)],
)
def test_equal_or_not_checks_not_equal_first(text: str, value: bool) -> None:
    assert parse.equal_or_not(text) is value
    with pytest.raises(parse.ParseFailure):
        parse.yes_no("maybe")
    with pytest.raises(parse.ParseFailure):
        parse.equal_or_not("They differ")


def test_evolved_prompt_strips_labels_and_tags() -> None:
    assert parse.evolved_prompt("Rewritten Prompt: Do X in 3 steps.") == "Do X in 3 steps."
    assert parse.evolved_prompt("<instruction>\nDo Y.\n</instruction>") == "Do Y."
    assert parse.evolved_prompt("Plain rewrite with `code`.") == "Plain rewrite with `code`."
    with pytest.raises(parse.ParseFailure):
        parse.evolved_prompt("   ")


def drop(text: str, finish: str | None = None):
    return instruction_drop(
        text, min_words=4, max_words=150, blocklist=MODALITY_TERMS, finish_reason=finish
    )


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Sort these numbers.", "too_short"),  # 3 words: the paper drops <= 3
        ("word " * 151, "too_long"),
        ("Draw a picture of a cat sitting on a mat.", "modality"),
        ("Describe the graph below in detail please.", "modality"),
        ("Explain how to go to the station from here.", "modality"),
        ("Summarize the attached file in two sentences.", "modality"),
        ("- Write a poem about the sea and sky.", "starts_with_punctuation"),
        ("Écris un poème sur la mer et le ciel.", "starts_non_ascii"),
        ("Write a poem about the sea and sky.", None),
        ("Summarize the profile of this mapmaker briefly.", None),  # 'map' only as a whole word
    ],
)
def test_self_instruct_filters(text: str, rule: str | None) -> None:
    result = drop(text)
    assert (result.rule if result else None) == rule


def test_cut_off_output_is_dropped() -> None:
    assert drop("Write a poem about the sea and sky.", finish="length").rule == "cut_off"


def test_pool_rejects_similar_with_evidence() -> None:
    pool = InstructionPool(0.7)
    pool.add("a", "Write a short poem about the ocean at night.")
    result = pool.too_similar("Write a short poem about the ocean at dawn.")
    assert result is not None and result.rule == "rouge_l"
    assert result.evidence["most_similar_id"] == "a" and result.evidence["rouge_l"] >= 0.7
    assert pool.too_similar("List three causes of inflation in developing economies.") is None


# pairs whose exact ROUGE-L F1 is 7/10, and the float rouge-score computes for each
THRESHOLD_TIES = [
    (  # 7 shared tokens of 10 and 10
        "Write a short poem about the calm sea at night.",
        "Write a short essay about the calm river at dawn.",
        0.7,
    ),
    (  # 7 of 7 and 13
        "Write a short poem about the sea.",
        "Write a short poem about the sea and the sky for a child.",
        0.7000000000000001,
    ),
    (  # 21 of 23 and 37
        "Write a guide for a beginner that explains how to plant, water and care for tomato "
        "plants in a city garden in detail.",
        "Write a friendly guide for a complete beginner that explains how to plant, water, feed "
        "and care for tomato plants in a small city garden or on a sunny little balcony during "
        "the hot months of summer.",
        0.6999999999999998,
    ),
]


@pytest.mark.parametrize(("member", "candidate", "f1"), THRESHOLD_TIES)
@pytest.mark.parametrize("reject_if", [">", ">="])
def test_novelty_rule_at_the_threshold_decides_as_rouge_score_does(
    member: str, candidate: str, f1: float, reject_if: str
) -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    assert scorer.score(candidate, member)["rougeL"].fmeasure == f1  # the pair is what it claims
    # Self-Instruct: `if max(rouge_scores) > 0.7: continue`
    rejected = f1 > 0.7 if reject_if == ">" else f1 >= 0.7
    pool = InstructionPool(0.7) if reject_if == ">" else InstructionPool(0.7, ">=")  # default: >
    pool.add("m", member)
    drop = pool.too_similar(candidate)
    assert (drop is not None) == rejected
    if drop is not None:
        assert drop.evidence["most_similar_id"] == "m" and reject_if in drop.reason


def test_novelty_rule_is_a_config_value() -> None:
    from distillery.generate.config import SelfInstructConfig

    assert SelfInstructConfig().rouge_l_reject_if == ">"
    assert SelfInstructConfig(rouge_l_reject_if=">=").rouge_l_reject_if == ">="
    with pytest.raises(ValueError, match="rouge_l_reject_if"):
        SelfInstructConfig(rouge_l_reject_if="=>")


def test_fast_rouge_l_agrees_with_rouge_score_package() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = [t.instruction for t in load_seeds(SEEDS)]
    rng = random.Random(0)
    pairs = [(rng.choice(texts), rng.choice(texts)) for _ in range(300)]
    # near-duplicates too: a word dropped or swapped
    for a, _ in pairs[:100]:
        words = a.split()
        del words[rng.randrange(len(words))]
        pairs.append((a, " ".join(words)))
    for a, b in pairs:
        ours = rouge_l_f(rouge_tokens(a), rouge_tokens(b))
        ref = scorer.score(a, b)["rougeL"].fmeasure
        assert ours == ref, (a, b, ours, ref)  # the same float, not just close


def test_evol_elimination_rules() -> None:
    assert is_sorry_answer("Sorry, I can't help with that.", 80)
    assert not is_sorry_answer("Sorry for the wait! " + "word " * 90, 80)
    assert not is_sorry_answer("Here is the answer.", 80)
    assert only_punctuation_and_stop_words("... and the, of it!", set(STOP_WORDS))
    assert not only_punctuation_and_stop_words("The answer is 42.", set(STOP_WORDS))
    assert leaked_scaffold("Following the #Rewritten Prompt#, write a list.", SCAFFOLD_PHRASES)
    assert (
        leaked_scaffold("Based on the given prompt, explain X.", SCAFFOLD_PHRASES) == "given prompt"
    )
    assert leaked_scaffold("Explain X in three steps.", SCAFFOLD_PHRASES) is None


def test_evol_config_rejects_unknown_operations() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        EvolConfig(operations={"teleport": 1.0})
    with pytest.raises(ValueError, match="at least one > 0"):
        EvolConfig(operations={"deepen": 0.0})
