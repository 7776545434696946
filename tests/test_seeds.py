from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from distillery.cli import main
from distillery.errors import UserError
from distillery.seeds import load_seeds, validate_seeds

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"


WORDS = [
    "apple",
    "river",
    "quantum",
    "violin",
    "desert",
    "ledger",
    "harbor",
    "pixel",
    "saffron",
    "tundra",
    "comet",
    "ember",
]


def task(i: int, instruction: str | None = None, **kw) -> dict:
    words = [WORDS[(i * k + k * k) % len(WORDS)] for k in range(1, 6)]
    row = {
        "id": f"t-{i}",
        "category": kw.pop("category", "misc"),
        "instruction": instruction or f"Describe {' '.join(words)} in case {i}.",
        "instances": [{"input": "", "output": "ok"}],
        "is_classification": False,
    }
    row.update(kw)
    return row


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_shipped_seeds_are_valid_and_cover_categories() -> None:
    report = validate_seeds(SEEDS, min_categories=15)
    assert report.errors == []
    assert len(report.seeds) >= 175
    counts = report.per_category
    assert len(counts) >= 15
    assert min(counts.values()) >= 5
    assert sum(s.task.is_classification for s in report.seeds) >= 10


def test_shipped_seeds_have_real_answers() -> None:
    tasks = load_seeds(SEEDS)
    for t in tasks:
        for inst in t.instances:
            assert len(inst.output.split()) >= 1, t.id
            assert "TODO" not in inst.output, t.id
    lengths = Counter(len(t.instruction.split()) > 3 for t in tasks)
    assert lengths[False] == 0  # no instruction of three words or fewer


def test_cli_reports_count_per_category(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seeds", "validate", str(SEEDS)]) == 0
    out = capsys.readouterr().out
    assert "coding_python" in out
    assert "total" in out and "OK" in out


def test_duplicate_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rows(tmp_path / "s.jsonl", [task(1), task(2, id="t-1")])
    assert main(["seeds", "validate", str(path), "--min-categories", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: duplicate id 't-1' (first at {path}:1)" in err


def test_exact_and_near_duplicate_instructions(tmp_path: Path) -> None:
    rows = [
        task(1, "Explain how a hash map resolves collisions using open addressing."),
        task(2, "explain how a hash map resolves collisions using  open addressing."),
        task(3, "Explain how a hash map resolves collisions with open addressing, briefly."),
        task(4, "Write a limerick about a cat who learns to play the cello."),
    ]
    report = validate_seeds(write_rows(tmp_path / "s.jsonl", rows))
    assert len(report.errors) == 2
    assert report.errors[0].endswith(f"instruction duplicates {tmp_path / 's.jsonl'}:1")
    assert ":3: instruction is a near-duplicate of" in report.errors[1]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"id": "a", \n', ":1: malformed JSON"),
        (
            json.dumps(task(1, instances=[])).encode() + b"\n",
            ":1: field 'instances': list should have at least 1 item",
        ),
        (
            json.dumps({k: v for k, v in task(1).items() if k != "category"}).encode(),
            ":1: field 'category': field required",
        ),
        (json.dumps(task(1, extra=1)).encode(), ":1: field 'extra': unknown field"),
        (b'{"id": "caf\xe9"}\n', ":1: not valid UTF-8"),
    ],
)
def test_bad_seed_files_give_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert main(["seeds", "validate", str(path), "--min-categories", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}{expected}"), err


def test_category_coverage(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "s.jsonl", [task(1), task(2)])
    assert "1 categories, at least 15 required" in validate_seeds(path, min_categories=15).errors[0]


def test_load_seeds_raises_first_problem(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "s.jsonl", [task(1), task(2, id="t-1")])
    with pytest.raises(UserError, match="duplicate id"):
        load_seeds(path)


def test_directory_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no \.jsonl seed files"):
        load_seeds(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        load_seeds(tmp_path / "absent.jsonl")


def test_hf_dataset_seeds(tmp_path: Path) -> None:
    import datasets

    rows = [task(i, category=f"c{i % 3}") for i in range(6)]
    ds_dir = tmp_path / "parquet"
    ds_dir.mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(ds_dir / "train.parquet"))
    seeds = load_seeds(f"hf:{ds_dir}")
    assert [s.id for s in seeds] == [r["id"] for r in rows]


def test_an_empty_seed_file_fails_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert main(["seeds", "validate", str(path), "--min-categories", "1"]) == 2
    assert f"{path}: no seed tasks" in capsys.readouterr().err
    with pytest.raises(UserError, match="no seed tasks"):
        load_seeds(path)


def test_validate_lists_every_problem_of_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "seeds"
    d.mkdir()
    write_rows(d / "a.jsonl", [task(1), task(2, instances=[]), task(3, extra=1)])
    (d / "b.jsonl").write_text(json.dumps(task(4)) + "\n" + '{"id": "t-5", \n')
    write_rows(d / "c.jsonl", [task(6, category=None)])
    assert main(["seeds", "validate", str(d), "--min-categories", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{d / 'a.jsonl'}:2: field 'instances'")
    assert err[1].startswith(f"{d / 'a.jsonl'}:3: field 'extra': unknown field")
    assert err[2].startswith(f"{d / 'b.jsonl'}:2: malformed JSON")
    assert err[3].startswith(f"{d / 'c.jsonl'}:1: field 'category'")
    assert err[4] == f"4 problem(s) in {d}"
    with pytest.raises(UserError, match=r"a\.jsonl:2: .* \(and 3 more: see `distillery seeds"):
        load_seeds(d)
