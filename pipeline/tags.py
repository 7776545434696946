"""LLM tags on a row (Magpie's curation, Xu et al. 2024): written by `distillery generate`
into `Record.meta["tags"]`, read by the filter's `tags` step. The contract
(docs/records.md):

    meta.tags = {"task_category": str,
                 "input_quality": "very poor" | "poor" | "average" | "good" | "excellent",
                 "difficulty": "very easy" | "easy" | "medium" | "hard" | "very hard"}

A tag the tagger could not produce is left out (never filled with a default). The two
graded tags are ordinal scales, worst (or easiest) first. Neutral: imports no stage.
"""

from __future__ import annotations

from typing import Any, Literal

InputQuality = Literal["very poor", "poor", "average", "good", "excellent"]
Difficulty = Literal["very easy", "easy", "medium", "hard", "very hard"]

INPUT_QUALITY: tuple[str, ...] = ("very poor", "poor", "average", "good", "excellent")
DIFFICULTY: tuple[str, ...] = ("very easy", "easy", "medium", "hard", "very hard")
SCALES: dict[str, tuple[str, ...]] = {"input_quality": INPUT_QUALITY, "difficulty": DIFFICULTY}
TAG_KEYS = ("task_category", "input_quality", "difficulty")


def tags_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The row's tags (`meta["tags"]`), or {} when it has none."""
    tags = meta.get("tags")
    return tags if isinstance(tags, dict) else {}


def rank(tag: str, value: object) -> int | None:
    """The position of `value` on the tag's scale (0 = "very poor" / "very easy"), or None
    when it is not one of the scale's values."""
    scale = SCALES[tag]
    return scale.index(value) if isinstance(value, str) and value in scale else None
