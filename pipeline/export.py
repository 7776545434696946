"""Hugging Face datasets in and out: export records to a `datasets.Dataset` (TRL's
conversational `messages` format) and to Parquet (provenance that does not fit a flat column
travels as JSON text), read rows from `hf:NAME[:SPLIT]` specs, and `distillery export`: a
run's rows in the Hub layout (`data/train-*.parquet` + a `README.md` card made from the run's
records by `distillery.dataset_card`), written to a directory or pushed to the Hub."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery.errors import UserError
from distillery.jsonl import atomic_open
from distillery.records import Record

if TYPE_CHECKING:
    from datasets import Dataset, Features


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


def hf_features() -> Features:
    """The columns of `record_to_row` as `datasets` types."""
    from datasets import Features, List, Value

    return Features(
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


ARROW_BATCH = 1000  # rows per Arrow record batch when a dataset is streamed to disk


def to_hf_dataset(records: Iterable[Record], *, arrow_file: Path | None = None) -> Dataset:
    """The records as a `datasets.Dataset`, in memory; or, with `arrow_file`, written there
    `ARROW_BATCH` rows at a time by `datasets`' own Arrow writer and memory-mapped from it, so
    the records are never all in memory (and nothing goes to the `datasets` cache). The same
    table either way (`record_to_row`'s values are plain Python, which `datasets` encodes as
    they are)."""
    import datasets
    import pyarrow as pa
    from datasets import Dataset
    from datasets.arrow_writer import ArrowWriter

    datasets.disable_progress_bars()
    features = hf_features()
    if arrow_file is None:
        return Dataset.from_list([record_to_row(r) for r in records], features=features)
    with ArrowWriter(features=features, path=str(arrow_file)) as writer:
        rows = map(record_to_row, records)
        while batch := list(itertools.islice(rows, ARROW_BATCH)):
            writer.write_table(pa.Table.from_pylist(batch, schema=features.arrow_schema))
        writer.finalize()
    return Dataset.from_file(str(arrow_file))


def save_parquet(records: Iterable[Record], path: str | Path) -> Path:
    """Write records as one Parquet file, atomically."""
    path = Path(path)
    dataset = to_hf_dataset(records)
    with atomic_open(path, "wb") as handle:
        dataset.to_parquet(handle)
    return path


def save_hf_dataset(records: Iterable[Record], directory: str | Path) -> Path:
    """`Dataset.save_to_disk` into a temp dir, then swap it into place. Records that are not
    a list (e.g. a generator reading a file) are streamed through an Arrow file in that temp
    dir, never all in memory."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # `.NAME.XXXX.tmp`: a run directory removes it on open if a kill left it behind
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        if isinstance(records, Sequence):
            dataset = to_hf_dataset(records)
        else:
            dataset = to_hf_dataset(records, arrow_file=tmp / "rows.arrow")
        dataset.save_to_disk(str(tmp / "data"))
        del dataset  # its memory map of rows.arrow, before the temp dir goes
        if directory.exists():
            shutil.rmtree(directory)
        (tmp / "data").rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


# the license ids the Hub accepts in a card (hub-docs `docs/hub/repositories-licenses.md`);
# anything else is refused before a file is written, not rejected later by the Hub
HUB_LICENSES = frozenset((
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd",
    "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0",
    "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0",
    "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
    "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl",
    "lgpl-2.1", "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl",
    "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql",
    "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2",
    "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other",
))  # fmt: skip


def check_license(license_id: str) -> str:
    """A license id the Hub accepts, or one line naming the nearest ones."""
    if license_id in HUB_LICENSES:
        return license_id
    import difflib

    near = difflib.get_close_matches(license_id.lower(), sorted(HUB_LICENSES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise UserError(
        f"--license {license_id!r}: not a Hub license id (e.g. apache-2.0, mit, cc-by-4.0, "
        f"other){hint}"
    )


ROWS_PER_SHARD = 100_000  # rows per Parquet file of an export (the Hub's viewer reads any)
LICENSE_DEFAULT = "other"


def _write_layout(
    records: list[Record], facts: dict[str, Any], target: Path, license_id: str, shard_rows: int
) -> None:
    """`data/train-0000i-of-0000n.parquet` and `README.md` (the card) into `target`."""
    from distillery.dataset_card import render_card

    (target / "data").mkdir(parents=True)
    dataset = to_hf_dataset(records)
    shards = max(1, -(-len(records) // shard_rows))
    for i in range(shards):
        part = dataset.shard(num_shards=shards, index=i, contiguous=True)
        part.to_parquet(str(target / "data" / f"train-{i:05d}-of-{shards:05d}.parquet"))
    (target / "README.md").write_text(render_card(facts, license_id), encoding="utf-8")


def _is_export(path: Path) -> bool:
    """A directory a previous export wrote (README.md and data/ only), safe to replace."""
    return {p.name for p in path.iterdir()} <= {"README.md", "data"}


def export_run(
    run_dir: str | Path,
    to: str,
    license_id: str = LICENSE_DEFAULT,
    shard_rows: int = ROWS_PER_SHARD,
    private: bool = False,
) -> str:
    """Write a run's rows (a filter run's kept rows, or a generate run's rows) in the Hub
    layout - Parquet shards under `data/` and a `README.md` card made from the run's own
    records - into the directory `to`, or push that same layout to `hub:OWNER/NAME` with
    `huggingface_hub` (token: HF_TOKEN). Returns where it went. A local target is written
    next to itself and swapped in, replacing only a previous export."""
    from distillery.dataset_card import card_facts, locate, read_records

    check_license(license_id)
    if shard_rows < 1:
        raise UserError(f"--rows-per-shard {shard_rows}: must be at least 1")
    files = locate(run_dir)
    records = read_records(files.rows)
    if not records:
        raise UserError(f"{files.rows}: no rows to export")
    facts = card_facts(files, records)
    if to.startswith("hub:"):
        return _push(to.removeprefix("hub:"), records, facts, license_id, shard_rows, private)
    target = Path(to)
    if target.exists() and not (target.is_dir() and _is_export(target)):
        raise UserError(
            f"--to {target}: exists and is not a previous export; choose a new directory"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_layout(records, facts, staging / "out", license_id, shard_rows)
        if target.exists():
            shutil.rmtree(target)
        (staging / "out").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def _push(
    repo_id: str,
    records: list[Record],
    facts: dict[str, Any],
    license_id: str,
    shard_rows: int,
    private: bool,
) -> str:
    """The local layout, uploaded as one commit to the dataset repo `repo_id` (created if
    missing). Needs the network and HF_TOKEN; not covered by the offline tests."""
    import os

    from huggingface_hub import HfApi

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise UserError("--to hub:...: set HF_TOKEN to a Hugging Face token with write access")
    if repo_id.count("/") != 1:
        raise UserError(f"--to hub:{repo_id}: expected hub:OWNER/NAME")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        _write_layout(records, facts, Path(tmp) / "out", license_id, shard_rows)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(Path(tmp) / "out"),
            commit_message=f"distillery export: {len(records):,} rows",
        )
    return f"https://huggingface.co/datasets/{repo_id}"
