"""`distillery eval {ifeval,winrate,harness,loss}`: thin entry points over the eval modules.

Responses can come from a file or be generated first with any teacher backend
(`hf:PATH` for a local checkpoint, `vllm:`, `openai:` for any OpenAI-compatible server),
greedy by default. `ifeval` and `winrate` read an `EvalConfig` (YAML + `key=value`; the flags
are shorthands) and save it, resolved, beside their results before any request is sent; the
generation config of each generated side is written there too.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from distillery import calls
from distillery.config import save_resolved_config
from distillery.errors import BudgetStop, UserError
from distillery.eval.config import AnsweringModel, EvalConfig
from distillery.eval.ifeval import iter_prompt_rows
from distillery.identity import teacher_runtime_keys
from distillery.jsonl import atomic_write_text, write_jsonl
from distillery.runstate import config_identity, describe_difference, input_identity, locked
from distillery.teacher.batch_ledger import in_run_dir
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.jobs import JobItem, read_journal, run_job


def generation_config(spec: str, max_tokens: int, cache_path: str | None) -> TeacherConfig:
    """Greedy decoding (eval's `AnsweringModel` defaults); written beside the results."""
    extra: dict[str, Any] = {"cache_path": cache_path} if cache_path else {}
    return AnsweringModel(spec=spec, max_tokens=max_tokens, **extra)


async def _generate(
    config: TeacherConfig, prompts: list[tuple[str, str]], journal: Path
) -> dict[str, str]:
    teacher = await Teacher(config).start()
    try:
        items = [
            JobItem(pid, calls.EVAL_GENERATE.messages_request([{"role": "user", "content": text}]))
            for pid, text in prompts
        ]
        done = await run_job(teacher, items, journal, quiet=True)
    finally:
        await teacher.aclose()
    # a cut-off answer is still the model's answer for scoring; its raw text is kept
    return {pid: row.text or "" for pid, row in done.rows.items()}


def answer(
    config: TeacherConfig, prompts: list[tuple[str, str]], out_dir: Path, name: str
) -> dict[str, str]:
    """id -> the model's answer to each prompt; resumable through `out_dir/.NAME.journal`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / f"{name}_generation_config.json",
        json.dumps(config.model_dump(mode="json", exclude={"cache_path"}), indent=1) + "\n",
    )
    return asyncio.run(_generate(config, prompts, out_dir / f".{name}.journal"))


def generate_responses(
    spec: str,
    prompts: list[tuple[str, str]],
    out_dir: Path,
    name: str,
    max_tokens: int = 1024,
    cache_path: str | None = None,
) -> dict[str, str]:
    """`answer` with eval's greedy defaults for `spec`."""
    return answer(generation_config(spec, max_tokens, cache_path), prompts, out_dir, name)


def _output_dir(config: EvalConfig, kind: str) -> Path:
    if not config.output_dir:
        raise UserError(f"eval {kind} needs --output-dir DIR (or output_dir=DIR)")
    return Path(config.output_dir)


# what each kind writes into its output directory (moved aside together by --restart)
OUTPUTS = {
    "ifeval": (
        "responses.jsonl", "eval_results_strict.jsonl", "eval_results_loose.jsonl",
        "ifeval_summary.json", "ifeval_config.yaml", ".ifeval.journal",
        "ifeval_generation_config.json",
    ),
    "winrate": (
        "winrate_pairs.jsonl", "winrate_summary.json", "winrate_config.yaml", ".judge.journal",
        ".student.journal", ".baseline.journal", "student_generation_config.json",
        "baseline_generation_config.json",
    ),
    "harness": (
        "harness_student.json", "harness_base.json", "harness_summary.json", "harness_config.yaml",
    ),
}  # fmt: skip
# the model sections each kind uses (the others are left out of its identity)
MODELS = {"ifeval": ("student",), "winrate": ("student", "baseline", "judge"), "harness": ()}
# settings of `eval harness` that cannot change a score
HARNESS_RUNTIME = ["harness.batch_size", "harness.device", "harness.samples"]


def _inputs(kind: str, config: EvalConfig) -> dict[str, str | None]:
    """The identity of what a kind reads: files by content, models as training names them."""
    if kind == "harness":
        from distillery.model_identity import model_identity

        h = config.harness
        return {
            "model": model_identity(h.model) if h.model else None,
            "base": model_identity(h.base) if h.base else None,
            "include_path": input_identity(h.include_path),
        }
    files = config.ifeval if kind == "ifeval" else config.winrate
    return {k: input_identity(v) for k, v in files.model_dump().items() if isinstance(v, str)}


def _same_work(out: Path, kind: str, config: EvalConfig, restart: bool) -> None:
    """Results in `out` are resumed only when made with the same settings and inputs
    (`KIND_identity.json`); otherwise one line names the difference, and `--restart` moves
    this kind's results to `out/KIND.old-STAMP/` (never deleted). Other kinds' results in
    the same directory (held-out loss, the report) are left alone."""
    import time

    used = MODELS[kind]
    unused = [s for s in ("student", "baseline", "judge") if s not in used]
    # each kind's files count by content (inputs); harness's settings are its own identity
    sections = ["ifeval", "winrate", *(["harness"] if kind != "harness" else [])]
    runtime = HARNESS_RUNTIME if kind == "harness" else []
    identity = config_identity(
        config,
        exclude=["output_dir", *sections, *unused, *teacher_runtime_keys(used), *runtime],
        inputs=_inputs(kind, config),
    )
    path = out / f"{kind}_identity.json"
    present = [n for n in OUTPUTS[kind] if (out / n).exists()]
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if present and old != identity and not restart:
        why = describe_difference(old, identity) if old else "settings not recorded"
        raise UserError(
            f"{out} holds eval {kind} results made with other settings ({why}): use another "
            "--output-dir, or add --restart to move them aside"
        )
    if present and restart:
        aside = out / f"{kind}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        for name in [*present, path.name] if path.is_file() else present:
            (out / name).rename(aside / name)
        print(f"--restart: moved the previous {kind} results to {aside}", flush=True)
    atomic_write_text(path, json.dumps(identity, indent=1, sort_keys=True) + "\n")


def run_ifeval(config: EvalConfig, restart: bool = False) -> int:
    out = _output_dir(config, "ifeval")
    inputs, responses = config.ifeval.inputs, config.ifeval.responses
    if not inputs:
        raise UserError("eval ifeval needs --inputs FILE (or ifeval.inputs=FILE)")
    if responses is None and not config.student.spec:
        raise UserError(
            "eval ifeval needs --responses FILE or --model SPEC (e.g. hf:runs/main/train-lora/merged)"
        )
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):  # one writer: a second run fails at once naming the holder
        _same_work(out, "ifeval", config, restart)
        return _ifeval(config, out, inputs, responses)


def _ifeval(config: EvalConfig, out: Path, inputs: str, responses: str | None) -> int:
    """The responses (read or generated), the scores, then the config they came from."""
    from distillery.eval.ifeval import evaluate

    if responses is None:
        prompts = [(str(obj["key"]), obj["prompt"]) for _, obj in iter_prompt_rows(inputs)]
        texts = answer(config.student, prompts, out, "ifeval")
        by_key = dict(prompts)
        responses = str(out / "responses.jsonl")
        write_jsonl(responses, ({"prompt": by_key[k], "response": texts[k]} for k, _ in prompts))
    summary = evaluate(inputs, responses, out)
    save_resolved_config(config, out, "ifeval_config.yaml")
    print(json.dumps(summary, indent=1))
    return 0


def _sides(
    config: EvalConfig, prompts: list[tuple[str, str]], out: Path
) -> dict[str, dict[str, str]]:
    """side -> id -> response, each side read from its file or generated with its model."""
    from distillery.eval.winrate import load_responses

    sides: dict[str, dict[str, str]] = {}
    for side in ("student", "baseline"):
        path = getattr(config.winrate, f"{side}_responses")
        model: AnsweringModel = getattr(config, side)
        if path:
            sides[side] = load_responses(path)
        elif model.spec:
            sides[side] = answer(model, prompts, out, side)
        else:
            raise UserError(f"eval winrate needs --{side} SPEC or --{side}-responses FILE")
        missing = [pid for pid, _ in prompts if pid not in sides[side]]
        if missing:
            raise UserError(
                f"{side} responses lack {len(missing)} instruction id(s), e.g. {missing[0]!r}"
            )
    return sides


def run_winrate(config: EvalConfig, restart: bool = False) -> int:
    """Judge every pair twice (both orders), then write winrate_pairs.jsonl and
    winrate_summary.json. A judge budget stop (`judge.max_cost_usd`) writes neither: the
    verdicts so far stay in the judge's journal and a re-run with a higher cap continues."""
    from distillery.eval.winrate import load_instructions

    out = _output_dir(config, "winrate")
    if not config.judge.spec:
        raise UserError("eval winrate needs --judge SPEC (e.g. anthropic:claude-haiku-4-5)")
    if not config.winrate.instructions:
        raise UserError("eval winrate needs --instructions FILE (or winrate.instructions=FILE)")
    prompts = load_instructions(config.winrate.instructions, config.winrate.field)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):  # one writer: a second run fails at once naming the holder
        _same_work(out, "winrate", config, restart)
        return _winrate(config, prompts, out)


def _winrate(config: EvalConfig, prompts: list[tuple[str, str]], out: Path) -> int:
    """The answers, the verdicts, then the outputs and (with them) the config they came from."""
    from distillery.eval.winrate import judge_pairs, summarise

    sides = _sides(config, prompts, out)
    rows = [(pid, text, sides["student"][pid], sides["baseline"][pid]) for pid, text in prompts]
    journal = out / ".judge.journal"

    async def go() -> Any:
        judge = await Teacher(in_run_dir(config.judge, out)).start()
        try:
            return await judge_pairs(judge, rows, journal)
        finally:
            await judge.aclose()

    try:
        results = asyncio.run(go())
    except BudgetStop as exc:
        done = sum(row.status == "ok" for row in read_journal(journal).values())
        raise BudgetStop(
            f"{exc}; {done} of {2 * len(rows)} verdicts are saved in {journal}. Raise "
            "judge.max_cost_usd and re-run the same command to finish."
        ) from None
    texts = {pid: (text, student, baseline) for pid, text, student, baseline in rows}
    write_jsonl(
        out / "winrate_pairs.jsonl",
        (
            {
                "id": r.id,
                "student_as_a": r.first,
                "student_as_b": r.second,
                "outcome": r.outcome,
                **dict(zip(("instruction", "student", "baseline"), texts[r.id], strict=True)),
            }
            for r in results
        ),
    )
    summary = summarise(results, str(config.judge.spec))
    atomic_write_text(out / "winrate_summary.json", json.dumps(summary, indent=1) + "\n")
    save_resolved_config(config, out, "winrate_config.yaml")
    print(json.dumps(summary, indent=1))
    return 0


def run_harness(config: EvalConfig, restart: bool = False) -> int:
    """lm-evaluation-harness on the student and (with `harness.base`) its base model:
    `harness_student.json`, `harness_base.json`, then `harness_summary.json` (the forgetting
    table) and the resolved config. A side already scored with the same settings is kept."""
    from distillery.eval.forgetting import same_model
    from distillery.eval.harness import require_lm_eval, task_manager

    out = _output_dir(config, "harness")
    h = config.harness
    if not h.model:
        raise UserError("eval harness needs --model PATH (the student; harness.model=PATH)")
    if not h.tasks:
        raise UserError("eval harness needs --tasks NAME[,NAME...] (harness.tasks=[...])")
    if h.base and same_model(h.model, h.base):
        raise UserError(
            f"eval harness: --base {h.base} is the student itself (--model {h.model}): "
            "give the model it was trained from"
        )
    require_lm_eval()
    manager = task_manager(h)  # unknown task names stop here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):  # one writer: a second run fails at once naming the holder
        _same_work(out, "harness", config, restart)
        return _harness(config, out, manager)


def _harness(config: EvalConfig, out: Path, manager: Any) -> int:
    from distillery.eval.forgetting import summarise
    from distillery.eval.harness import evaluate_model

    h = config.harness
    sides: dict[str, dict[str, Any]] = {}
    for side, path in (("student", h.model), ("base", h.base)):
        if path is None:
            continue
        target = out / f"harness_{side}.json"
        if target.is_file():  # same identity (checked above): scored already
            print(f"eval harness: {side} already scored ({target})", flush=True)
            sides[side] = json.loads(target.read_text(encoding="utf-8"))
            continue
        sides[side] = evaluate_model(path, h, manager)
        atomic_write_text(target, json.dumps(sides[side], indent=1) + "\n")
    summary = summarise(sides["student"], sides.get("base"))
    atomic_write_text(out / "harness_summary.json", json.dumps(summary, indent=1) + "\n")
    save_resolved_config(config, out, "harness_config.yaml")
    for row in summary["rows"]:
        print(_harness_line(row), flush=True)
    print(f"forgetting table: {out / 'harness_summary.json'} (`distillery eval report {out}`)")
    return 0


def _harness_line(row: dict[str, Any]) -> str:
    """`task metric: student X [lo-hi] n=N; base ...; student - base ...` for the terminal."""
    from distillery.stats import describe

    spec = ".1%" if row["student"]["method"].startswith("wilson") else ".3g"
    text = f"{row['task']} {row['metric']}: student {describe(row['student'], spec)}"
    if row["base"] is not None:
        diff = describe(row["difference"], "+" + spec)
        text += f"; base {describe(row['base'], spec)}; student - base {diff}"
    return text
