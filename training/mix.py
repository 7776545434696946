"""Training mixes: `data` as several 'messages' sources, each taken whole, by count or by
weight, so general instruction data or a replay set can train beside a distillery run.

What a source contributes, in conversations (`distillery.training.config.DataSource`):
`rows: N` exactly N, `weight: W` W times its rows left after the hold-out (rounded to the
nearest), neither every row once. A count above what is there repeats every row, then takes
a seeded sample of the rest. Per source, first `eval_fraction` of what it contributes (at most
its size; none below 10 rows, with eval_data set, or for --prepare-only) is held out by a
shuffle seeded by `seed`; then the training rows are drawn from the rest by a sample seeded
by `seed` and the source's path: the same config always trains on the same rows, and a
held-out row never trains.

Flows: `load_mix` reads the sources (only the rows it takes, for a dataset) into a `Mix`;
`prepare` counts tokens per source (`PrepStats.by_source`); `describe` gives the mix as used
(`data_mix` in prepared_stats.json and metrics.json); `prepare_eval` prepares each source's
held-out rows as its own eval set (a dict the Trainer evaluates one by one, token-weighted),
and `heldout_metrics` reads the per-source losses back and combines them into `eval_loss`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.training.config import DataSource, TrainConfig
from distillery.training.data import (
    PrepStats,
    checked_conversations,
    load_conversations,
    open_source,
    prepare,
)

Conversations = list[tuple[str, list[dict[str, Any]]]]


@dataclass
class Source:
    """One source as loaded: its rows held out and its training rows (repeats included)."""

    spec: DataSource
    name: str  # label in metrics.json and eval_split.jsonl
    key: str  # the name as a metric-key fragment: eval_{key}_loss in the log history
    available: int = 0  # rows in the source
    distinct: int = 0  # distinct rows among the training rows
    held_out: Conversations = field(default_factory=list)
    train: Conversations = field(default_factory=list)


@dataclass
class Mix:
    """The sources of `data`, loaded; `single` when `data` is one path (the original form)."""

    sources: list[Source]
    single: bool
    eval_data: Conversations = field(default_factory=list)  # config.eval_data's rows

    @property
    def train(self) -> Conversations:
        return [c for s in self.sources for c in s.train]

    @property
    def train_names(self) -> list[str]:
        return [s.name for s in self.sources for _ in s.train]

    @property
    def held_out(self) -> list[tuple[str, tuple[str, list[dict[str, Any]]]]]:
        """(source name, conversation) for every held-out row, for eval_split.jsonl."""
        return [(s.name, c) for s in self.sources for c in s.held_out]

    @property
    def has_eval(self) -> bool:
        return bool(self.eval_data or self.held_out)


def data_sources(config: TrainConfig) -> list[DataSource]:
    """`data` as a list of sources (one path is one source taken whole)."""
    if config.data is None:
        return []
    if isinstance(config.data, str):
        return [DataSource(path=config.data)]
    return list(config.data)


def _default_name(path: str) -> str:
    if path.startswith("hf:"):
        return path[3:].split(":")[0].split("@")[0].rstrip("/").split("/")[-1] or path
    p = Path(path)
    return (p.name if p.is_dir() else p.stem) or path


def source_names(specs: list[DataSource]) -> list[str]:
    """Each source's name: its own, else its file stem (dataset name for `hf:`), else -
    when two stems collide - its path as written. Names must be unique."""
    stems = [_default_name(s.path) for s in specs]
    names = [
        s.name or (stem if stems.count(stem) == 1 else s.path)
        for s, stem in zip(specs, stems, strict=True)
    ]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise UserError(f"data[{i}].name: {name!r} names two sources; give each its own name")
    return names


def _metric_keys(names: list[str]) -> list[str]:
    keys: list[str] = []
    for i, name in enumerate(names):
        key = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or f"source{i}"
        keys.append(key if key not in keys else f"{key}_{i}")
    return keys


def _indices(
    spec: DataSource, n: int, seed: int, fraction: float, label: str
) -> tuple[list[int], list[int]]:
    """(held-out, training) row indices of a source of n rows (see the module docstring)."""
    if spec.rows is not None:
        base = min(n, spec.rows)
    else:
        base = int(n * min(1.0, spec.weight)) if spec.weight is not None else n
    k = max(1, int(base * fraction)) if fraction and base >= 10 else 0
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = sorted(order[:k])
    taken = set(held)
    pool = [i for i in range(n) if i not in taken]
    if spec.rows is not None:
        target = spec.rows
    elif spec.weight is not None:
        target = int(spec.weight * len(pool) + 0.5)
    else:
        target = len(pool)
    if target < 1:
        raise UserError(
            f"{label}.weight: {spec.weight} x {len(pool)} rows of {spec.path} rounds to no row"
        )
    full, rest = divmod(target, len(pool))
    sample = random.Random(f"{seed}:{spec.path}").sample(pool, rest)
    return held, pool * full + sorted(sample)


def _read(
    spec: DataSource, label: str | None, taken: list[tuple[str, dict[str, Any]]] | None = None
) -> Any:
    """open_source (taken None) or the taken rows validated; a problem with a source of a list
    is prefixed with its key, `data[i].path`."""
    try:
        if taken is None:
            return open_source(spec.path)
        return checked_conversations(taken)
    except UserError as exc:
        if label is None:
            raise
        raise UserError(f"{label}.path: {exc}") from None


def _load_source(
    config: TrainConfig, spec: DataSource, fraction: float, label: str | None
) -> Source:
    n, take = _read(spec, label)
    if n == 0:
        raise UserError(
            f"{label}.path: {spec.path}: no examples" if label else f"{spec.path}: no examples"
        )
    held, train = _indices(spec, n, config.seed, fraction, label or "data")
    wanted = sorted(set(held) | set(train))
    rows = range(n) if len(wanted) == n else wanted
    loaded = dict(zip(rows, _read(spec, label, take(rows)), strict=True))
    source = Source(spec=spec, name="", key="", available=n, distinct=len(set(train)))
    source.held_out = [loaded[i] for i in held]
    source.train = [loaded[i] for i in train]
    return source


def load_mix(config: TrainConfig, prepare_only: bool) -> Mix:
    """Every source of `data`, split and sampled, and `eval_data`'s rows; a problem with a
    source of a list names it as `data[i]`."""
    specs = data_sources(config)
    single = isinstance(config.data, str)
    names = source_names(specs)
    fraction = 0.0 if (config.eval_data or prepare_only) else config.eval_fraction
    sources = []
    for i, (spec, name, key) in enumerate(zip(specs, names, _metric_keys(names), strict=True)):
        source = _load_source(config, spec, fraction, None if single else f"data[{i}]")
        source.name, source.key = name, key
        sources.append(source)
    eval_rows = load_conversations(config.eval_data) if config.eval_data else []
    return Mix(sources=sources, single=single, eval_data=eval_rows)


def prepare_eval(
    config: TrainConfig, mix: Mix, tokenizer: Any, template: str | None, end: Any
) -> list[dict[str, Any]] | dict[str, list[dict[str, Any]]] | None:
    """Held-out rows prepared for the Trainer: one list (eval_data, or a single source), or
    one list per source keyed by its metric key (each source evaluated on its own)."""

    def rows(conversations: Conversations) -> list[dict[str, Any]]:
        return prepare(config, conversations, tokenizer, template, end)[0]

    if mix.eval_data:
        return rows(mix.eval_data)
    held = [s for s in mix.sources if s.held_out]
    if not held:
        return None
    if len(held) == 1 and len(mix.sources) == 1:
        return rows(held[0].held_out)
    return {s.key: rows(s.held_out) for s in held}


def describe(mix: Mix, stats: PrepStats) -> list[dict[str, Any]]:
    """The mix as used, one entry per source: what was asked (rows / weight), what the source
    holds, what trained (conversations, distinct rows, examples, tokens, supervised tokens per
    pass over the data, and each as a share of the whole) and what was held out."""
    total_conv = sum(len(s.train) for s in mix.sources) or 1
    total_sup = stats.supervised_tokens or 1
    out = []
    for s in mix.sources:
        counts = stats.by_source.get(s.name, {})
        supervised = counts.get("supervised_tokens", 0)
        out.append(
            {
                "name": s.name,
                "path": s.spec.path,
                "rows": s.spec.rows,
                "weight": s.spec.weight,
                "available": s.available,
                "held_out": len(s.held_out),
                "conversations": len(s.train),
                "distinct_conversations": s.distinct,
                "examples": counts.get("examples", 0),
                "dropped_empty": counts.get("dropped_empty", 0),
                "tokens": counts.get("tokens", 0),
                "supervised_tokens": supervised,
                "share_conversations": round(len(s.train) / total_conv, 4),
                "share_supervised_tokens": round(supervised / total_sup, 4),
                "eval_key": s.key,
            }
        )
    return out


def heldout_metrics(evaluated: dict[str, float], data_mix: list[dict[str, Any]]) -> dict[str, Any]:
    """eval_loss and eval_supervised_tokens from `trainer.evaluate()`; for per-source eval
    sets, each source's loss goes into its `data_mix` entry (eval_loss, eval_supervised_tokens)
    and `eval_loss_by_source`, and eval_loss is their token-weighted mean - the loss over
    every held-out supervised token, as for one eval set."""
    if "eval_loss" in evaluated:
        if len(data_mix) == 1 and data_mix[0]["held_out"]:  # held out from the one source
            data_mix[0]["eval_loss"] = evaluated["eval_loss"]
            data_mix[0]["eval_supervised_tokens"] = evaluated.get("eval_supervised_tokens")
        return {
            "eval_loss": evaluated["eval_loss"],
            "eval_supervised_tokens": evaluated.get("eval_supervised_tokens"),
        }
    nll, tokens, by_source = 0.0, 0, {}
    for entry in data_mix:
        loss = evaluated.get(f"eval_{entry['eval_key']}_loss")
        n = evaluated.get(f"eval_{entry['eval_key']}_supervised_tokens")
        if loss is None or not n:
            continue
        entry["eval_loss"], entry["eval_supervised_tokens"] = loss, int(n)
        by_source[entry["name"]] = loss
        nll += loss * n
        tokens += int(n)
    return {
        "eval_loss": nll / tokens if tokens else None,
        "eval_supervised_tokens": tokens,
        "eval_loss_by_source": by_source,
    }


def prepare_train(
    config: TrainConfig, mix: Mix, tokenizer: Any, template: str | None, end: Any
) -> tuple[list[dict[str, Any]], PrepStats]:
    """The mix's training rows, prepared; the stats carry the mix as used (`data_mix`)."""
    rows, stats = prepare(config, mix.train, tokenizer, template, end, source_of=mix.train_names)
    stats.data_mix = describe(mix, stats)
    return rows, stats
