from __future__ import annotations

from pathlib import Path

import pytest
from distillery.export import save_hf_dataset, save_parquet, to_hf_dataset
from distillery.records import Drop, LLMCall, Message, Record, TemplateRef, Usage, content_id
from pydantic import ValidationError


def make(**kw) -> Record:
    base = dict(
        id="a1",
        instruction="Name three primes.",
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="Name three primes."),
            Message(role="assistant", content="2, 3, 5"),
        ],
        origin="evol:deepen",
        parent_ids=["p0"],
        round=2,
        category="math",
        teacher="openai:gpt-x",
        template=TemplateRef(name="evol_deepen", sha256="0" * 64),
        usage=Usage(input_tokens=10, output_tokens=5, cost_usd=0.001),
        scores={"judge": 8.0},
        trace=[LLMCall(model="openai:gpt-x", response="2, 3, 5", finish_reason="stop")],
    )
    base.update(kw)
    return Record(**base)


def test_record_round_trip_json() -> None:
    r = make(dropped_by=Drop(rule="exact", evidence={"duplicate_of": "b2"}))
    assert Record.model_validate_json(r.model_dump_json()) == r
    assert r.response == "2, 3, 5"


@pytest.mark.parametrize("origin", ["seed", "self_instruct", "evol:add_constraints", "external"])
def test_valid_origins(origin: str) -> None:
    assert make(origin=origin).origin == origin


@pytest.mark.parametrize("origin", ["evol", "evol:", "magic", "SEED"])
def test_invalid_origin(origin: str) -> None:
    with pytest.raises(ValidationError):
        make(origin=origin)


@pytest.mark.parametrize(
    "roles",
    [["assistant"], ["user", "user"], ["system"], ["user", "assistant", "system"]],
)
def test_conversation_shape_is_checked(roles: list[str]) -> None:
    with pytest.raises(ValidationError):
        make(messages=[Message(role=r, content="x") for r in roles])  # type: ignore[arg-type]


def test_multi_turn_allowed() -> None:
    roles = ["user", "assistant", "user", "assistant"]
    r = make(messages=[Message(role=r, content=r) for r in roles])  # type: ignore[arg-type]
    assert len(r.messages) == 4


def test_unknown_field_rejected() -> None:
    with pytest.raises(ValidationError):
        Record.model_validate({**make().model_dump(), "surprise": 1})


def test_content_id_is_stable() -> None:
    assert content_id("a", "b") == content_id("a", "b") != content_id("ab", "")


def test_export_to_datasets_and_parquet(tmp_path: Path) -> None:
    rows = [make(id=f"r{i}") for i in range(3)]
    ds = to_hf_dataset(rows)
    assert ds.num_rows == 3
    assert ds[0]["messages"][2] == {"role": "assistant", "content": "2, 3, 5"}
    assert ds[0]["parent_ids"] == ["p0"]

    import datasets

    pq = save_parquet(rows, tmp_path / "rows.parquet")
    back = datasets.Dataset.from_parquet(str(pq))
    assert back["id"] == ["r0", "r1", "r2"]
    saved = save_hf_dataset(rows, tmp_path / "hf")
    assert datasets.load_from_disk(str(saved))["messages"][1] == ds["messages"][1]
