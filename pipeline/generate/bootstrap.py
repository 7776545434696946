"""Base instructions: Self-Instruct bootstrapping (Wang et al., 2022) or Alpaca batches.

Self-Instruct, as the paper describes it:
1. each prompt shows 8 in-context tasks (6 seeds, 2 generated once there are any) and asks
   for new ones; the numbered list is parsed;
2. a new instruction is dropped when ROUGE-L F1 >= 0.7 against any pool instruction, when
   it has too few or too many words, mentions a modality a text model cannot handle, starts
   with punctuation or a non-ASCII character, or was cut off (finish_reason=length);
3. the teacher decides, few-shot, whether each task is a classification task;
4. instances are generated output-first for classification tasks, input-first otherwise.

Steps run in batches; the pool is updated between batches in a fixed order, so the same
config and a deterministic teacher give the same pool, and a re-run replays the journals.
"""

from __future__ import annotations

import math
import random

from distillery import calls
from distillery.generate.context import GenContext, failed_drop
from distillery.generate.filters import InstructionPool, instruction_drop
from distillery.generate.rows import GenRow
from distillery.parsing import ParseFailure
from distillery.records import Drop, LLMCall, content_id
from distillery.seeds import SeedTask
from distillery.teacher.jobs import JobItem
from distillery.teacher.types import CallResult


def _prompts_needed(remaining: int, per_prompt: int, cap: int) -> int:
    """Calls for one step: enough for the remaining rows if every candidate passed, at most `cap`."""
    return max(1, min(cap, math.ceil(remaining / per_prompt)))


def _surplus(
    ctx: GenContext, item_id: str, text: str, origin: str, call: LLMCall | None, input: str = ""
) -> None:
    """A good instruction beyond the target: kept as data (a later, larger run uses it)."""
    drop = Drop(rule="surplus", reason="accepted after the base target was reached")
    ctx.reject(
        "instructions",
        item_id,
        text,
        drop,
        origin=origin,
        input=input,
        trace=[call] if call else [],
    )


def seed_pool(ctx: GenContext) -> InstructionPool:
    pool = InstructionPool(
        ctx.config.self_instruct.rouge_l_threshold, ctx.config.self_instruct.rouge_l_reject_if
    )
    for seed in ctx.seeds:
        pool.add(seed.id, seed.instruction)
    return pool


def _accept_candidates(
    ctx: GenContext,
    pool: InstructionPool,
    texts: list[str],
    finish: str | None,
    call: LLMCall | None,
    origin: str,
) -> list[tuple[str, str, int]]:
    """Filter candidate instructions in order; returns (id, text, index) of the accepted ones."""
    si = ctx.config.self_instruct
    accepted = []
    for i, text in enumerate(texts):
        cut = finish == "length" and i == len(texts) - 1  # only the last item can be cut off
        drop = instruction_drop(
            text,
            min_words=si.min_words,
            max_words=si.max_words,
            blocklist=si.modality_terms,
            finish_reason="length" if cut else None,
        ) or pool.too_similar(text)
        item_id = content_id(origin, text)
        if drop is not None:
            ctx.reject(
                "instructions", item_id, text, drop, origin=origin, trace=[call] if call else []
            )
            continue
        pool.add(item_id, text)
        accepted.append((item_id, text, i))
    return accepted


async def self_instruct(ctx: GenContext, target: int) -> list[GenRow]:
    si = ctx.config.self_instruct
    if len(ctx.seeds) < si.seed_tasks_in_prompt:
        from distillery.errors import UserError

        raise UserError(
            f"{ctx.config.seeds}: {len(ctx.seeds)} seed tasks, fewer than "
            f"self_instruct.seed_tasks_in_prompt={si.seed_tasks_in_prompt}"
        )
    pool = seed_pool(ctx)
    rows: list[GenRow] = []
    step = 0
    while len(rows) < target:
        if step >= si.max_steps:
            ctx.counts["bootstrap:gave_up"] = 1
            break
        rng = random.Random(f"{ctx.config.seed}:bootstrap:{step}")
        items, shown = [], {}
        for p in range(
            _prompts_needed(target - len(rows), si.new_tasks_per_prompt, si.prompts_per_batch)
        ):
            tasks = [s.instruction for s in rng.sample(ctx.seeds, si.seed_tasks_in_prompt)]
            k = min(si.generated_tasks_in_prompt, len(rows))
            tasks += [r.instruction for r in rng.sample(rows, k)]
            rng.shuffle(tasks)
            request = calls.SELF_INSTRUCT_GENERATE.request(
                tasks=tasks, num_tasks=si.new_tasks_per_prompt
            )
            item_id = f"step{step}-p{p}"
            shown[item_id] = set(tasks)
            items.append(JobItem(item_id, request))
        results = await ctx.call(f"bootstrap_{step:04d}", items)
        for item in items:
            result = results[item.id]
            candidates = _new_tasks(ctx, item.id, result, shown[item.id])
            if not candidates:
                continue
            ctx.counts["instructions:candidates"] += len(candidates)
            for item_id, instruction, _ in _accept_candidates(
                ctx, pool, candidates, result.finish_reason, result.trace, "self_instruct"
            ):
                if len(rows) >= target:
                    _surplus(ctx, item_id, instruction, "self_instruct", result.trace)
                    continue
                template = calls.SELF_INSTRUCT_GENERATE.template or ""
                rows.append(
                    GenRow(item_id, instruction, "self_instruct", trace=[result.trace],
                           template_name=template)
                )  # fmt: skip
        step += 1
    ctx.counts["instructions:accepted"] = len(rows)
    await _classify(ctx, rows)
    await _instances(ctx, rows)
    return [r for r in rows if r.output is not None]


def _new_tasks(ctx: GenContext, item_id: str, result: CallResult, shown: set[str]) -> list[str]:
    """The new tasks of one bootstrap answer (not those shown in its prompt). A failed call
    (other than a cut-off list, whose complete items count) or an answer with no numbered
    list is a rejection, and gives none."""
    if not result.ok and result.finish_reason != "length":
        ctx.reject("instructions", f"{item_id}:failed", "", failed_drop(result),
                   trace=[result.trace])  # fmt: skip
        return []
    text = result.text or ""
    candidates = [t for t in calls.SELF_INSTRUCT_GENERATE.parse(text) if t not in shown]
    if not candidates:
        drop = Drop(
            rule="unparsable_list",
            reason="no numbered list in the answer",
            evidence={"raw": text[:2000]},
        )
        ctx.reject("instructions", f"{item_id}:unparsable", "", drop, trace=[result.trace])
    return candidates


async def _classify(ctx: GenContext, rows: list[GenRow]) -> None:
    """Few-shot: is each new instruction a classification task?"""
    si = ctx.config.self_instruct
    positives = [s for s in ctx.seeds if s.is_classification]
    negatives = [s for s in ctx.seeds if not s.is_classification]
    items = []
    for row in rows:
        rng = random.Random(f"{ctx.config.seed}:classify:{row.id}")
        n_pos = min(len(positives), si.classify_examples // 2)
        examples = rng.sample(positives, n_pos) + rng.sample(
            negatives, min(len(negatives), si.classify_examples - n_pos)
        )
        rng.shuffle(examples)
        request = calls.SELF_INSTRUCT_CLASSIFY.request(
            examples=examples, instruction=row.instruction
        )
        items.append(JobItem(row.id, request))
    results = await ctx.call("classify", items)
    for row in list(rows):
        result = results[row.id]
        try:
            row.is_classification = calls.SELF_INSTRUCT_CLASSIFY.parsed(result)
        except ParseFailure as exc:
            drop = Drop(
                rule="unparsable_classification", reason=str(exc), evidence={"raw": result.text}
            )
            ctx.reject("classify", row.id, row.instruction, drop, trace=[*row.trace, result.trace])
            rows.remove(row)
            continue
        row.trace.append(result.trace)


def _examples(seeds: list[SeedTask]) -> list[dict[str, str]]:
    return [
        {
            "instruction": s.instruction,
            "input": s.instances[0].input,
            "output": s.instances[0].output,
        }
        for s in seeds
    ]


async def _instances(ctx: GenContext, rows: list[GenRow]) -> None:
    """Output-first for classification tasks, input-first otherwise; one instance is kept."""
    si = ctx.config.self_instruct
    cls_seeds = [s for s in ctx.seeds if s.is_classification] or ctx.seeds
    other_seeds = [s for s in ctx.seeds if not s.is_classification] or ctx.seeds
    items = []
    for row in rows:
        rng = random.Random(f"{ctx.config.seed}:instances:{row.id}")
        source = cls_seeds if row.is_classification else other_seeds
        examples = _examples(rng.sample(source, min(len(source), si.instance_examples)))
        call = (
            calls.INSTANCES_OUTPUT_FIRST if row.is_classification else calls.INSTANCES_INPUT_FIRST
        )
        request = call.request(
            examples=[_Obj(e) for e in examples],
            instruction=row.instruction,
            max_instances=si.max_instances,
        )
        items.append(JobItem(row.id, request))
    results = await ctx.call("instances", items)
    for row in rows:
        result = results[row.id]
        trace = [*row.trace, result.trace]
        try:
            found = calls.INSTANCES_INPUT_FIRST.parsed(result)  # both orders: one parser
        except ParseFailure as exc:
            drop = Drop(rule="unparsable_instances", reason=str(exc), evidence={"raw": result.text})
            ctx.reject("instances", row.id, row.instruction, drop, trace=trace)
            continue
        chosen = random.Random(f"{ctx.config.seed}:pick:{row.id}").choice(found)
        row.input, row.output, row.trace = chosen.input, chosen.output, trace
        row.meta["instances_generated"] = len(found)


class _Obj:
    """Attribute access over a dict, for templates written against objects."""

    def __init__(self, data: dict[str, str]) -> None:
        self.__dict__.update(data)


async def alpaca(ctx: GenContext, target: int) -> list[GenRow]:
    """Alpaca-style batches: each call returns ~20 tasks with instruction, input and output."""
    al, si = ctx.config.alpaca, ctx.config.self_instruct
    pool = seed_pool(ctx)
    rows: list[GenRow] = []
    step = 0
    while len(rows) < target and step < si.max_steps:
        rng = random.Random(f"{ctx.config.seed}:alpaca:{step}")
        items = []
        for p in range(
            _prompts_needed(target - len(rows), al.tasks_per_call, si.prompts_per_batch)
        ):
            examples = _examples(rng.sample(ctx.seeds, min(len(ctx.seeds), al.examples_in_prompt)))
            request = calls.ALPACA_BATCH.request(
                examples=[_Obj(e) for e in examples], num_tasks=al.tasks_per_call
            )
            items.append(JobItem(f"step{step}-p{p}", request))
        results = await ctx.call(f"alpaca_{step:04d}", items)
        for item in items:
            row = results[item.id]
            call = row.trace
            try:
                tasks = calls.ALPACA_BATCH.parsed(row)
            except ParseFailure as exc:
                drop = Drop(rule="unparsable_list", reason=str(exc), evidence={"raw": row.text})
                ctx.reject(
                    "instructions",
                    f"{item.id}:unparsable",
                    "",
                    drop,
                    origin="alpaca",
                    trace=[call] if call else [],
                )
                continue
            by_text = {t.instruction: t for t in tasks}
            for item_id, text, _ in _accept_candidates(
                ctx, pool, list(by_text), None, call, "alpaca"
            ):
                task = by_text[text]
                if len(rows) >= target:
                    _surplus(ctx, item_id, text, "alpaca", call, input=task.input)
                    continue
                rows.append(
                    GenRow(
                        item_id,
                        text,
                        "alpaca",
                        input=task.input,
                        output=task.output,
                        trace=[call] if call else [],
                        template_name="alpaca_batch",
                    )
                )
        step += 1
    ctx.counts["instructions:accepted"] = len(rows)
    return rows
