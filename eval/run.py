"""`distillery eval {ifeval,winrate,loss}`: thin entry points over the eval modules.

Responses can come from a file or be generated first with any teacher backend
(`hf:PATH` for a local checkpoint, `vllm:`, `openai:` for any OpenAI-compatible server),
greedy by default; the generation config is written beside the results.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.jsonl import atomic_write_text, iter_json_lines, write_jsonl
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, run_job
from distillery.teacher.types import ChatRequest


def generation_config(spec: str, max_tokens: int, cache_path: str | None) -> TeacherConfig:
    """Greedy decoding; the config is written beside the results."""
    extra: dict[str, Any] = {"cache_path": cache_path} if cache_path else {}
    return TeacherConfig(
        spec=spec, temperature=0.0, top_p=1.0, max_tokens=max_tokens, max_length_retries=0, **extra
    )


async def _generate(
    config: TeacherConfig, prompts: list[tuple[str, str]], journal: Path
) -> dict[str, str]:
    teacher = await Teacher(config).start()
    try:
        items = [
            JobItem(pid, ChatRequest([{"role": "user", "content": text}], purpose="eval:generate"))
            for pid, text in prompts
        ]
        done = await run_job(teacher, items, journal, quiet=True)
    finally:
        await teacher.aclose()
    # a cut-off answer is still the model's answer for scoring; its raw text is kept
    return {
        pid: (row.response if row.status == "ok" else (row.trace.response if row.trace else ""))
        or ""
        for pid, row in done.rows.items()
    }


def generate_responses(
    spec: str,
    prompts: list[tuple[str, str]],
    out_dir: Path,
    name: str,
    max_tokens: int = 1024,
    cache_path: str | None = None,
) -> dict[str, str]:
    config = generation_config(spec, max_tokens, cache_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    responses = asyncio.run(_generate(config, prompts, out_dir / f".{name}.journal"))
    atomic_write_text(
        out_dir / f"{name}_generation_config.json",
        json.dumps(config.model_dump(mode="json", exclude={"cache_path"}), indent=1) + "\n",
    )
    return responses


def run_ifeval(
    inputs: str, responses: str | None, model: str | None, output_dir: str, max_tokens: int = 1024
) -> int:
    from distillery.eval.ifeval import evaluate

    out = Path(output_dir)
    if responses is None:
        if model is None:
            raise UserError(
                "eval ifeval needs --responses FILE or --model SPEC (e.g. hf:runs/main/train-lora/merged)"
            )
        prompts = [(str(obj["key"]), obj["prompt"]) for _, obj in iter_json_lines(inputs)]
        texts = generate_responses(model, prompts, out, "ifeval", max_tokens)
        by_key = dict(prompts)
        responses = str(out / "responses.jsonl")
        write_jsonl(responses, ({"prompt": by_key[k], "response": texts[k]} for k, _ in prompts))
    summary = evaluate(inputs, responses, out)
    print(json.dumps(summary, indent=1))
    return 0


def run_winrate(args: Any) -> int:
    from distillery.eval.winrate import judge_pairs, load_instructions, load_responses, summarise

    out = Path(args.output_dir)
    if not args.judge:
        raise UserError("eval winrate needs --judge SPEC (e.g. anthropic:claude-haiku-4-5)")
    prompts = load_instructions(args.instructions, args.field)
    sides: dict[str, dict[str, str]] = {}
    for side in ("student", "baseline"):
        path, spec = getattr(args, f"{side}_responses"), getattr(args, side)
        if path:
            sides[side] = load_responses(path)
        elif spec:
            sides[side] = generate_responses(spec, prompts, out, side, args.max_tokens)
        else:
            raise UserError(f"eval winrate needs --{side} SPEC or --{side}-responses FILE")
        missing = [pid for pid, _ in prompts if pid not in sides[side]]
        if missing:
            raise UserError(
                f"{side} responses lack {len(missing)} instruction id(s), e.g. {missing[0]!r}"
            )
    rows = [(pid, text, sides["student"][pid], sides["baseline"][pid]) for pid, text in prompts]
    judge_config = TeacherConfig(spec=args.judge, temperature=0.0, max_tokens=1024)

    async def go() -> Any:
        judge = await Teacher(judge_config).start()
        try:
            return await judge_pairs(judge, rows, out / ".judge.journal")
        finally:
            await judge.aclose()

    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(go())
    write_jsonl(
        out / "winrate_pairs.jsonl",
        (
            {"id": r.id, "student_as_a": r.first, "student_as_b": r.second, "outcome": r.outcome}
            for r in results
        ),
    )
    summary = summarise(results, args.judge)
    atomic_write_text(out / "winrate_summary.json", json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


def run_loss(
    model: str, data: str, output_dir: str, chat_template: str | None, max_length: int
) -> int:
    from distillery.eval.heldout import heldout_loss

    result = heldout_loss(model, data, chat_template=chat_template, max_length=max_length)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "heldout_loss.json", json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0
