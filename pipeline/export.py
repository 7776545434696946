"""Hugging Face datasets in and out: export records to a `datasets.Dataset` (TRL's
conversational `messages` format) and to Parquet (provenance that does not fit a flat column
travels as JSON text), and read rows from `hf:NAME[:SPLIT]` specs."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery.errors import UserError
from distillery.jsonl import atomic_open
from distillery.records import Record

if TYPE_CHECKING:
    from datasets import Dataset


def load_hf_dataset(spec: str) -> Dataset:
    """`hf:NAME[@CONFIG][:SPLIT]` -> a Hugging Face dataset: a hub name (with its config, e.g.
    `hf:openai/gsm8k@main:test`), a local dataset directory (Parquet/JSON/CSV files) or a
    loading script; split: train. Errors are one line."""
    from datasets import load_dataset

    name, _, split = spec.removeprefix("hf:").partition(":")
    name, _, subset = name.partition("@")
    try:
        return load_dataset(name, subset or None, split=split or "train")
    except Exception as exc:  # datasets raises many types; the user needs one line
        raise UserError(f"{spec}: cannot load dataset: {str(exc).splitlines()[0]}") from None


def iter_hf_rows(spec: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) for each row of `hf:NAME[:SPLIT]`."""
    for i, row in enumerate(load_hf_dataset(spec)):
        yield f"{spec}[{i}]", dict(row)


def record_to_row(record: Record) -> dict[str, Any]:
    """A flat row: `messages` as TRL reads it, plus lineage columns."""
    return {
        "id": record.id,
        "messages": [m.model_dump() for m in record.messages],
        "instruction": record.instruction,
        "input": record.input,
        "origin": record.origin,
        "parent_ids": list(record.parent_ids),
        "round": record.round,
        "category": record.category or "",
        "teacher": record.teacher or "",
        "template_name": record.template.name if record.template else "",
        "template_sha256": record.template.sha256 if record.template else "",
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "cost_usd": record.usage.cost_usd,
        "scores": json.dumps(record.scores, sort_keys=True),
        "demo": record.demo,
    }


def to_hf_dataset(records: Iterable[Record]) -> Dataset:
    import datasets
    from datasets import Dataset, Features, List, Value

    datasets.disable_progress_bars()
    features = Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "instruction": Value("string"),
            "input": Value("string"),
            "origin": Value("string"),
            "parent_ids": List(Value("string")),
            "round": Value("int32"),
            "category": Value("string"),
            "teacher": Value("string"),
            "template_name": Value("string"),
            "template_sha256": Value("string"),
            "input_tokens": Value("int64"),
            "output_tokens": Value("int64"),
            "cost_usd": Value("float64"),
            "scores": Value("string"),
            "demo": Value("bool"),
        }
    )
    rows = [record_to_row(r) for r in records]
    return Dataset.from_list(rows, features=features)


def save_parquet(records: Iterable[Record], path: str | Path) -> Path:
    """Write records as one Parquet file, atomically."""
    path = Path(path)
    dataset = to_hf_dataset(records)
    with atomic_open(path, "wb") as handle:
        dataset.to_parquet(handle)
    return path


def save_hf_dataset(records: Iterable[Record], directory: str | Path) -> Path:
    """`Dataset.save_to_disk` into a temp dir, then swap it into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        to_hf_dataset(records).save_to_disk(str(tmp / "data"))
        if directory.exists():
            shutil.rmtree(directory)
        (tmp / "data").rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory
