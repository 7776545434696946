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
from typing import Any

from distillery import calls
from distillery.generate.context import GenContext
from distillery.generate.filters import (
    is_sorry_answer,
    leaked_scaffold,
    only_punctuation_and_stop_words,
)
from distillery.generate.rows import GenRow
from distillery.parsing import ParseFailure
from distillery.prompts import render
from distillery.records import Drop, LLMCall, content_id
from distillery.teacher.jobs import JobItem
from distillery.teacher.types import CallResult


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


async def answer(ctx: GenContext, stage: str, rows: list[GenRow]) -> dict[str, CallResult]:
    """Responses to `rows` (instruction, input; category picks the system prompt), by id,
    through the response teacher; journal `journal/<stage>.jsonl`."""
    items = [
        JobItem(row.id, calls.RESPONSE.request(
            system=system_template(ctx, row.category), instruction=row.instruction,
            input=row.input,
        ))
        for row in rows
    ]  # fmt: skip
    return await ctx.call(stage, items)


def _pick_operation(ctx: GenContext, rng: random.Random) -> str:
    ops = [(op, w) for op, w in ctx.config.evol.operations.items() if w > 0]
    return rng.choices([op for op, _ in ops], weights=[w for _, w in ops])[0]


async def evolve(ctx: GenContext, base: list[GenRow]) -> list[GenRow]:
    """Run the configured rounds; returns the surviving evolutions (base rows not included).
    A round: rewrite every row on the frontier, drop rewrites with no new information, answer
    the rest and apply the elimination rules. Survivors and the parents of eliminated
    evolutions make the next round's frontier, in order."""
    ev = ctx.config.evol
    frontier = list(base)
    survivors: list[GenRow] = []
    for rnd in range(1, ev.rounds + 1):
        if not frontier:
            break
        next_frontier: list[GenRow] = []
        children = await _rewrite(ctx, rnd, frontier, next_frontier)
        if ev.equality_check and children:
            children = await _with_new_information(ctx, rnd, children, next_frontier)
        for child in await _answered(ctx, rnd, children, next_frontier):
            survivors.append(child)
            ctx.counts[f"evolved:{child.operation}"] += 1
        frontier = next_frontier
    return survivors


def _child(parent: GenRow, op: str, rnd: int, text: str, trace: list[LLMCall]) -> GenRow:
    """The evolution of `parent` by `op` in round `rnd` (its id from its content)."""
    return GenRow(
        id=content_id(f"evol:{op}", parent.id, text or f"round{rnd}"),
        instruction=text,
        origin=f"evol:{op}",
        category=parent.category,
        parent_ids=[parent.id],
        round=rnd,
        trace=trace,
        template_name=calls.EVOL[op].template or "",
        parent=parent,
    )


async def _rewrite(
    ctx: GenContext, rnd: int, frontier: list[GenRow], next_frontier: list[GenRow]
) -> list[GenRow]:
    """Each frontier row rewritten by one operation drawn with the configured weights; a
    rewrite that does not parse or leaks the scaffold is eliminated."""
    ev = ctx.config.evol
    items, ops = [], {}
    for parent in frontier:
        op = _pick_operation(ctx, random.Random(f"{ctx.config.seed}:evol:{rnd}:{parent.id}"))
        prompt = user_text(parent.instruction, parent.input)
        words: dict[str, Any] = {
            "min_added_words": ev.min_added_words,
            "max_added_words": ev.max_added_words,
        }
        request = calls.EVOL[op].request(prompt=prompt, **({} if op == "breadth" else words))
        items.append(JobItem(parent.id, request))
        ops[parent.id] = (parent, op)
    rewrites = await ctx.call(f"evol_r{rnd}", items)
    children = []
    for item in items:
        parent, op = ops[item.id]
        result = rewrites[item.id]
        try:
            text = calls.EVOL[op].parsed(result)
        except ParseFailure as exc:
            drop = Drop(rule="unparsable_evolution", reason=str(exc))
            _eliminate(ctx, _child(parent, op, rnd, "", [result.trace]), drop, next_frontier)
            continue
        child = _child(parent, op, rnd, text, [result.trace])
        leak = leaked_scaffold(text, ev.scaffold_phrases)
        if leak is not None:
            drop = Drop(
                rule="leaked_scaffold", reason=f"contains {leak!r}", evidence={"phrase": leak}
            )
            _eliminate(ctx, child, drop, next_frontier)
            continue
        children.append(child)
    return children


async def _with_new_information(
    ctx: GenContext, rnd: int, children: list[GenRow], next_frontier: list[GenRow]
) -> list[GenRow]:
    """Elimination rule 1: the teacher judges whether each rewrite equals its parent."""
    items = []
    for child in children:
        assert child.parent is not None
        first = user_text(child.parent.instruction, child.parent.input)
        items.append(
            JobItem(child.id, calls.EVOL_EQUALITY.request(first=first, second=child.instruction))
        )
    verdicts = await ctx.call(f"equality_r{rnd}", items)
    kept = []
    for child in children:
        assert child.parent is not None
        result = verdicts[child.id]
        child.trace = [*child.trace, result.trace]
        try:
            equal = calls.EVOL_EQUALITY.parsed(result)
        except ParseFailure as exc:
            drop = Drop(rule="unparsable_equality", reason=str(exc))
            _eliminate(ctx, child, drop, next_frontier)
            continue
        if equal:
            drop = Drop(
                rule="no_information_gain",
                reason="the teacher judged it equal to its parent",
                evidence={"parent": child.parent.instruction},
            )
            _eliminate(ctx, child, drop, next_frontier)
            continue
        kept.append(child)
    return kept


async def _answered(
    ctx: GenContext, rnd: int, children: list[GenRow], next_frontier: list[GenRow]
) -> list[GenRow]:
    """The rewrites answered; rules 2 and 3 (a short "sorry", only stop words) eliminate.
    Survivors join `next_frontier` in order, between the parents of eliminated ones."""
    ev = ctx.config.evol
    answers = await answer(ctx, f"evol_responses_r{rnd}", children)
    survivors = []
    for child in children:
        result = answers[child.id]
        child.trace = [*child.trace, result.trace]
        response = result.response or ""
        reason: Drop | None = None
        if not result.ok:
            reason = Drop(
                rule="response_failed",
                reason=result.error or "failed",
                evidence={"raw": result.text},
            )
        elif is_sorry_answer(response, ev.sorry_max_words):
            reason = Drop(
                rule="sorry_answer",
                reason=f"'sorry' in an answer of < {ev.sorry_max_words} words",
                evidence={"response": response},
            )
        elif only_punctuation_and_stop_words(response, set(ev.stop_words)):
            reason = Drop(
                rule="stop_words_only",
                reason="the answer is only punctuation and stop words",
                evidence={"response": response},
            )
        if reason is not None:
            _eliminate(ctx, child, reason, next_frontier)
            continue
        child.response = response
        survivors.append(child)
        next_frontier.append(child)
    return survivors


def _eliminate(ctx: GenContext, child: GenRow, drop: Drop, frontier: list[GenRow]) -> None:
    """Record the eliminated evolution and put its parent back on the frontier (the paper's rule)."""
    assert child.parent is not None
    frontier.append(child.parent)
    ctx.reject(
        "evolution",
        child.id,
        child.instruction,
        drop,
        origin=child.origin,
        parent_ids=child.parent_ids,
        trace=child.trace,
        round=child.round,
        meta={"parent_instruction": child.parent.instruction},
    )
