"""What the filter's `summary.json` and `report.html` say about rows, counted one row at a time
so that the rows themselves never need to be held: `RowStats.add(row, drop)` per row in input
order (`drop` None: kept), `RowStats.merge(other)` to join partial counts (e.g. one per block,
counted where the block lives) in input order. Dict orders are those of one pass over the
rows: a `Counter` keeps its keys in order of first appearance, and `merge` appends the keys
`other` saw first after those of `self`.

`sample_plan` picks the report's sampled rows from counts alone: which k-th kept row and which
k-th dropped row of each rule, exactly the rows `random.Random(seed).sample` would pick from the
full lists (it draws indices from the length only).
"""

from __future__ import annotations

import random
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import repeat

from distillery.filter.rows import is_multi_turn, turns
from distillery.records import Drop, Record
from distillery.tags import SCALES, TAG_KEYS, tags_of

DROPPED_PER_RULE = 5  # dropped rows shown per rule in the report
KEPT_SHOWN = 5  # kept rows shown in the report


@dataclass
class Side:
    """The rows on one side of the filter (every input row, or the kept ones)."""

    tokens: array[int] = field(default_factory=lambda: array("I"))  # response words, row order
    categories: Counter[str] = field(default_factory=Counter)  # "(none)" for no category
    turns: Counter[int] = field(default_factory=Counter)  # user turns per row
    tags: dict[str, Counter[str]] = field(default_factory=dict)  # {tag: {value: rows}}

    def add(self, row: Record) -> None:
        self.tokens.append(len((row.response or "").split()))
        self.categories[row.category or "(none)"] += 1
        self.turns[len(turns(row))] += 1
        found = tags_of(row.meta)
        for tag in TAG_KEYS:
            if tag in found:
                self.tags.setdefault(tag, Counter())[str(found[tag])] += 1

    def merge(self, other: Side) -> None:
        self.tokens.extend(other.tokens)
        self.categories.update(other.categories)
        self.turns.update(other.turns)
        for tag, counts in other.tags.items():
            self.tags.setdefault(tag, Counter()).update(counts)

    def turn_counts(self) -> dict[str, int]:
        """{user turns: rows}, fewest turns first (`conversations.turn_counts`)."""
        return {str(n): self.turns[n] for n in sorted(self.turns)}

    def tag_counts(self) -> dict[str, dict[str, int]]:
        """Per tag, {value: rows}: graded tags in scale order, then values off the scale;
        categories most frequent first (`tag_rules.tag_counts`)."""
        out: dict[str, dict[str, int]] = {}
        for tag in TAG_KEYS:
            counts = self.tags.get(tag)
            if not counts:
                continue
            scale = SCALES.get(tag, ())
            order = sorted(counts, key=lambda v: (v not in scale, scale.index(v) if v in scale
                                                  else 0, -counts[v], v))  # fmt: skip
            out[tag] = {v: counts[v] for v in order}
        return out


@dataclass
class Survival:
    """Rows in and rows kept per group, for the report's survival tables: `origin` (every
    evolved row together), `operation` (evolved rows by `evol:OPERATION`) and `round`."""

    seen: dict[str, Counter[str]] = field(
        default_factory=lambda: {"origin": Counter(), "operation": Counter(), "round": Counter()}
    )
    kept: dict[str, Counter[str]] = field(
        default_factory=lambda: {"origin": Counter(), "operation": Counter(), "round": Counter()}
    )

    def add(self, row: Record, kept: bool) -> None:
        evolved = row.origin[:5] == "evol:"
        names = {"origin": "evolved (all operations)" if evolved else row.origin}
        if evolved:
            names["operation"] = row.origin.split(":", 1)[1]
        names["round"] = str(row.round)
        for key, name in names.items():
            self.seen[key][name] += 1
            self.kept[key][name] += kept

    def merge(self, other: Survival) -> None:
        for key in self.seen:
            self.seen[key].update(other.seen[key])
            self.kept[key].update(other.kept[key])


@dataclass
class RowStats:
    """Everything summary.json and the report count over rows; picklable, so partial counts
    can be made where the rows are and merged in input order."""

    before: Side = field(default_factory=Side)
    after: Side = field(default_factory=Side)
    rows_in: int = 0
    rows_kept: int = 0
    demo: bool = False  # any row is a demo row
    multi_turn: bool = False  # any row has more than one user turn
    dropped_by_rule: Counter[str] = field(default_factory=Counter)
    decontam: Counter[tuple[str, str]] = field(default_factory=Counter)  # (eval set, rule)
    survival: Survival = field(default_factory=Survival)

    @property
    def rows_dropped(self) -> int:
        return self.rows_in - self.rows_kept

    def add(self, row: Record, drop: Drop | None) -> None:
        """Count one row; `drop` None means it was kept."""
        self.rows_in += 1
        self.demo = self.demo or row.demo
        self.multi_turn = self.multi_turn or is_multi_turn(row)
        self.before.add(row)
        self.survival.add(row, drop is None)
        if drop is None:
            self.rows_kept += 1
            self.after.add(row)
            return
        self.dropped_by_rule[drop.rule] += 1
        if drop.rule.startswith("decontam"):
            self.decontam[(str(drop.evidence.get("eval_source")), drop.rule)] += 1

    def merge(self, other: RowStats) -> RowStats:
        """Add `other`'s counts, its rows taken to come after this one's; returns self."""
        self.rows_in += other.rows_in
        self.rows_kept += other.rows_kept
        self.demo = self.demo or other.demo
        self.multi_turn = self.multi_turn or other.multi_turn
        self.before.merge(other.before)
        self.after.merge(other.after)
        self.dropped_by_rule.update(other.dropped_by_rule)
        self.decontam.update(other.decontam)
        self.survival.merge(other.survival)
        return self

    def decontam_drops(self) -> Iterator[Drop]:
        """The decontam drops as `decontam.certificate` counts them (rule and eval set only),
        in the order they were seen."""
        for (source, rule), n in self.decontam.items():
            yield from repeat(Drop(rule=rule, evidence={"eval_source": source}), n)


@dataclass(frozen=True)
class SamplePlan:
    """The rows the report shows, by position: `kept`, the k-th kept rows in the order shown;
    `dropped`, per rule (sorted by name), the k-th dropped rows of that rule in that order."""

    kept: tuple[int, ...]
    dropped: dict[str, tuple[int, ...]]


def sample_plan(seed: int, n_kept: int, dropped_by_rule: Mapping[str, int]) -> SamplePlan:
    """The positions `random.Random(seed).sample` picks: up to `DROPPED_PER_RULE` dropped rows
    per rule from one generator in sorted-rule order, and up to `KEPT_SHOWN` kept rows from a
    fresh one. `sample` uses only the population's length, so a `range` picks the same."""
    rng = random.Random(seed)
    dropped = {
        rule: tuple(rng.sample(range(n), min(DROPPED_PER_RULE, n)))
        for rule, n in sorted(dropped_by_rule.items())
    }
    kept = tuple(random.Random(seed).sample(range(n_kept), min(KEPT_SHOWN, n_kept)))
    return SamplePlan(kept, dropped)
