"""Magpie (Xu et al., 2024): instructions drawn from an aligned model itself.

The model is given only its chat template's pre-query text - everything before a user
message would begin (after the category's system prompt, when one steers it) - as a raw
prompt, and writes a user instruction, stopping where its template closes a user turn.
Candidates go through the paper's filters (length, repetition, language, exact
duplicates; every dropped one is kept in `rejected.jsonl` with its rule and evidence) until
each category of the target mix has its share; the response teacher (the same model by
default, any teacher allowed) answers them, and the tag teacher labels each instruction's
task category, input quality and difficulty into `meta.tags` (`distillery.tags`).

Reads: `config.magpie`, the `instructions`, `responses` and `tags` teachers. Writes: rows of
origin `magpie` with `meta.magpie` (model, chat template hash, system prompt, sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from distillery import calls
from distillery.chat_template import (
    ChatTemplateError,
    assistant_turn_end,
    pre_query,
    template_sha256,
    user_turn_end,
)
from distillery.errors import UserError
from distillery.generate.config import GenerateConfig, Sampling
from distillery.generate.context import GenContext, failed_drop
from distillery.generate.filters import magpie_drop, repetition_share
from distillery.generate.roles import role_teachers
from distillery.generate.rows import GenRow
from distillery.parsing import ParseFailure
from distillery.records import Drop, content_id
from distillery.teacher.backends import raw_prompt_problem
from distillery.teacher.jobs import JobItem


@dataclass
class MagpieTemplate:
    """The model's chat template, as Magpie uses it."""

    tokenizer: Any
    source: str  # where it was loaded from
    sha256: str  # of the chat template's source (the row's lineage)
    user_end: str  # stop text of a drawn user turn
    assistant_end: str  # stop text of the same model's answers

    def pre_query(self, history: list[dict[str, str]], system: str | None) -> str:
        return pre_query(self.tokenizer, history, system)


def template_source(config: GenerateConfig) -> str | None:
    """Where the chat template comes from: `magpie.tokenizer`, else the teacher's model."""
    local = config.teacher.backend in ("hf", "vllm", "openai")
    return config.magpie.tokenizer or (config.teacher.model if local else None)


def load_template(config: GenerateConfig) -> MagpieTemplate:
    """Check the Magpie run before any request: the instruction teacher takes raw prompts and
    the chat template opens a user turn (with every system prompt); one-line errors."""
    problem = raw_prompt_problem(config.teacher)
    if problem:
        raise UserError(f"method magpie: {problem}")
    source = template_source(config)
    if not source:
        raise UserError(
            f"method magpie: teacher {config.teacher.spec} names no model whose chat template "
            "to use: set magpie.tokenizer to a tokenizer's hub name or local path"
        )
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
    except ImportError:
        raise UserError("method magpie: needs transformers (the train extra)") from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"magpie.tokenizer {source}: cannot load: {str(exc).splitlines()[0]}"
        ) from None
    try:
        for system in {system_for(config, c) for c in targets(config)}:
            pre_query(tokenizer, [], system)
        return MagpieTemplate(
            tokenizer, source, template_sha256(tokenizer), user_turn_end(tokenizer),
            assistant_turn_end(tokenizer),
        )  # fmt: skip
    except ChatTemplateError as exc:
        raise UserError(f"magpie.tokenizer {source}: {exc}") from None


def targets(config: GenerateConfig, n: int | None = None) -> dict[str, int]:
    """`n` rows (default `num_instructions`) per category, by largest remainder over the
    weights; {"": n} without categories."""
    cats = config.magpie.categories
    n = config.num_instructions if n is None else n
    if not cats:
        return {"": n}
    total = sum(c.weight for c in cats.values())
    exact = {name: n * c.weight / total for name, c in cats.items()}
    out = {name: math.floor(v) for name, v in exact.items()}
    for name in sorted(exact, key=lambda k: out[k] - exact[k])[: n - sum(out.values())]:
        out[name] += 1
    return out


def system_for(config: GenerateConfig, category: str) -> str | None:
    steer = config.magpie.categories.get(category)
    if steer is not None and steer.system_prompt is not None:
        return steer.system_prompt
    return config.magpie.system_prompt


def sampling(params: Sampling, stop: str | None) -> dict[str, Any]:
    """A stage's sampling parameters as request overrides, with its stop text."""
    out: dict[str, Any] = params.model_dump()
    if stop is not None:
        out["stop"] = [stop]
    return out


def response_params(ctx: GenContext, template: MagpieTemplate) -> dict[str, Any]:
    """The response stage's sampling; stopped at the template's end of turn when the
    responder is the Magpie model itself."""
    same_model = role_teachers(ctx.config)["responses"] == ctx.config.teacher
    return sampling(ctx.config.magpie.response, template.assistant_end if same_model else None)


def lineage(ctx: GenContext, template: MagpieTemplate, system: str | None) -> dict[str, Any]:
    cfg = ctx.config.magpie
    return {
        "model": ctx.config.teacher.spec,
        "tokenizer": template.source,
        "chat_template_sha256": template.sha256,
        "system_prompt": system,
        "sampling": {"instruction": cfg.instruction.model_dump(),
                     "response": cfg.response.model_dump()},
    }  # fmt: skip


async def magpie(ctx: GenContext, template: MagpieTemplate, n: int) -> list[GenRow]:
    """Draw, filter, answer and tag `n` rows, each category its share (or as many as
    `max_rounds` draws give); journals `magpie_rNN`, `magpie_responses`, `magpie_tags`."""
    cfg = ctx.config.magpie
    wanted = targets(ctx.config, n)
    rows: dict[str, list[GenRow]] = {c: [] for c in wanted}
    drawn = dict.fromkeys(wanted, 0)
    seen: set[str] = set()
    for rnd in range(cfg.max_rounds):
        items: list[JobItem] = []
        for cat, n in wanted.items():
            missing = n - len(rows[cat])
            k = math.ceil(missing * cfg.oversample) if missing > 0 else 0
            items += [_draw(ctx, template, cat, i) for i in range(drawn[cat], drawn[cat] + k)]
            drawn[cat] += k
        if not items:
            break
        results = await ctx.call(f"magpie_r{rnd:02d}", items)
        for item in items:
            cat = item.request.call.variables["category"] if item.request.call else ""
            row = _candidate(ctx, template, item.id, results[item.id], cat, seen)
            if row is not None and len(rows[cat]) >= wanted[cat]:
                drop = Drop(rule="surplus", reason="accepted after the category's target")
                ctx.reject("magpie", row.id, row.instruction, drop, origin="magpie",
                           trace=row.trace, meta=row.meta)  # fmt: skip
            elif row is not None:
                rows[cat].append(row)
        ctx.counts["magpie:draw_rounds"] = rnd + 1
    drafted = [r for cat in wanted for r in rows[cat]]
    ctx.counts["instructions:accepted"] = len(drafted)
    answered = await _answer(ctx, template, drafted)
    if cfg.tags:
        await tag(ctx, answered)
    return answered


def _draw(ctx: GenContext, template: MagpieTemplate, category: str, i: int) -> JobItem:
    system = system_for(ctx.config, category)
    request = calls.MAGPIE_INSTRUCTION.prompt_request(
        template.pre_query([], system),
        params=sampling(ctx.config.magpie.instruction, template.user_end),
        cache_salt=f"magpie:{category}:{i}",  # deliberate repeats of one prompt
        category=category,
        index=i,
    )
    return JobItem(f"{category}:{i}", request)


def _candidate(
    ctx: GenContext, template: MagpieTemplate, item_id: str, result: Any, category: str,
    seen: set[str],
) -> GenRow | None:  # fmt: skip
    """A drawn instruction as a row, or None when it is rejected (kept with its rule)."""
    cfg = ctx.config.magpie
    system = system_for(ctx.config, category)
    meta = {"category": category or None, "system_prompt": system}
    text = (result.response or "").strip()
    drop = failed_drop(result) if not result.ok else magpie_drop(
        text, min_words=cfg.min_words, max_words=cfg.max_words,
        max_repetition=cfg.max_repetition, language=cfg.language,
    )  # fmt: skip
    if drop is None and " ".join(text.lower().split()) in seen:
        drop = Drop(rule="duplicate", reason="the same instruction was drawn before")
    if drop is not None:
        ctx.reject("magpie", f"magpie:{item_id}", text, drop, origin="magpie",
                   trace=[result.trace], meta=meta)  # fmt: skip
        return None
    seen.add(" ".join(text.lower().split()))
    return GenRow(
        content_id("magpie", category, text),
        text,
        "magpie",
        category=category or None,
        trace=[result.trace],
        system_text=system,
        meta={"magpie": lineage(ctx, template, system)},
    )


async def _answer(ctx: GenContext, template: MagpieTemplate, rows: list[GenRow]) -> list[GenRow]:
    """The rows answered by the response teacher; a failed or repetitive answer rejects."""
    params = response_params(ctx, template)
    items = [
        JobItem(r.id, calls.RESPONSE.request(
            system_text=r.system_text, instruction=r.instruction, input="", params=params))
        for r in rows
    ]  # fmt: skip
    answers = await ctx.call("magpie_responses", items)
    kept = []
    for row in rows:
        result = answers[row.id]
        row.trace = [*row.trace, result.trace]
        share = repetition_share(result.response or "")
        drop = failed_drop(result) if not result.ok else None
        if drop is None and share > ctx.config.magpie.max_repetition:
            drop = Drop(rule="repetitive_response",
                        reason=f"{share:.0%} of the answer's word 3-grams repeat",
                        evidence={"repeated_3gram_share": share, "response": result.response})  # fmt: skip
        if drop is not None:
            ctx.reject("responses", row.id, row.instruction, drop, origin="magpie",
                       trace=row.trace, meta=row.meta)  # fmt: skip
            continue
        row.response = result.response or ""
        kept.append(row)
    return kept


async def tag(ctx: GenContext, rows: list[GenRow]) -> None:
    """`meta.tags` of each row's first instruction from the tag teacher; an answer that
    does not parse leaves the row untagged, with `meta.tags_error` (the raw answer)."""
    items = [JobItem(r.id, calls.MAGPIE_TAGS.request(instruction=r.instruction)) for r in rows]
    answers = await ctx.call("magpie_tags", items)
    for row in rows:
        result = answers[row.id]
        row.trace = [*row.trace, result.trace]
        try:
            row.meta["tags"] = calls.MAGPIE_TAGS.parsed(result)
            ctx.counts["tags:ok"] += 1
        except ParseFailure as exc:
            row.meta["tags_error"] = {"error": str(exc), "raw": result.text}
            ctx.counts["tags:unparsable"] += 1
