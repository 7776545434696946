"""Benchmark decontamination: drop training rows that overlap evaluation items.

Eval sets are named by Hugging Face dataset id, `hf:NAME[:SPLIT[:FIELD]]` (loaded with
`datasets`; downloaded once, then read from the Hugging Face cache, e.g. `hf:google/IFEval`),
or are local files, `PATH[:FIELD]`. Rows are read in the sets' public formats: IFEval and
HumanEval (`prompt`), AlpacaEval and Alpaca-style GSM8K (`instruction`), GSM8K
(`question`), MT-Bench (`turns`, or `prompt` as a list: each turn an item); FIELD names
another field. A row is contaminated when it
shares `min_overlap` word n-grams with one eval item; an item shorter than n words matches
when it appears verbatim (normalised) in the row. So every verbatim item is caught.
`certificate` states the result per eval set (items checked, rows removed, method and
thresholds) for summary.json and the dataset card.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distillery.errors import UserError
from distillery.filter.config import DecontamConfig
from distillery.filter.dedup import normalise
from distillery.filter.rows import text_of, turns
from distillery.jsonl import iter_json_lines, read_text_utf8
from distillery.records import Drop, Record


@dataclass
class EvalItem:
    source: str
    index: int
    text: str


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        data = json.loads(read_text_utf8(path))
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON array")
        return [d for d in data if isinstance(d, dict)]
    return [obj for _, obj in iter_json_lines(path)]


def split_spec(spec: str) -> tuple[str, str]:
    """`--against` spec -> (source, field): `hf:NAME[:SPLIT]` and FIELD for a hub set, or a
    local path and FIELD (a path that exists as given has no field)."""
    if spec.startswith("hf:"):
        name, *rest = spec.removeprefix("hf:").split(":")
        split = rest[0] if rest and rest[0] else ""
        field = rest[1] if len(rest) > 1 else ""
        return "hf:" + name + (f":{split}" if split else ""), field
    if Path(spec).exists():
        return spec, ""
    path, _, field = spec.rpartition(":") if ":" in spec else (spec, "", "")
    return path, field


def _source_rows(spec: str, source: str) -> tuple[str, list[dict[str, Any]]]:
    """(name shown in evidence, rows) of one eval set."""
    if source.startswith("hf:"):
        from distillery.export import load_hf_dataset

        return source.removeprefix("hf:"), [dict(r) for r in load_hf_dataset(source)]
    path = Path(source)
    if not path.is_file():
        raise UserError(f"--against {spec}: no such file")
    return path.name, _rows(path)


def load_eval_sets(specs: list[str], fields: list[str]) -> list[EvalItem]:
    items: list[EvalItem] = []
    for spec in specs:
        source, field = split_spec(spec)
        name, rows = _source_rows(spec, source)
        wanted = [field] if field else fields
        found = 0
        for i, row in enumerate(rows):
            key = next((f for f in wanted if f in row), None)
            if key is None:
                continue
            value = row[key]
            texts = value if isinstance(value, list) else [value]
            for text in texts:
                if isinstance(text, str) and text.strip():
                    items.append(EvalItem(name, i, text))
                    found += 1
        if not found:
            raise UserError(f"--against {spec}: no rows with a text field ({', '.join(wanted)})")
    return items


class NgramIndex:
    def __init__(self, items: list[EvalItem], n: int) -> None:
        self.items, self.n = items, n
        self.grams: dict[tuple[str, ...], list[int]] = {}
        self.short: list[tuple[str, int]] = []  # items shorter than n words: verbatim match
        for idx, item in enumerate(items):
            words = normalise(item.text).split()
            if len(words) < n:
                if words:
                    self.short.append((" " + " ".join(words) + " ", idx))
                continue
            for g in {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}:
                self.grams.setdefault(g, []).append(idx)

    def check(self, text: str, min_overlap: int) -> Drop | None:
        words = normalise(text).split()
        hits: dict[int, int] = {}
        example: dict[int, tuple[str, ...]] = {}
        # distinct n-grams in text order (a set's order changes with PYTHONHASHSEED, and with it
        # the example n-gram of the evidence)
        for g in dict.fromkeys(
            tuple(words[i : i + self.n]) for i in range(len(words) - self.n + 1)
        ):
            for idx in self.grams.get(g, ()):
                hits[idx] = hits.get(idx, 0) + 1
                example.setdefault(idx, g)
        padded = " " + " ".join(words) + " "
        for needle, idx in self.short:
            if needle in padded:
                hits[idx] = max(hits.get(idx, 0), min_overlap)
                example.setdefault(idx, tuple(needle.split()))
        if not hits:
            return None
        idx, count = max(hits.items(), key=lambda kv: (kv[1], -kv[0]))
        if count < min_overlap:
            return None
        item = self.items[idx]
        return Drop(
            rule="decontam_ngram",
            reason=f"shares {count} {self.n}-gram(s) with {item.source}[{item.index}]",
            evidence={
                "eval_source": item.source,
                "eval_index": item.index,
                "eval_text": item.text[:300],
                "shared_ngrams": count,
                "example_ngram": " ".join(example[idx]),
            },
        )


def on_turn(drop: Drop, turn: int) -> Drop:
    """`drop` as found on turn `turn` (1 = the first user turn) of a multi-turn row."""
    return Drop(
        rule=drop.rule,
        reason=f"turn {turn}: {drop.reason}",
        evidence={"turn": turn, **drop.evidence},
    )


def check_row(index: NgramIndex, record: Record, min_overlap: int) -> Drop | None:
    """The n-gram check of one row: its instruction and response together, or, for a
    multi-turn row, each user turn with its answer in order (the first turn that matches)."""
    pairs = turns(record)
    if len(pairs) == 1:
        return index.check(text_of(record, "instruction+response"), min_overlap)
    for k, (user, answer) in enumerate(pairs, 1):
        drop = index.check(f"{user}\n{answer}", min_overlap)
        if drop:
            return on_turn(drop, k)
    return None


def embedding_drops(
    evals: list[EvalItem],
    sims: np.ndarray,
    ids: np.ndarray,
    queries: list[tuple[int, int | None]],
    threshold: float,
) -> dict[int, Drop]:
    """Rows whose most similar query (its instruction, or each user turn of a multi-turn row:
    `queries[q]` is (row, turn or None)) reaches `threshold` cosine to an eval item (`sims`,
    `ids`: each query's best item), with the item and the turn as evidence."""
    best: dict[int, tuple[Any, int, int | None]] = {}  # sim stays numpy's float32
    for (row, turn), sim, j in zip(queries, sims[:, 0], ids[:, 0], strict=True):
        if row not in best or sim > best[row][0]:
            best[row] = (sim, int(j), turn)
    drops: dict[int, Drop] = {}
    for row, (sim, j, turn) in best.items():
        if sim < threshold:
            continue
        item = evals[j]
        drop = Drop(
            rule="decontam_embedding",
            reason=f"cosine {sim:.3f} to {item.source}[{item.index}]",
            evidence={
                "eval_source": item.source,
                "eval_index": item.index,
                "eval_text": item.text[:300],
                "cosine": round(float(sim), 4),
            },
        )
        drops[row] = drop if turn is None else on_turn(drop, turn)
    return drops


def eval_set_name(spec: str) -> str:
    """The name an eval set's items carry (`EvalItem.source`, `evidence.eval_source`)."""
    source, _ = split_spec(spec)
    return source.removeprefix("hf:") if source.startswith("hf:") else Path(source).name


def certificate(
    config: DecontamConfig,
    against: list[str],
    evals: list[EvalItem] | None,
    drops: Iterable[Drop],
    rows_checked: int | None,
    embedding_model: str | None,
    multi_turn: bool = False,
) -> dict[str, Any]:
    """The decontamination result as a contamination certificate: the method and its
    thresholds, the rows checked, and per eval set the items checked (None when the set
    could not be read) and the rows removed for matching it, by rule. `multi_turn`: the rows
    included conversations (checked turn by turn)."""
    per_set: dict[str, Counter[str]] = {eval_set_name(s): Counter() for s in against}
    for drop in drops:
        if drop.rule.startswith("decontam"):
            per_set.setdefault(str(drop.evidence.get("eval_source")), Counter())[drop.rule] += 1
    items = Counter(e.source for e in evals) if evals is not None else None
    embedding = config.embedding_threshold is not None
    return {
        "method": "word n-gram overlap" + (" + embedding cosine" if embedding else ""),
        "normalisation": "NFKC, lower case, punctuation as space (distillery.filter.dedup.normalise)",
        "text_checked": "instruction + response of each row"
        + ("; each user turn with its answer in a multi-turn row" if multi_turn else ""),
        "ngram": config.ngram,
        "min_overlap": config.min_overlap,
        "short_items": f"eval items under {config.ngram} words match when they appear verbatim",
        "embedding_threshold": config.embedding_threshold,
        "embedding_model": embedding_model if embedding else None,
        "rows_checked": rows_checked,
        "benchmarks": [
            {
                "spec": next((s for s in against if eval_set_name(s) == name), name),
                "name": name,
                "items_checked": items.get(name, 0) if items is not None else None,
                "matches_removed": sum(rules.values()),
                "by_rule": dict(rules),
            }
            for name, rules in per_set.items()
        ],
    }
