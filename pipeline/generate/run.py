"""`distillery generate`: load config and seeds, bootstrap (Self-Instruct, Alpaca) or draw
(Magpie), evolve, answer, go on as conversations, write the run.

Writes `OUTPUT_DIR/RUN_ID/`:
- `generated.jsonl` - `Record` rows (instruction, input, messages, origin, parent_ids, round,
  category, teacher, template, usage, trace), exactly `num_instructions` when reachable;
- `rejected.jsonl` - every rejected candidate with `dropped_by` (rule, reason, evidence);
- `dataset/` - the generated rows as a Hugging Face dataset (`messages` format);
- `manifest.json` - counts per stage, category and rejection rule; requests, tokens and
  dollars per role and per teacher summed over every invocation of the run, the list of
  invocations, and whether the rows came from the scripted `fake` teacher;
- `config.yaml` - the resolved config (written with the rows it describes);
- `journal/` - one journal per stage (resume); `identity.json`, `invocations.jsonl`,
  `finished.json` - the run directory's bookkeeping (`distillery.runstate`).

A re-run with the same identity (`roles.generate_identity`) resumes from the journals, or
does nothing when the run finished; a different one stops naming what differs, unless
`restart` moves the old outputs aside.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from distillery import calls
from distillery.config import save_resolved_config
from distillery.errors import UserError
from distillery.export import save_hf_dataset
from distillery.generate import bootstrap, conversation
from distillery.generate.categories import CategoryModel
from distillery.generate.config import GenerateConfig
from distillery.generate.context import BudgetStop, GenContext
from distillery.generate.evolve import answer, evolve, user_text
from distillery.generate.magpie import MagpieTemplate, load_template, magpie
from distillery.generate.manifest import build_manifest
from distillery.generate.roles import active_roles, generate_identity, role_teachers
from distillery.generate.rows import GenRow
from distillery.jsonl import atomic_write_text, write_jsonl
from distillery.prompts import template_ref
from distillery.records import Drop, Message, Record, Usage
from distillery.runstate import RunDir, refuse_inputs_inside
from distillery.seeds import SeedTask, load_seeds
from distillery.teacher.batch_ledger import in_run_dir
from distillery.teacher.engine import Teacher

EXIT_TARGET_NOT_MET = 1
EXIT_BUDGET = 4


def run_id_for(config: GenerateConfig) -> str:
    """`run_id`, or a hash of the run's identity: a re-run that changes only how requests
    are sent (concurrency, budget...) resumes; one that changes the rows gets a new run."""
    if config.run_id:
        return config.run_id
    material = json.dumps(generate_identity(config), sort_keys=True)
    return "gen-" + hashlib.sha256(material.encode()).hexdigest()[:10]


async def _start_teachers(config: GenerateConfig, run: RunDir) -> dict[str, Teacher]:
    """One started client per distinct teacher config; batch ledgers in the run directory."""
    teachers: dict[str, Teacher] = {}
    by_config: dict[str, Teacher] = {}
    try:
        for role, tc in active_roles(config).items():
            key = tc.model_dump_json()
            if key not in by_config:  # one client per distinct teacher config
                by_config[key] = await Teacher(in_run_dir(tc, run.path, run.moved_to)).start()
            teachers[role] = by_config[key]
    except BaseException:
        for t in by_config.values():
            await t.aclose()
        raise
    return teachers


def _to_record(ctx: GenContext, row: GenRow, teacher_spec: str) -> Record:
    user = user_text(row.instruction, row.input)
    answer = Message(role="assistant", content=row.response or "")
    messages = [Message(role="user", content=user), answer]
    messages += [Message.model_validate(m) for m in row.later_turns]
    if ctx.config.responses.keep_system_in_rows:
        answered = [c for c in row.trace if c.purpose == calls.RESPONSE.purpose]
        if answered and answered[-1].messages and answered[-1].messages[0].role == "system":
            messages.insert(0, answered[-1].messages[0])
    return Record(
        id=row.id,
        instruction=row.instruction,
        input=row.input,
        messages=messages,
        origin=row.origin,
        parent_ids=row.parent_ids,
        round=row.round,
        category=row.category,
        teacher=teacher_spec,
        template=template_ref(row.template_name) if row.template_name else None,
        usage=sum((c.usage for c in row.trace), Usage()),
        trace=row.trace,
        demo=ctx.demo,
        meta=row.meta,
    )


async def _generate(ctx: GenContext) -> list[GenRow]:
    """Generate; if eliminations leave fewer rows than the target, bootstrap more base
    instructions and run again. Earlier work replays from the journals at no cost."""
    cfg = ctx.config
    seed_rows = len(ctx.seeds) if cfg.include_seeds else 0
    fixed = cfg.self_instruct.num_base_instructions
    # every base row (seeds included) yields about 1 + rounds rows
    n_base = fixed or max(1, math.ceil(cfg.num_instructions / (1 + cfg.evol.rounds)) - seed_rows)
    rows: list[GenRow] = []
    for attempt in range(cfg.max_top_ups + 1):
        ctx.rejected.clear()
        ctx.counts.clear()
        rows = await _generate_once(ctx, n_base)
        ctx.counts["top_ups"] = attempt
        if len(rows) >= cfg.num_instructions or fixed:
            break
        per_base = len(rows) / (n_base + seed_rows)
        n_base += math.ceil((cfg.num_instructions - len(rows)) / max(per_base, 0.5))
    return rows


async def _generate_once(ctx: GenContext, n_base: int) -> list[GenRow]:
    cfg = ctx.config
    if cfg.method == "magpie":
        assert ctx.magpie is not None
        base = await magpie(ctx, ctx.magpie, n_base)  # answered (and tagged) by the teachers
        return base + (await evolve(ctx, base) if cfg.evol.rounds else [])
    builder = bootstrap.alpaca if cfg.method == "alpaca" else bootstrap.self_instruct
    base_rows = await builder(ctx, n_base)
    ctx.categorise(base_rows)  # before answering: the category picks the system prompt

    if cfg.method == "alpaca":
        for r in base_rows:
            r.response = r.output or ""  # an Alpaca task comes with its answer
        base = base_rows
    else:
        base = await _answer_base(ctx, base_rows)
    if cfg.include_seeds:  # seeds are rows too, and evolve like any base row (as in WizardLM)
        seed_rows = [
            GenRow(s.id, s.instruction, "seed", input=s.instances[0].input,
                   response=s.instances[0].output, category=s.category)
            for s in ctx.seeds
        ]  # fmt: skip
        base = seed_rows + base
    evolved = await evolve(ctx, base) if cfg.evol.rounds else []
    return base + evolved


async def _answer_base(ctx: GenContext, rows: list[GenRow]) -> list[GenRow]:
    """Self-Instruct rows answered by the response teacher; a failed answer is a rejection."""
    answers = await answer(ctx, "responses", rows)
    answered = []
    for r in rows:
        a = answers[r.id]
        r.trace = [*r.trace, a.trace]
        if not a.ok:
            drop = Drop(
                rule="response_failed", reason=a.error or "failed", evidence={"raw": a.text}
            )
            ctx.reject("responses", r.id, r.instruction, drop, input=r.input, trace=r.trace)
            continue
        r.meta = {**r.meta, "is_classification": r.is_classification, "instance_output": r.output}
        r.response = a.response or ""
        answered.append(r)
    return answered


def _select(rows: list[GenRow], target: int) -> list[GenRow]:
    """Exactly `target` rows when there are more: seeds and base rows first, then evolutions
    round by round, so every kept evolution's lineage stays inspectable."""
    ordered = sorted(rows, key=lambda r: (r.round, r.origin != "seed"))
    return ordered[:target]


def _check_templates(config: GenerateConfig) -> None:
    """Every prompt file the run will render exists, before any request is sent."""
    r = config.responses
    names = [r.step_by_step_template, *r.system_templates.values()]
    if r.system_template:
        names.append(r.system_template)
    if config.method == "magpie" and config.magpie.tags:
        names.append(calls.MAGPIE_TAGS.template or "")
    if config.conversation.range[1] > 1 and config.method != "magpie":
        names.append(calls.USER_SIMULATOR.template or "")
    for name in names:
        template_ref(name)  # raises a one-line UserError naming the missing file


def run_generate(config: GenerateConfig, restart: bool = False) -> int:
    """Check templates and seeds, start the teachers (nothing is written if one is unusable),
    then generate into OUTPUT_DIR/RUN_ID under `RunDir` (lock, identity, invocations)."""
    _check_templates(config)
    template = load_template(config) if config.method == "magpie" else None
    seeds = load_seeds(config.seeds) if template is None else []  # Magpie needs no seeds
    if not seeds and template is None:
        raise UserError(f"{config.seeds}: no seed tasks")
    run_dir = Path(config.output_dir) / run_id_for(config)
    if template is None:
        refuse_inputs_inside(run_dir, [("seeds", config.seeds)], "the run directory")
    return asyncio.run(_run(config, seeds, run_dir, restart, template))


def _already_finished(run_dir: Path, done: dict[str, Any]) -> int:
    print(
        f"{run_dir}: already finished ({done.get('rows', '?')} rows, same settings); "
        "nothing to do (--restart redoes it)"
    )
    return 0


async def _run(
    config: GenerateConfig,
    seeds: list[SeedTask],
    run_dir: Path,
    restart: bool,
    template: MagpieTemplate | None = None,
) -> int:
    started = time.time()
    with RunDir(run_dir, "generate", generate_identity(config), restart=restart) as run:
        done = run.finished
        if done is not None:  # before loading the category model and starting teachers
            return _already_finished(run_dir, done)
        # a missing extra or an unusable teacher fails here: a new run directory is removed
        categories = CategoryModel(config.categories, seeds) if seeds else None
        teachers = await _start_teachers(config, run)
        try:
            print(f"run directory: {run_dir}" + (" (resuming)" if run.resumed else ""))
            ctx = GenContext(
                config=config,
                run_dir=run_dir,
                seeds=seeds,
                teachers=teachers,
                run=run,
                categories=categories,
                magpie=template,
            )
            code = await _generate_and_write(ctx, run, started)
            run.exit_code = code
            if code == 0:
                run.mark_finished({"rows": config.num_instructions})
            return code
        finally:
            for t in {id(t): t for t in teachers.values()}.values():
                await t.aclose()


async def _generate_and_write(ctx: GenContext, run: RunDir, started: float) -> int:
    """Generate, then write rows, rejections, dataset, config.yaml and manifest together.
    A budget stop writes what was made, then re-raises (the CLI exits 4)."""
    config, run_dir = ctx.config, ctx.run_dir
    status, code, stop = "complete", 0, None
    rows: list[GenRow] = []
    kept: list[GenRow] = []
    try:
        rows = await _generate(ctx)
        kept = _select(rows, config.num_instructions)
        if config.conversation.range[1] > 1:
            await conversation.extend(ctx, kept, ctx.magpie)
    except BudgetStop as exc:
        status, code, stop = f"stopped: {exc}", EXIT_BUDGET, exc
        kept = kept or _select(rows, config.num_instructions)
    if code == 0 and len(kept) < config.num_instructions:
        status = f"target not met: {len(kept)}/{config.num_instructions} rows"
        code = EXIT_TARGET_NOT_MET
    spec = role_teachers(config)["responses"].spec or ""
    records = [_to_record(ctx, r, spec) for r in kept]
    write_jsonl(run_dir / "generated.jsonl", records)
    write_jsonl(run_dir / "rejected.jsonl", ctx.rejected)
    if records:
        save_hf_dataset(records, run_dir / "dataset")
    save_resolved_config(config, run_dir)
    manifest = build_manifest(ctx, run, records, status, code, started)
    atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    demo = " (DEMO DATA from the scripted fake teacher)" if ctx.demo else ""
    print(f"{status}: {len(records)} rows{demo}, {len(ctx.rejected)} rejected -> {run_dir}")
    if len(manifest["invocations"]) > 1:
        print(
            f"over {len(manifest['invocations'])} invocations: {manifest['requests_sent']} "
            f"requests sent, ${manifest['spent_usd']:.4f} spent"
        )
    if stop is not None:
        print("raise teacher.max_cost_usd and re-run the same command to continue")
        raise stop
    return code
