"""Global best-fit-decreasing packing.

All examples are packed at once (not per `map` batch): longest first, each into the bin
whose remaining space is the smallest that still fits it (bins kept in a sorted list, so
each placement is a binary search). A packed row carries `seq_lengths`. Training feeds
packed rows through TRL's padding-free collator, which restarts `position_ids` at 0 for
every example and masks the label at each example's first position (no example learns to
predict its first token from its neighbour's last). With no `attention_mask` and
`use_cache=False`, transformers derives a block-diagonal mask from those position ids
(eager and SDPA; flash-attention takes the sequence boundaries directly), so examples never
attend to each other - the tests check logits against each example run alone.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Packed:
    rows: list[list[int]]  # example indices per packed row
    fill: float  # tokens / (rows * max_length)


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> Packed:
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining space, bin index), sorted
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens > capacity {capacity}")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, b = free.pop(k)
            bins[b].append(i)
            bisect.insort(free, (space - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
    total = sum(lengths)
    return Packed([sorted(b) for b in bins], total / (len(bins) * capacity) if bins else 0.0)


def pack_examples(
    examples: Sequence[dict[str, list[int]]], capacity: int
) -> tuple[list[dict[str, list[int]]], float]:
    """Examples with `input_ids` and `labels` -> packed rows with `seq_lengths`."""
    packed = best_fit_decreasing([len(e["input_ids"]) for e in examples], capacity)
    rows = []
    for members in packed.rows:
        ids: list[int] = []
        labels: list[int] = []
        lengths: list[int] = []
        for i in members:
            ex = examples[i]
            ids += ex["input_ids"]
            labels += ex["labels"]
            lengths.append(len(ex["input_ids"]))
        rows.append({"input_ids": ids, "labels": labels, "seq_lengths": lengths})
    return rows, packed.fill
