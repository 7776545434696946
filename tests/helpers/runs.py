"""A small run in the demo's layout (`generate/` + `filter/`), written record by record so a
test knows every id, parent, drop and call in it:

    seed set --self_instruct--> ROOT (kept, judge 8)
        ROOT --evol:deepen--> CHILD (kept, judge 7) --evol:breadth--> GRANDCHILD (dropped:
            near_duplicate of SIBLING)
        ROOT --evol:add_constraints--> SIBLING (kept, judge 5)
    LEAK (self_instruct, dropped: decontam_ngram, matches ifeval_demo.jsonl[3])
    REJECTED (self_instruct candidate generate rejected: modality)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillery.records import Drop, LLMCall, Message, Record, Usage

ROOT, CHILD, GRANDCHILD, SIBLING = (
    "r00t0000000000aa",
    "c41d000000000bb1",
    "9c41d00000000cc2",
    "5ib0000000000dd3",
)
LEAK, REJECTED = "1eak000000000ee4", "4e1ec7ed00000ff5"
EVAL_TEXT = "Write a limerick about a cat who learns to code, in exactly five lines."


def _call(purpose: str, prompt: str, answer: str, tokens: tuple[int, int]) -> LLMCall:
    return LLMCall(
        model="fake",
        purpose=purpose,
        params={"temperature": 0.7, "max_tokens": 256},
        messages=[Message(role="user", content=prompt)],
        response=answer,
        finish_reason="stop",
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=0.00012),
        latency_s=0.01,
    )


def _row(rid: str, instruction: str, origin: str, parents: list[str], **extra: Any) -> Record:
    answer = f"A careful answer to: {instruction}"
    trace = [
        _call(
            origin,
            f"Seed tasks:\n1. Plan a picnic.\n2. Explain rainbows.\nWrite task for {rid}",
            instruction,
            (120, 20),
        ),
        _call("response", instruction, answer, (30, 40)),
    ]
    return Record(
        id=rid,
        instruction=instruction,
        messages=[
            Message(role="user", content=instruction),
            Message(role="assistant", content=answer),
        ],
        origin=origin,
        parent_ids=parents,
        round=2 if rid == GRANDCHILD else min(1, len(parents)),
        category="creative_writing",
        teacher="fake",
        trace=trace,
        demo=True,
        **extra,
    )


def _judged(row: Record, score: float) -> Record:
    judge = _call(
        "judge:quality", f"Rate this answer 1-10: {row.response}", f"Score: {score:g}", (80, 5)
    )
    return row.model_copy(update={"scores": {"judge": score}, "trace": [*row.trace, judge]})


def _write(path: Path, rows: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.model_dump_json() + "\n" for r in rows))


def write_demo_like_run(root: Path) -> Path:
    """root/generate (generated.jsonl, rejected.jsonl, manifest.json) and root/filter
    (kept.jsonl, dropped.jsonl, summary.json); returns root."""
    rows = {
        ROOT: _row(
            ROOT, "Write a haiku about autumn leaves falling on a quiet pond.", "self_instruct", []
        ),
        CHILD: _row(
            CHILD,
            "Write a haiku about autumn leaves on a pond, with a kigo for late autumn.",
            "evol:deepen",
            [ROOT],
        ),
        GRANDCHILD: _row(
            GRANDCHILD, "Write two haiku about winter frost on a pond.", "evol:breadth", [CHILD]
        ),
        SIBLING: _row(
            SIBLING,
            "Write a haiku about autumn leaves on a pond without the letter e.",
            "evol:add_constraints",
            [ROOT],
        ),
        LEAK: _row(LEAK, EVAL_TEXT, "self_instruct", []),
    }
    rejected = _row(REJECTED, "Draw a picture of a pond in autumn.", "self_instruct", [])
    rejected = rejected.model_copy(
        update={
            "dropped_by": Drop(rule="modality", reason="mentions 'draw'", evidence={"term": "draw"})
        }
    )
    _write(root / "generate" / "generated.jsonl", list(rows.values()))
    _write(root / "generate" / "rejected.jsonl", [rejected])
    (root / "generate" / "manifest.json").write_text(json.dumps({"rows": 5, "demo": True}))
    kept = [_judged(rows[ROOT], 8), _judged(rows[CHILD], 7), _judged(rows[SIBLING], 5)]
    near = Drop(
        rule="near_duplicate",
        reason=f"duplicate of {SIBLING} (cluster of 2)",
        evidence={
            "survivor_id": SIBLING,
            "survivor_instruction": rows[SIBLING].instruction,
            "jaccard": 0.81,
        },
    )
    leak = Drop(
        rule="decontam_ngram",
        reason="shares 1 8-gram(s) with ifeval_demo.jsonl[3]",
        evidence={
            "eval_source": "ifeval_demo.jsonl",
            "eval_index": 3,
            "eval_text": EVAL_TEXT,
            "shared_ngrams": 1,
        },
    )
    dropped = [
        rows[GRANDCHILD].model_copy(update={"dropped_by": near, "meta": {"filter_step": "near"}}),
        rows[LEAK].model_copy(update={"dropped_by": leak, "meta": {"filter_step": "decontam"}}),
    ]
    _write(root / "filter" / "kept.jsonl", kept)
    _write(root / "filter" / "dropped.jsonl", dropped)
    summary = {"input": str(root / "generate" / "generated.jsonl"), "rows_in": 5, "rows_kept": 3}
    (root / "filter" / "summary.json").write_text(json.dumps(summary))
    return root
