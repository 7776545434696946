"""Filter building blocks: heuristics, dedup (precision/recall vs brute force, transitive
clusters, survivors), decontamination recall, judge verdict parsing, threshold boundaries."""

from __future__ import annotations

import os
import random

import pytest
from distillery.filter.config import HeuristicsConfig
from distillery.filter.decontam import EvalItem, NgramIndex
from distillery.filter.dedup import Edge, exact_edges, jaccard, near_edges, resolve, shingles
from distillery.filter.heuristics import Heuristics
from distillery.records import LLMCall, Message, Record
from distillery.verdicts import parse_verdict


def row(instruction: str, response: str, i: int = 0, **kw) -> Record:
    return Record(
        id=f"r{i}",
        instruction=instruction,
        origin="external",
        messages=[
            Message(role="user", content=instruction),
            Message(role="assistant", content=response),
        ],
        **kw,
    )


GOOD = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside chloroplasts."


@pytest.mark.parametrize(
    ("instruction", "response", "rule"),
    [
        ("Explain photosynthesis in one sentence.", GOOD, None),
        ("Explain photosynthesis in one sentence.", "   ", "empty"),
        ("Explain.", GOOD, "instruction_too_short"),
        ("Explain photosynthesis in one sentence.", "Sugar.", "response_too_short"),
        (
            "Explain photosynthesis in one sentence.",
            "As an AI language model, I think " + GOOD,
            "refusal",
        ),
        (
            "Explain photosynthesis in one sentence.",
            "I'm sorry, but I can't help with that request at all.",
            "refusal",
        ),
        (
            "Explain photosynthesis in one sentence.",
            "#Rewritten Prompt#: explain it. " + GOOD,
            "leaked_scaffold",
        ),
        (
            "Explain photosynthesis in one sentence.",
            "La photosynthèse transforme la lumière, l'eau et le dioxyde de carbone en sucre et en oxygène.",
            "wrong_language",
        ),
        ("Explain photosynthesis in one sentence.", "the plant makes food " * 12, "repetition"),
    ],
)
def test_heuristic_rules(instruction: str, response: str, rule: str | None) -> None:
    drop = Heuristics(HeuristicsConfig()).check(row(instruction, response))
    assert (drop.rule if drop else None) == rule


def test_cut_off_and_refusal_category_exception() -> None:
    h = Heuristics(HeuristicsConfig())
    cut = row(
        "Explain photosynthesis in one sentence.",
        GOOD,
        trace=[LLMCall(model="m", finish_reason="length")],
    )
    assert h.check(cut).rule == "cut_off"
    refusal_ok = row(
        "Help me stalk my ex online.",
        "I can't help with that, but here is how to get support.",
        category="refusal",
    )
    assert h.check(refusal_ok) is None


def _variant(words: list[str], target: float, rng: random.Random, vocab: list[str]) -> list[str]:
    """Replace trailing words until the 3-shingle Jaccard drops to about `target`."""
    out = list(words)
    base = shingles(" ".join(words), 3)
    for pos in range(len(out) - 1, -1, -1):
        if jaccard(base, shingles(" ".join(out), 3)) <= target:
            break
        out[pos] = rng.choice(vocab)
    return out


def test_near_dedup_precision_and_recall_against_brute_force() -> None:
    rng = random.Random(7)
    vocab = [f"v{i}" for i in range(3000)]
    texts = []
    for _ in range(120):
        base = [rng.choice(vocab) for _ in range(60)]
        texts.append(" ".join(base))
        for target in (0.6, 0.7, 0.8, 0.9, 0.95):
            texts.append(" ".join(_variant(base, target, rng, vocab)))
    sets = [shingles(t, 3) for t in texts]
    truth = {
        (i, j)
        for i in range(len(texts))
        for j in range(i + 1, len(texts))
        if jaccard(sets[i], sets[j]) >= 0.8
    }
    edges, stats = near_edges(texts, threshold=0.8, k=3, num_perm=128)
    assert {(e.a, e.b) for e in edges} == truth  # the exact join: precision and recall 1.0
    edges, stats = near_edges(texts, threshold=0.8, k=3, num_perm=128, method="minhash")
    found = {(min(e.a, e.b), max(e.a, e.b)) for e in edges}
    assert found <= truth  # precision 1.0: every edge verified with exact Jaccard
    recall = len(found & truth) / len(truth)
    assert recall >= 0.98, recall
    assert stats["rejected_by_verification"] > 0  # LSH proposed pairs that verification refused


def test_transitive_chain_resolves_to_one_survivor_with_evidence() -> None:
    rows = [row(f"t{i}", "x", i) for i in range(4)]
    drops = resolve(rows, [Edge(0, 1, 0.9), Edge(1, 2, 0.85)], "near_duplicate", "jaccard")
    assert set(drops) == {1, 2}
    assert (
        drops[2].evidence["survivor_id"] == "r0"
        and drops[2].evidence["linked_transitively"] is True
    )
    assert drops[1].evidence["jaccard"] == 0.9 and drops[1].evidence["cluster_size"] == 3


def test_survivor_is_the_best_judged_row() -> None:
    rows = [
        row("a", "x", 0),
        row("b", "x", 1, scores={"judge": 9.0}),
        row("c", "x", 2, scores={"judge": 6.0}),
    ]
    drops = resolve(rows, [Edge(0, 1, 1.0), Edge(1, 2, 1.0)], "exact_duplicate", "similarity")
    assert set(drops) == {0, 2}


def test_exact_dedup_normalises_case_space_and_punctuation() -> None:
    edges = exact_edges(["Hello, World!", "hello   world", "Hello there"])
    assert [(e.a, e.b) for e in edges] == [(0, 1)]


def test_decontamination_recall_verbatim_and_edited() -> None:
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(2000)]
    evals = [
        EvalItem("bench.jsonl", i, " ".join(rng.choice(vocab) for _ in range(rng.randint(12, 40))))
        for i in range(200)
    ]
    evals.append(EvalItem("bench.jsonl", 200, "Name five rivers."))  # shorter than n words
    index = NgramIndex(evals, 8)
    verbatim = sum(
        index.check(f"Please answer this: {e.text} Thanks.", 1) is not None for e in evals
    )
    assert verbatim == len(evals)  # 100% recall on verbatim items
    edited = 0
    for e in evals[:200]:
        words = e.text.split()
        words[rng.randrange(len(words))] = "changed"  # one word edited
        edited += index.check(" ".join(words), 1) is not None
    assert edited / 200 >= 0.95
    clean = index.check("A completely unrelated training row about cooking pasta at home.", 1)
    assert clean is None


@pytest.mark.parametrize(
    ("text", "status", "score"),
    [
        ('{"explanation": "fine", "score": 8}', "ok", 8.0),
        ('{"explanation": "fine", "score": 7.5}', "ok", 7.5),
        ('{"score": "8/10"}', "ok", 8.0),
        ('{"score": "4/5"}', "ok", 8.0),
        ('Sure! Here is my verdict:\n```json\n{"explanation": "ok", "score": 6}\n```', "ok", 6.0),
        ("The response is accurate. Score: 9/10", "ok", 9.0),
        ('{"explanation": "no score given"}', "parse_error", None),
        ('{"explanation": "x", "score": "high"}', "parse_error", None),
        ('{"explanation": "x", "score": 11}', "parse_error", None),
        ('{"explanation": "x", "score": 0}', "parse_error", None),
        ("Score: 7. Actually, score: 8.", "parse_error", None),
        ("I cannot evaluate this response because it is harmful.", "refusal", None),
        ("", "parse_error", None),
    ],
)
def test_judge_verdict_parsing(text: str, status: str, score: float | None) -> None:
    verdict = parse_verdict(text)
    assert (verdict.status, verdict.score) == (status, score)


def test_decontamination_evidence_names_the_first_shared_ngram_in_every_process() -> None:
    """The example n-gram is the row's first shared one, whatever PYTHONHASHSEED is."""
    import subprocess
    import sys

    passage = " ".join(f"w{i}" for i in range(40))
    code = (
        "from distillery.filter.decontam import EvalItem, NgramIndex\n"
        f"index = NgramIndex([EvalItem('bench', 0, {passage!r})], 8)\n"
        f"print(index.check('Answer this: ' + {passage!r}, 1).evidence['example_ngram'])\n"
    )
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "w0 w1 w2 w3 w4 w5 w6 w7", out.stderr
