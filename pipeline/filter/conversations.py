"""The filter's passes over multi-turn rows (more than one user turn), beside the per-row
steps in `run.Run`:

- `dedup_whole`: after the near or semantic step has compared first user turns (as it
  compares the instructions of single-turn rows), the multi-turn rows still kept are compared
  as whole conversations (`rows.conversation_text`: every user and assistant turn, the
  system turn left out); a duplicate is dropped with the step's rule plus `_conversation`
  (`near_duplicate_conversation`, `semantic_duplicate_conversation`). Semantic dedup embeds
  each message alone and compares the mean, so a long conversation is not cut at the model's
  input length. Exact dedup has no second pass: two conversations equal as a whole share
  their first turn, so the first pass has already dropped one of them.
- `turn_queries`: what the embedding decontamination compares with the eval sets: a
  single-turn row's instruction, and every user turn of a multi-turn row.
- `judge_row`: the judge's view of a row: a conversation with more than one assistant turn
  is judged whole (`judge_conversation`), any other row as an (instruction, response) pair.
- `turn_counts`: how many rows have how many user turns, for summary.json.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from distillery.filter import dedup
from distillery.filter.rows import conversation_text, is_multi_turn, text_of, turns
from distillery.judging import JudgeRow
from distillery.records import Record

if TYPE_CHECKING:
    from distillery.filter.run import Run

MEASURES = {"near": "jaccard", "semantic": "cosine"}


def _mean_embeddings(run: Run, idx: list[int]) -> np.ndarray:
    """Per row, the mean of its user and assistant messages' embeddings."""
    owner = [pos for pos, i in enumerate(idx) for m in run.rows[i].messages if m.role != "system"]
    texts = [m.content for i in idx for m in run.rows[i].messages if m.role != "system"]
    vecs = run.embed_texts(texts)
    out = np.zeros((len(idx), vecs.shape[1]), np.float32)
    np.add.at(out, np.asarray(owner), vecs)
    return out / np.bincount(owner, minlength=len(idx))[:, None].astype(np.float32)


def dedup_whole(run: Run, step: str, rule: str) -> None:
    """The whole-conversation pass of dedup step `step` over the multi-turn rows still kept."""
    idx = [i for i in run.alive if i not in run.drops and is_multi_turn(run.rows[i])]
    if step not in MEASURES or len(idx) < 2:
        return
    if step == "near":
        c = run.config.near
        texts = [conversation_text(run.rows[i]) for i in idx]
        edges, stats = dedup.near_edges(
            texts, c.threshold, c.shingle_size, c.num_perm, c.lsh_threshold, c.max_bucket, c.method
        )
        run.near_stats = {**run.near_stats, "conversation": stats}
    else:
        s = run.config.semantic
        edges, _ = dedup.semantic_edges(_mean_embeddings(run, idx), s.threshold, s.neighbours)
    subset = [run.rows[i] for i in idx]
    for local, drop in dedup.resolve(subset, edges, f"{rule}_conversation", MEASURES[step]).items():
        run.drop(idx[local], drop, step)


def turn_queries(run: Run, idx: list[int]) -> tuple[list[tuple[int, int | None]], np.ndarray]:
    """(row, turn) per query vector, and the vectors: every row's instruction (turn 1 of a
    multi-turn row, None for a single-turn one), then each later user turn."""
    queries: list[tuple[int, int | None]] = [
        (i, 1 if is_multi_turn(run.rows[i]) else None) for i in idx
    ]
    later = [
        (i, k, user)
        for i in idx
        if is_multi_turn(run.rows[i])
        for k, (user, _) in enumerate(turns(run.rows[i]), 1)
        if k > 1
    ]
    vecs = run.embeddings(idx)
    if later:
        queries += [(i, k) for i, k, _ in later]
        vecs = np.concatenate([vecs, run.embed_texts([user for _, _, user in later])])
    return queries, vecs


def judge_row(record: Record) -> JudgeRow:
    """A conversation with more than one assistant turn, whole; else the first user turn and
    the (last) response, as single-turn rows always were."""
    if sum(m.role == "assistant" for m in record.messages) > 1:
        system = record.messages[0].content if record.messages[0].role == "system" else ""
        return JudgeRow(record.id, turns=tuple(turns(record)), system_prompt=system)
    return JudgeRow(record.id, text_of(record, "instruction"), record.response or "")


def turn_counts(rows: list[Record]) -> dict[str, int]:
    """{number of user turns: rows}, fewest turns first."""
    counts = Counter(len(turns(r)) for r in rows)
    return {str(n): counts[n] for n in sorted(counts)}
