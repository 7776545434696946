"""Evol-Instruct (Xu et al., 2023) with the paper's elimination step, and the responder.

Each round, every instruction on the frontier is rewritten by one operation drawn with the
configured weights: five in-depth operations (add constraints, deepen, concretize,
increase reasoning steps, complicate the input) or in-breadth evolution. An evolution is
eliminated when (1) the teacher judges it equal to its parent (no information gain),
(2) its answer says "sorry" in under 80 words, (3) its answer is only punctuation and stop
words, or (4) it leaks the rewriting scaffold. Survivors move on to the next round; an
eliminated evolution's parent goes back on the frontier to be evolved again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from distillery import calls
from distillery.generate.context import GenContext
from distillery.generate.filters import (
    is_sorry_answer,
    leaked_scaffold,
    only_punctuation_and_stop_words,
)
from distillery.parsing import ParseFailure
from distillery.prompts import render
from distillery.records import Drop, LLMCall, content_id
from distillery.teacher.jobs import JobItem
from distillery.teacher.types import CallResult


@dataclass
class Answered:
    """An instruction with its answer, ready to become a record."""

    id: str
    instruction: str
    input: str
    origin: str
    response: str
    category: str | None = None
    parent_ids: list[str] = field(default_factory=list)
    round: int = 0
    trace: list[LLMCall] = field(default_factory=list)
    template_name: str = ""
    meta: dict[str, object] = field(default_factory=dict)


def user_text(instruction: str, input: str) -> str:
    return render("user_turn", instruction=instruction, input=input).text


def system_template(ctx: GenContext, category: str | None) -> str | None:
    """The system prompt's template for a row of `category` (`responses` config), if any."""
    cfg = ctx.config.responses
    if category is not None and category in cfg.system_templates:
        return cfg.system_templates[category]
    if category is not None and category in cfg.step_by_step_categories:
        return cfg.step_by_step_template
    return cfg.system_template or None


async def answer(
    ctx: GenContext, stage: str, rows: list[tuple[str, str, str, str | None]]
) -> dict[str, CallResult]:
    """Responses for (id, instruction, input, category) rows, through the response teacher."""
    items = [
        JobItem(item_id, calls.RESPONSE.request(
            system=system_template(ctx, category), instruction=instruction, input=input
        ))
        for item_id, instruction, input, category in rows
    ]  # fmt: skip
    return await ctx.call(stage, items)


def _pick_operation(ctx: GenContext, rng: random.Random) -> str:
    ops = [(op, w) for op, w in ctx.config.evol.operations.items() if w > 0]
    return rng.choices([op for op, _ in ops], weights=[w for _, w in ops])[0]


async def evolve(ctx: GenContext, base: list[Answered]) -> list[Answered]:
    """Run the configured rounds; returns the surviving evolutions (base rows not included)."""
    ev = ctx.config.evol
    frontier = list(base)
    survivors: list[Answered] = []
    stop_words = set(ev.stop_words)
    for rnd in range(1, ev.rounds + 1):
        if not frontier:
            break
        items, planned = [], {}
        for parent in frontier:
            rng = random.Random(f"{ctx.config.seed}:evol:{rnd}:{parent.id}")
            op = _pick_operation(ctx, rng)
            prompt = user_text(parent.instruction, parent.input)
            if op == "breadth":
                request = calls.EVOL[op].request(prompt=prompt)
            else:
                request = calls.EVOL[op].request(
                    prompt=prompt,
                    min_added_words=ev.min_added_words,
                    max_added_words=ev.max_added_words,
                )
            items.append(JobItem(parent.id, request))
            planned[parent.id] = (parent, op, prompt)
        rewrites = await ctx.call(f"evol_r{rnd}", items)

        candidates: list[
            tuple[Answered, str, str, str, list[LLMCall]]
        ] = []  # parent, op, child id, text, trace
        next_frontier: list[Answered] = []
        for item in items:
            parent, op, prompt = planned[item.id]
            row = rewrites[item.id]
            trace = [row.trace]
            try:
                text = calls.EVOL[op].parsed(row)
            except ParseFailure as exc:
                _eliminate(
                    ctx,
                    rnd,
                    parent,
                    op,
                    "",
                    Drop(rule="unparsable_evolution", reason=str(exc)),
                    trace,
                    next_frontier,
                )
                continue
            leak = leaked_scaffold(text, ev.scaffold_phrases)
            if leak is not None:
                drop = Drop(
                    rule="leaked_scaffold", reason=f"contains {leak!r}", evidence={"phrase": leak}
                )
                _eliminate(ctx, rnd, parent, op, text, drop, trace, next_frontier)
                continue
            candidates.append((parent, op, content_id(f"evol:{op}", parent.id, text), text, trace))

        if ev.equality_check and candidates:
            eq_items = []
            for parent, _, child_id, text, _ in candidates:
                request = calls.EVOL_EQUALITY.request(
                    first=user_text(parent.instruction, parent.input), second=text
                )
                eq_items.append(JobItem(child_id, request))
            verdicts = await ctx.call(f"equality_r{rnd}", eq_items)
            kept = []
            for parent, op, child_id, text, trace in candidates:
                v = verdicts[child_id]
                trace = [*trace, v.trace]
                try:
                    equal = calls.EVOL_EQUALITY.parsed(v)
                except ParseFailure as exc:
                    _eliminate(
                        ctx,
                        rnd,
                        parent,
                        op,
                        text,
                        Drop(rule="unparsable_equality", reason=str(exc)),
                        trace,
                        next_frontier,
                    )
                    continue
                if equal:
                    drop = Drop(
                        rule="no_information_gain",
                        reason="the teacher judged it equal to its parent",
                        evidence={"parent": parent.instruction},
                    )
                    _eliminate(ctx, rnd, parent, op, text, drop, trace, next_frontier)
                    continue
                kept.append((parent, op, child_id, text, trace))
            candidates = kept

        answers = await answer(
            ctx,
            f"evol_responses_r{rnd}",
            [(child_id, text, "", parent.category) for parent, _, child_id, text, _ in candidates],
        )
        for parent, op, child_id, text, trace in candidates:
            a = answers[child_id]
            trace = [*trace, a.trace]
            response = a.response or ""
            reason: Drop | None = None
            if not a.ok:
                reason = Drop(
                    rule="response_failed", reason=a.error or "failed", evidence={"raw": a.text}
                )
            elif is_sorry_answer(response, ev.sorry_max_words):
                reason = Drop(
                    rule="sorry_answer",
                    reason=f"'sorry' in an answer of < {ev.sorry_max_words} words",
                    evidence={"response": response},
                )
            elif only_punctuation_and_stop_words(response, stop_words):
                reason = Drop(
                    rule="stop_words_only",
                    reason="the answer is only punctuation and stop words",
                    evidence={"response": response},
                )
            if reason is not None:
                _eliminate(ctx, rnd, parent, op, text, reason, trace, next_frontier)
                continue
            child = Answered(
                id=child_id,
                instruction=text,
                input="",
                origin=f"evol:{op}",
                response=response,
                category=parent.category,
                parent_ids=[parent.id],
                round=rnd,
                trace=trace,
                template_name="evol_breadth" if op == "breadth" else f"evol_{op}",
            )
            survivors.append(child)
            next_frontier.append(child)
            ctx.counts[f"evolved:{op}"] += 1
        frontier = next_frontier
    return survivors


def _eliminate(
    ctx: GenContext,
    rnd: int,
    parent: Answered,
    op: str,
    text: str,
    drop: Drop,
    trace: list[LLMCall],
    frontier: list[Answered],
) -> None:
    """Record the eliminated evolution and put its parent back on the frontier (the paper's rule)."""
    frontier.append(parent)
    child_id = content_id(f"evol:{op}", parent.id, text or f"round{rnd}")
    ctx.reject(
        "evolution",
        child_id,
        text,
        drop,
        origin=f"evol:{op}",
        parent_ids=[parent.id],
        trace=trace,
        round=rnd,
        meta={"parent_instruction": parent.instruction},
    )
