"""`distillery generate --estimate-cost`: what a run would cost, before any paid request.

The run is rehearsed with the scripted `fake` teacher in a temporary directory: the same
seeds, sampling, prompts and stage structure, so the number of calls per stage and every
prompt's size are those of the real run (eliminations and top-ups follow the fake teacher's
answers, so call counts are an estimate). Each call is then priced for the configured
teacher of its role with the same estimator the teacher engine's projection uses: input
tokens from the rendered prompt (about 4 characters per token), output tokens from
`expected_output_tokens` (default max_tokens / 4), and an upper bound at max_tokens - the
request's own (Magpie's `instruction` / `response` sampling), else the teacher's.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from distillery import calls
from distillery.errors import BudgetStop
from distillery.generate.config import GenerateConfig
from distillery.generate.magpie import template_source
from distillery.generate.roles import ROLE_FIELDS, role_teachers
from distillery.jsonl import Journal
from distillery.teacher.config import TeacherConfig
from distillery.teacher.pricing import cost, estimate_tokens, price_for
from distillery.teacher.types import CallResult


def estimate_cost(config: GenerateConfig) -> dict[str, Any]:
    from distillery.generate.run import run_generate

    teachers = role_teachers(config)
    with tempfile.TemporaryDirectory() as tmp:
        # each role's stand-in has the role's max_tokens: a call's trace then holds the cap
        # it would be sent with (the request's own, as Magpie's stages set, else the role's)
        fakes = {
            field: TeacherConfig(spec="fake", cache=False, max_tokens=teachers[role].max_tokens)
            for field, role in ROLE_FIELDS.items()
        }
        rehearsal = config.model_copy(
            update={
                "output_dir": tmp,
                "run_id": "rehearsal",
                "quiet": True,
                **fakes,
                # Magpie's pre-query text still comes from the real model's chat template
                "magpie": config.magpie.model_copy(update={"tokenizer": template_source(config)}),
            }
        )
        # the rehearsal's own lines (its temporary run directory, its status) would only
        # mislead: the estimate below is what this command reports
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(BudgetStop):
            run_generate(rehearsal)
        per_role: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for journal in sorted((Path(tmp) / "rehearsal" / "journal").glob("*.jsonl")):
            for line in Journal(journal).read():
                trace = CallResult.model_validate(line).trace
                role = calls.BY_PURPOSE[trace.purpose].role  # the call's own teacher role
                tc = teachers[role]
                cap = int(trace.params.get("max_tokens") or tc.max_tokens)
                out_each = min(cap, tc.expected_output_tokens or max(1, cap // 4))
                price = price_for(tc)
                n_in = sum(estimate_tokens(m.content) for m in trace.messages)
                n_in += estimate_tokens(trace.prompt) if trace.prompt is not None else 0
                r = per_role[role]
                r["calls"] += 1
                r["input_tokens"] += n_in
                r["output_tokens"] += out_each
                r["cost_usd"] += cost(price, n_in, out_each)
                r["max_cost_usd"] += cost(price, n_in, cap)
        rows = json.loads((Path(tmp) / "rehearsal" / "manifest.json").read_text())["rows"]
    total = {
        k: sum(r[k] for r in per_role.values())
        for k in ("calls", "input_tokens", "output_tokens", "cost_usd", "max_cost_usd")
    }
    return {
        "rows": rows,
        "target": config.num_instructions,
        "roles": {role: {"spec": teachers[role].spec, **dict(v)} for role, v in per_role.items()},
        "total": total,
        "priced": {role: price_for(tc) is not None for role, tc in teachers.items()},
    }


def format_estimate(est: dict[str, Any]) -> str:
    lines = [
        f"estimated cost of a run that makes {est['rows']} rows (prompts rehearsed with the fake teacher):"
    ]
    if est["rows"] < est["target"]:
        lines[0] = (
            f"estimated cost of the run (target {est['target']} rows; the rehearsal's scripted "
            f"answers reached {est['rows']}, a real teacher's may reach more):"
        )
    for role, r in est["roles"].items():
        priced = "" if est["priced"][role] else "  (no price for this model: set teacher.prices)"
        lines.append(
            f"  {role:<12} {r['spec']:<28} {int(r['calls']):>6} calls  ~{int(r['input_tokens']):>10,} in  "
            f"~{int(r['output_tokens']):>9,} out  ${r['cost_usd']:.2f} (at most ${r['max_cost_usd']:.2f}){priced}"
        )
    t = est["total"]
    lines.append(
        f"  {'total':<12} {'':<28} {int(t['calls']):>6} calls  ~{int(t['input_tokens']):>10,} in  "
        f"~{int(t['output_tokens']):>9,} out  ${t['cost_usd']:.2f} (at most ${t['max_cost_usd']:.2f})"
    )
    return "\n".join(lines)
