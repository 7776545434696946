"""The `tags` step: keep or drop rows by their LLM tags (`meta.tags`, `distillery.tags`:
task category, input quality, difficulty), as Magpie's curation does (e.g. keep input
quality >= good). `check` returns the first rule a row breaks, as a `Drop` with the tag, its
value and the bound, or None. Rules: `tag_missing` (a tag a configured rule needs is absent,
with `tags.untagged: drop`), `tag_invalid` (a value off the tag's scale), `tag_input_quality`,
`tag_difficulty`, `tag_task_category`. A row without a tag a rule needs is kept with
`tags.untagged: keep` (the default: rows from other methods carry no tags)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from distillery.filter.config import TagsConfig
from distillery.records import Drop, Record
from distillery.tags import SCALES, TAG_KEYS, rank, tags_of


class TagRules:
    def __init__(self, config: TagsConfig) -> None:
        self.config = config

    def bounds(self) -> list[tuple[str, str | None, str | None]]:
        """(graded tag, lowest value kept, highest value kept) for each configured bound."""
        c = self.config
        out: list[tuple[str, str | None, str | None]] = []
        if c.min_input_quality is not None:
            out.append(("input_quality", c.min_input_quality, None))
        if c.min_difficulty is not None or c.max_difficulty is not None:
            out.append(("difficulty", c.min_difficulty, c.max_difficulty))
        return out

    def check(self, row: Record) -> Drop | None:
        tags = tags_of(row.meta)
        for tag, low, high in self.bounds():
            if tag not in tags:
                drop = self._missing(tag)
                if drop:
                    return drop
                continue
            value = tags[tag]
            position = rank(tag, value)
            if position is None:
                return Drop(
                    rule="tag_invalid",
                    reason=f"{tag} {value!r} is not on its scale",
                    evidence={"tag": tag, "value": value, "scale": list(SCALES[tag])},
                )
            scale = SCALES[tag]
            lowest = scale.index(low) if low is not None else 0
            highest = scale.index(high) if high is not None else len(scale) - 1
            if not lowest <= position <= highest:
                return Drop(
                    rule=f"tag_{tag}",
                    reason=f"{tag} {value!r} outside {_range(low, high)}",
                    evidence={"tag": tag, "value": value, "min": low, "max": high},
                )
        return self._category(tags)

    def _category(self, tags: dict[str, Any]) -> Drop | None:
        wanted = self.config.task_categories
        if not wanted:
            return None
        if "task_category" not in tags:
            return self._missing("task_category")
        value = tags["task_category"]
        if value not in wanted:
            return Drop(
                rule="tag_task_category",
                reason=f"task_category {value!r} not in tags.task_categories",
                evidence={"tag": "task_category", "value": value, "kept": list(wanted)},
            )
        return None

    def _missing(self, tag: str) -> Drop | None:
        if self.config.untagged == "keep":
            return None
        return Drop(
            rule="tag_missing",
            reason=f"no {tag} tag (tags.untagged: drop)",
            evidence={"tag": tag},
        )


def _range(low: str | None, high: str | None) -> str:
    if high is None:
        return f">= {low!r}"
    if low is None:
        return f"<= {high!r}"
    return f"{low!r}..{high!r}"


def tag_counts(rows: Sequence[Record]) -> dict[str, dict[str, int]]:
    """Per tag, {value: rows} over the rows that carry it (graded tags in scale order, then
    any value off the scale; categories most frequent first); {} when no row has tags."""
    out: dict[str, dict[str, int]] = {}
    for tag in TAG_KEYS:
        counts = Counter(str(t[tag]) for r in rows if tag in (t := tags_of(r.meta)))
        if not counts:
            continue
        scale = SCALES.get(tag, ())
        order = sorted(counts, key=lambda v: (v not in scale, scale.index(v) if v in scale else 0,
                                              -counts[v], v))  # fmt: skip
        out[tag] = {v: counts[v] for v in order}
    return out
