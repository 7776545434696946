"""Seed tasks: schema, loading (JSONL file, directory of JSONL files, or a HF dataset) and
`distillery seeds validate`.

A seed file has one task per line:
`{"id", "category", "instruction", "instances": [{"input", "output"}], "is_classification"}`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.export import iter_hf_rows
from distillery.jsonl import iter_json_lines, validation_summary
from distillery.resources import seeds_path
from distillery.textsim import RougePool, rouge_tokens
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field("", description="the task's input; empty when the instruction stands alone")
    output: str = Field(min_length=1, description="the ideal answer")


class SeedTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    category: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    instances: list[Instance] = Field(min_length=1)
    is_classification: bool


@dataclass
class LoadedSeed:
    task: SeedTask
    where: str  # "file:line"


def seed_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise UserError(f"{path}: no .jsonl seed files in this directory")
        return files
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    return [path]


def _sources(path: str | Path) -> list[tuple[str, Iterator[tuple[str, dict[str, Any]]]]]:
    """(name, rows) per source: each seed file, or the one `hf:` dataset."""
    if isinstance(path, str) and path.startswith("hf:"):
        return [(path, iter_hf_rows(path))]
    return [(str(file), _file_rows(file)) for file in seed_files(Path(seeds_path(path)))]


def _file_rows(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for lineno, obj in iter_json_lines(file):
        yield f"{file}:{lineno}", obj


def collect_seeds(path: str | Path) -> tuple[list[LoadedSeed], list[str]]:
    """Every valid seed with its location, and one line per problem: every row that fails
    the schema, in every file (a file whose bytes are not JSON lines stops at that line)."""
    seeds: list[LoadedSeed] = []
    errors: list[str] = []
    for _, rows in _sources(path):
        try:
            for where, obj in rows:
                try:
                    seeds.append(LoadedSeed(SeedTask.model_validate(obj), where))
                except ValidationError as exc:
                    errors.append(f"{where}: {validation_summary(exc)}")
        except UserError as exc:  # malformed JSON or UTF-8: the rest of that file is unread
            errors.append(str(exc))
    if not seeds and not errors:
        errors.append(f"{path}: no seed tasks (the seed file is empty)")
    return seeds, errors


def load_seeds(path: str | Path) -> list[SeedTask]:
    """All seeds, after the same checks as `seeds validate`: a problem raises `UserError`
    naming the first and how many more `distillery seeds validate` would list."""
    report = validate_seeds(path)
    if report.errors:
        more = len(report.errors) - 1
        hint = f" (and {more} more: see `distillery seeds validate {path}`)" if more else ""
        raise UserError(report.errors[0] + hint)
    return [s.task for s in report.seeds]


@dataclass
class SeedReport:
    seeds: list[LoadedSeed] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def per_category(self) -> Counter[str]:
        return Counter(s.task.category for s in self.seeds)


def validate_seeds(
    path: str | Path, near_duplicate_rouge_l: float = 0.7, min_categories: int = 1
) -> SeedReport:
    """Schema, unique ids, no exact or near-duplicate instructions, category coverage.

    Near-duplicates are instruction pairs with ROUGE-L F1 >= `near_duplicate_rouge_l`, the
    same test Self-Instruct uses to keep its pool diverse. Every problem of every file is
    reported (a path that does not exist, or holds no seed file, raises `UserError`).
    """
    report = SeedReport()
    report.seeds, report.errors = collect_seeds(path)
    first_seen: dict[str, str] = {}
    exact: dict[str, str] = {}
    pool = RougePool(near_duplicate_rouge_l)
    for seed in report.seeds:
        task = seed.task
        if task.id in first_seen:
            report.errors.append(
                f"{seed.where}: duplicate id {task.id!r} (first at {first_seen[task.id]})"
            )
        first_seen.setdefault(task.id, seed.where)
        norm = " ".join(task.instruction.lower().split())
        if norm in exact:
            report.errors.append(f"{seed.where}: instruction duplicates {exact[norm]}")
            exact.setdefault(norm, seed.where)
            pool.add(rouge_tokens(task.instruction))
            continue
        exact[norm] = seed.where
        tokens = rouge_tokens(task.instruction)
        score, j = pool.best_match(tokens)
        if j >= 0 and score >= near_duplicate_rouge_l:
            other = report.seeds[j]
            report.errors.append(
                f"{seed.where}: instruction is a near-duplicate of {other.where} "
                f"(ROUGE-L {score:.2f} >= {near_duplicate_rouge_l})"
            )
        pool.add(tokens)
    n_categories = len(report.per_category)
    if report.seeds and n_categories < min_categories:
        report.errors.append(
            f"{path}: {n_categories} categories, at least {min_categories} required"
        )
    return report
