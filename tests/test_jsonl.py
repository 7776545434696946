from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.errors import UserError
from distillery.jsonl import Journal, atomic_open, read_jsonl, write_jsonl
from distillery.records import Message, Record


def rec(i: int) -> Record:
    return Record(
        id=f"r{i}",
        instruction=f"task {i}",
        messages=[
            Message(role="user", content=f"task {i}"),
            Message(role="assistant", content="ok"),
        ],
        origin="seed",
    )


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "rows.jsonl"
    assert write_jsonl(path, (rec(i) for i in range(5))) == 5
    rows = list(read_jsonl(path, Record))
    assert [r.id for r in rows] == [f"r{i}" for i in range(5)]
    assert not [p for p in path.parent.iterdir() if p.name != "rows.jsonl"]  # no temp left


def test_crash_mid_write_leaves_old_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [rec(0)])

    def rows_then_crash():
        yield rec(1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows_then_crash())
    assert [r.id for r in read_jsonl(path, Record)] == ["r0"]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_atomic_open_never_exposes_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "new.txt"
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as handle:
        handle.write("partial")
        raise KeyboardInterrupt
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"id": "a"\n', r"rows.jsonl:1: malformed JSON"),
        (b"\n[1, 2]\n", r"rows.jsonl:2: expected a JSON object"),
        (b'{"id": "caf\xe9"}\n', r"rows.jsonl:1: not valid UTF-8"),
    ],
)
def test_read_errors_name_file_and_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=expected):
        list(read_jsonl(path, Record))


def test_schema_error_names_field(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    good = rec(0).model_dump_json()
    bad = json.dumps({"id": "x", "instruction": "i", "origin": "seed"})
    path.write_text(good + "\n" + bad + "\n")
    with pytest.raises(UserError, match=r"rows.jsonl:2: field 'messages': field required"):
        list(read_jsonl(path, Record))


def test_journal_ignores_and_truncates_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.append({"id": 1})
        journal.append({"id": 2})
    with path.open("ab") as handle:
        handle.write(b'{"id": 3, "tru')  # a kill in the middle of a write
    assert [r["id"] for r in Journal(path).read()] == [1, 2]
    with Journal(path) as journal:
        journal.append({"id": 3})
    assert [r["id"] for r in Journal(path).read()] == [1, 2, 3]
