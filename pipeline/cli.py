"""`distillery`: the single entry point. Each subcommand is a thin function: parse flags,
load the config, call the stage, print where the outputs are.

Errors a user can fix (`UserError`) print as one line on stderr and exit with code 2; a
budget stop (`BudgetStop`, from any stage) prints one line and exits with code 4.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from distillery import __version__
from distillery.errors import BudgetStop, UserError

STAGES = {
    "generate": (
        "Self-Instruct + Evol-Instruct: expand seeds into (instruction, response) pairs",
        4,
    ),
    "filter": ("heuristics, dedup, decontamination and an LLM judge over the pairs", 5),
    "train": ("fine-tune the student (TRL + PEFT, masked loss, packing)", 6),
    "eval": ("IFEval, judge win rates, lm-evaluation-harness, held-out loss", 7),
    "complete": ("run a JSONL of chat requests through a teacher, cached and resumable", 3),
    "demo": ("the whole pipeline offline on CPU with the scripted teacher", 8),
}


def _seeds_validate(args: argparse.Namespace) -> int:
    from distillery.seeds import validate_seeds

    report = validate_seeds(args.path, args.near_duplicate_rouge_l, args.min_categories)
    if report.errors:
        for line in report.errors:
            print(line, file=sys.stderr)
        print(f"{len(report.errors)} problem(s) in {args.path}", file=sys.stderr)
        return 2
    counts = report.per_category
    width = max((len(c) for c in counts), default=8)
    for category, n in sorted(counts.items()):
        print(f"{category:<{width}}  {n:>4}")
    print(f"{'total':<{width}}  {len(report.seeds):>4}  ({len(counts)} categories) - OK")
    return 0


CONFIG_MODELS = {
    "complete": "distillery.complete:CompleteConfig",
    "generate": "distillery.generate.config:GenerateConfig",
    "filter": "distillery.filter.config:FilterConfig",
    "train": "distillery.training.config:TrainConfig",
    "eval": "distillery.eval.config:EvalConfig",
}


EXECUTOR_HELP = (
    "local (default): this process; ray: on a Ray cluster, the same decisions "
    "(ray.address=auto|ray://HOST:PORT; empty starts a local instance; needs `make install EXTRAS=ray`)"
)


def _with_flags(args: argparse.Namespace, flags: Mapping[str, object]) -> list[str]:
    """Command-line flags as `key=value` overrides, after the positional ones (flags win)."""
    return [*args.overrides, *(f"{k}={v}" for k, v in flags.items() if v is not None)]


def _config_reference(args: argparse.Namespace) -> int:
    import importlib

    from distillery.config import reference_markdown

    module, _, name = CONFIG_MODELS[args.stage].partition(":")
    print(reference_markdown(getattr(importlib.import_module(module), name)))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from distillery.config import load_config
    from distillery.generate.config import GenerateConfig
    from distillery.generate.roles import ROLE_FLAGS, teacher_flag_overrides
    from distillery.generate.run import run_generate

    flags = {
        "teacher.spec": args.teacher,
        "seeds": args.seeds,
        "num_instructions": args.num_instructions,
        "output_dir": args.output_dir,
        "run_id": args.run_id,
        "quiet": True if args.quiet else None,
        "executor": args.executor,
    }
    overrides = _with_flags(args, flags)
    config = load_config(GenerateConfig, args.config, overrides)
    roles = {field: getattr(args, field) for field in ROLE_FLAGS}
    role_specs = teacher_flag_overrides(config, args.teacher, roles, args.overrides)
    if role_specs:  # --teacher sets every role not set on this command line
        config = load_config(GenerateConfig, args.config, [*overrides, *role_specs])
    if args.estimate_cost:
        from distillery.generate.estimate import estimate_cost, format_estimate

        print(format_estimate(estimate_cost(config)))
        return 0
    return run_generate(config, restart=args.restart)


def _filter(args: argparse.Namespace) -> int:
    from distillery.config import load_config
    from distillery.filter.config import FilterConfig
    from distillery.filter.run import run_filter

    flags: dict[str, str | None] = {
        "input": args.input,
        "output_dir": args.output_dir,
        "steps": f"[{args.steps}]" if args.steps else None,
        "against": "[" + ", ".join(args.against) + "]" if args.against else None,
        "judge.teacher.spec": args.judge,
        "executor": args.executor,
    }
    overrides = _with_flags(args, flags)
    return run_filter(load_config(FilterConfig, args.config, overrides), restart=args.restart)


def _train(args: argparse.Namespace) -> int:
    from distillery.config import load_config
    from distillery.training.config import TrainConfig
    from distillery.training.train import run_train

    flags: dict[str, object] = {
        "model": args.model,
        "data": args.data,
        "output_dir": args.output_dir,
        "chat_template": args.chat_template,
        "max_length": args.max_length,
        "packing": False if args.no_packing else None,
    }
    overrides = _with_flags(args, flags)
    if args.report_only:
        from pathlib import Path

        from distillery.training.report import write_train_report

        out = load_config(TrainConfig, args.config, overrides).output_dir
        print(f"training report: {write_train_report(Path(out))}")
        return 0
    return run_train(
        load_config(TrainConfig, args.config, overrides),
        prepare_only=args.prepare_only,
        restart=args.restart,
    )


def _export(args: argparse.Namespace) -> int:
    from distillery.export import export_run

    where = export_run(args.run_dir, args.to, args.license, args.rows_per_shard, args.private)
    print(f"exported {args.run_dir} -> {where} (data/train-*.parquet, README.md card)")
    return 0


def _view(args: argparse.Namespace) -> int:
    from distillery.view import write_view

    page, rows = write_view(args.run_dir, args.output)
    print(f"{rows:,} rows -> {page} (open it in a browser; nothing is fetched)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from distillery.demo import run_demo

    return run_demo(args.output_dir, args.rows)


def _complete(args: argparse.Namespace) -> int:
    from distillery.complete import CompleteConfig, run_complete
    from distillery.config import load_config

    flags = {
        "input": args.input,
        "output": args.output,
        "teacher.spec": args.teacher,
        "teacher.concurrency": args.concurrency,
        "teacher.max_cost_usd": args.max_cost_usd,
        "quiet": True if args.quiet else None,
        "teacher.cache": False if args.no_cache else None,
        "executor": args.executor,
        "teacher.batch.detach": True if args.detach else None,
    }
    overrides = _with_flags(args, flags)
    return run_complete(load_config(CompleteConfig, args.config, overrides), restart=args.restart)


def _batches(args: argparse.Namespace) -> int:
    from distillery.teacher.batch_admin import batches_cancel, batches_status

    if args.batches_command == "cancel":
        return batches_cancel(args.run_dir)
    return batches_status(args.run_dir, offline=args.offline)


def _eval_config(args: argparse.Namespace) -> Any:
    """`eval ifeval|winrate`: the flags are shorthands for `EvalConfig` keys (flags win)."""
    from distillery.config import load_config
    from distillery.eval.config import EvalConfig

    flags: dict[str, object] = {"output_dir": args.output_dir}
    if args.eval_command == "harness":
        flags |= {
            "harness.model": args.model,
            "harness.base": args.base,
            "harness.tasks": f"[{args.tasks}]" if args.tasks else None,
            "harness.include_path": args.include_path,
            "harness.limit": args.limit,
            "harness.num_fewshot": args.num_fewshot,
            "harness.batch_size": args.batch_size,
            "harness.device": args.device,
            "harness.apply_chat_template": True if args.apply_chat_template else None,
        }
    elif args.eval_command == "ifeval":
        flags |= {
            "ifeval.inputs": args.inputs,
            "ifeval.responses": args.responses,
            "student.spec": args.model,
            "student.max_tokens": args.max_tokens,
        }
    else:
        flags |= {
            "winrate.instructions": args.instructions,
            "winrate.field": args.field,
            "winrate.student_responses": args.student_responses,
            "winrate.baseline_responses": args.baseline_responses,
            "student.spec": args.student,
            "baseline.spec": args.baseline,
            "judge.spec": args.judge,
            "student.max_tokens": args.max_tokens,
            "baseline.max_tokens": args.max_tokens,
        }
    return load_config(EvalConfig, args.config, _with_flags(args, flags))


def _eval(args: argparse.Namespace) -> int:
    from distillery.eval import run

    if args.eval_command == "ifeval":
        return run.run_ifeval(_eval_config(args), restart=args.restart)
    if args.eval_command == "winrate":
        return run.run_winrate(_eval_config(args), restart=args.restart)
    if args.eval_command == "harness":
        return run.run_harness(_eval_config(args), restart=args.restart)
    if args.eval_command == "report":
        from pathlib import Path

        from distillery.eval.report import write_report

        write_report(Path(args.run_dir))
        print(
            f"report: {Path(args.run_dir) / 'report.html'}; numbers: {Path(args.run_dir) / 'summary.json'}"
        )
        return 0
    if args.eval_command == "compare":
        from pathlib import Path

        from distillery.eval.report import compare

        compare(Path(args.run_a), Path(args.run_b), Path(args.output))
        print(f"comparison: {args.output}")
        return 0
    from distillery.training.heldout import run_loss

    return run_loss(
        args.model, args.data, args.output_dir, args.chat_template, args.max_length, args.stop_token
    )


def _eval_parser(sub: Any, help_text: str) -> None:
    ev = sub.add_parser("eval", help=help_text, description=help_text)
    kinds = ev.add_subparsers(dest="eval_command", required=True, metavar="KIND")
    ifeval = kinds.add_parser(
        "ifeval", help="IFEval strict/loose accuracy (reference-compatible files)"
    )
    ifeval.add_argument("--inputs", help="IFEval input_data.jsonl (key, prompt, ...)")
    ifeval.add_argument("--responses", help="prompt, response JSONL; or generate with --model")
    ifeval.add_argument(
        "--model", "--teacher", dest="model", help="generate responses first, e.g. hf:PATH"
    )
    ifeval.add_argument("--output-dir", help="results, journals and ifeval_config.yaml")
    ifeval.add_argument("--max-tokens", type=int, help="generation limit (default 1024)")
    win = kinds.add_parser(
        "winrate", help="pairwise judge win rate of a student against a baseline"
    )
    win.add_argument("--instructions", help="JSONL with an instruction field")
    win.add_argument("--field", help="the instruction field name (default: instruction)")
    win.add_argument(
        "--student", help="model spec to generate the student's responses (hf:PATH, openai:M, ...)"
    )
    win.add_argument("--student-responses", help="or a file of id, response rows")
    win.add_argument("--baseline", help="model spec for the baseline (e.g. the base model)")
    win.add_argument(
        "--baseline-responses", help="or a file of id, response rows (e.g. reference answers)"
    )
    win.add_argument("--judge", help="judge spec, e.g. anthropic:claude-haiku-4-5")
    win.add_argument("--output-dir", help="results, journals and winrate_config.yaml")
    win.add_argument("--max-tokens", type=int, help="generation limit (default 1024)")
    harness = kinds.add_parser(
        "harness", help="lm-evaluation-harness tasks on the student and its base (forgetting)"
    )
    harness.add_argument("--model", help="the student: a local model dir or hub name")
    harness.add_argument("--base", help="its base model, scored on the same items")
    harness.add_argument("--tasks", help="comma-separated lm_eval tasks, e.g. mmlu,gsm8k")
    harness.add_argument("--include-path", help="a folder of extra task YAMLs")
    harness.add_argument("--limit", type=int, help="only the first N items of each task")
    harness.add_argument("--num-fewshot", type=int, help="few-shot examples (default: the task's)")
    harness.add_argument("--batch-size", type=int, help="lm_eval batch size (default 8)")
    harness.add_argument("--device", help="cuda, cpu, ... (default: cuda if present)")
    harness.add_argument(
        "--apply-chat-template", action="store_true", help="prompts in the model's chat template"
    )
    harness.add_argument("--output-dir", help="harness_*.json and harness_config.yaml")
    for kind in (ifeval, win, harness):
        kind.add_argument("--config", help="YAML eval config (`distillery config eval`)")
        kind.add_argument(
            "--restart",
            action="store_true",
            help="results made with other settings are moved aside (KIND.old-STAMP/) and redone",
        )
        kind.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    loss = kinds.add_parser("loss", help="held-out masked loss and perplexity")
    loss.add_argument(
        "--model", required=True, help="model path (a merged checkpoint or full model)"
    )
    loss.add_argument(
        "--data", required=True, help="held-out 'messages' JSONL (e.g. train's eval_split.jsonl)"
    )
    loss.add_argument("--output-dir", required=True)
    loss.add_argument("--chat-template", help="a .jinja chat template")
    loss.add_argument(
        "--stop-token", help="end-of-turn token (default: derived from the chat template)"
    )
    loss.add_argument("--max-length", type=int, default=2048)
    report = kinds.add_parser("report", help="summary.json + report.html from a run's eval results")
    report.add_argument("run_dir", help="the --output-dir the eval commands wrote to")
    cmp_ = kinds.add_parser("compare", help="two runs' eval numbers side by side")
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--output", required=True, help="HTML file to write")
    ev.set_defaults(func=_eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillery",
        description="Seed tasks in, a curated instruction-tuning dataset and a fine-tuned student out.",
    )
    parser.add_argument("--version", action="version", version=f"distillery {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, _) in STAGES.items():
        if name == "eval":
            _eval_parser(sub, help_text)
            continue
        stage = sub.add_parser(name, help=help_text, description=help_text)
        stage.add_argument("--config", help="YAML config file (see configs/)")
        stage.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    generate = sub.choices["generate"]
    generate.add_argument(
        "--teacher",
        help="teacher for every role not set by its own flag, e.g. openai:gpt-4o-mini",
    )
    generate.add_argument("--evol-teacher", help="teacher for evolution (rewrites, equality check)")
    generate.add_argument("--response-teacher", help="teacher for the responses")
    generate.add_argument("--tag-teacher", help="teacher for Magpie's tags (category, quality)")
    generate.add_argument("--user-teacher", help="teacher playing the user in conversations")
    generate.add_argument("--seeds", help="seed file, directory, or hf:DATASET")
    generate.add_argument("--num-instructions", type=int, help="target number of finished rows")
    generate.add_argument("--output-dir", help="runs are written to OUTPUT_DIR/RUN_ID/")
    generate.add_argument(
        "--run-id", help="run directory name (default: a hash of the settings that decide the rows)"
    )
    generate.add_argument("--quiet", action="store_true", help="no live progress")
    generate.add_argument("--executor", choices=["local", "ray"], help=EXECUTOR_HELP)
    generate.add_argument(
        "--estimate-cost",
        action="store_true",
        help="rehearse offline and print the projected cost; send nothing",
    )
    generate.add_argument(
        "--restart",
        action="store_true",
        help="the run directory holds a run with other settings: move it aside and start anew",
    )
    generate.set_defaults(func=_generate)

    filt = sub.choices["filter"]
    filt.add_argument("--input", help="rows: distillery records, Alpaca or messages JSONL/JSON")
    filt.add_argument("--output-dir", help="kept.jsonl, dropped.jsonl, summary.json, report.html")
    filt.add_argument(
        "--steps", help="comma-separated: heuristics,exact,near,semantic,decontam,judge"
    )
    filt.add_argument(
        "--against",
        action="append",
        help="evaluation set for decontam, hf:NAME[:SPLIT[:FIELD]] or PATH[:FIELD] (repeatable)",
    )
    filt.add_argument(
        "--judge", help="judge model for the judge step, e.g. anthropic:claude-haiku-4-5"
    )
    filt.add_argument("--executor", choices=["local", "ray"], help=EXECUTOR_HELP)
    filt.add_argument(
        "--restart",
        action="store_true",
        help="the output directory holds a run with other settings: move it aside and start anew",
    )
    filt.set_defaults(func=_filter)

    train = sub.choices["train"]
    train.add_argument("--model", help="student: local path or hub name")
    train.add_argument(
        "--data", help="'messages' data: JSONL, Parquet, saved dataset dir, or hf:NAME[:SPLIT]"
    )
    train.add_argument("--output-dir", help="checkpoints, adapter, merged model, metrics")
    train.add_argument("--chat-template", help="a .jinja chat template (default: the tokenizer's)")
    train.add_argument("--max-length", type=int, help="tokens per example / packed row")
    train.add_argument(
        "--no-packing", action="store_true", help="one example per row, padded batches"
    )
    train.add_argument(
        "--prepare-only", action="store_true", help="tokenize, mask, pack, save; no training"
    )
    train.add_argument(
        "--restart",
        action="store_true",
        help="output dir holds a run with other settings or inputs: move it aside, start afresh",
    )
    train.add_argument(
        "--report-only",
        action="store_true",
        help="(re)write OUTPUT_DIR/report.html (loss curve, mix) from a finished run's metrics",
    )
    train.set_defaults(func=_train)

    demo = sub.choices["demo"]
    demo.add_argument("--output-dir", default="runs/demo", help="where the demo run goes")
    demo.add_argument("--rows", type=int, default=60, help="rows to generate")
    demo.set_defaults(func=_demo)

    complete = sub.choices["complete"]
    complete.add_argument("--input", help="JSONL of {id, messages, ...} rows")
    complete.add_argument(
        "--output", help="output JSONL (re-running resumes; its run state is OUTPUT.run/)"
    )
    complete.add_argument("--teacher", help="backend:model, e.g. openai:gpt-4o-mini")
    complete.add_argument("--concurrency", type=int, help="max requests in flight")
    complete.add_argument("--max-cost-usd", type=float, help="stop cleanly at this spend")
    complete.add_argument("--quiet", action="store_true", help="no live progress")
    complete.add_argument("--no-cache", action="store_true", help="bypass the response cache")
    complete.add_argument("--executor", choices=["local", "ray"], help=EXECUTOR_HELP)
    complete.add_argument(
        "--restart",
        action="store_true",
        help="OUTPUT holds answers of another teacher or sampling parameters: move them aside "
        "(to OUTPUT.run.old-STAMP/) and start anew",
    )
    complete.add_argument(
        "--detach",
        action="store_true",
        help="teacher.mode=batch: submit every batch, then exit; re-run the command to collect",
    )
    complete.set_defaults(func=_complete)

    batches = sub.add_parser("batches", help="the batch-API batches of a run (teacher.mode=batch)")
    batches_sub = batches.add_subparsers(dest="batches_command", required=True, metavar="ACTION")
    b_status = batches_sub.add_parser("status", help="each batch's state, counts, cost and age")
    b_status.add_argument("run_dir", help="a run directory (e.g. OUT.jsonl.run) or OUT.jsonl")
    b_status.add_argument("--offline", action="store_true", help="the ledger only; ask no API")
    b_status.set_defaults(func=_batches)
    b_cancel = batches_sub.add_parser("cancel", help="cancel the run's open batches")
    b_cancel.add_argument("run_dir", help="a run directory (e.g. OUT.jsonl.run) or OUT.jsonl")
    b_cancel.set_defaults(func=_batches)

    export = sub.add_parser(
        "export",
        help="a run's rows in the Hugging Face Hub layout: Parquet shards + a dataset card",
        description="Write a filter run's kept rows (or a generate run's rows) as "
        "data/train-*.parquet and a README.md card made from the run's own records.",
    )
    export.add_argument("run_dir", help="a filter run dir (kept.jsonl) or a generate run dir")
    export.add_argument(
        "--to",
        required=True,
        help="a new directory (or a previous export, replaced), or hub:OWNER/NAME to push "
        "(needs HF_TOKEN)",
    )
    export.add_argument(
        "--license",
        default="other",
        help="a Hub license id for the card, e.g. apache-2.0, mit, cc-by-4.0 (default: other, "
        "i.e. unset)",
    )
    export.add_argument("--rows-per-shard", type=int, default=100_000, help="rows per Parquet file")
    export.add_argument("--private", action="store_true", help="hub: create the repo private")
    export.set_defaults(func=_export)

    view = sub.add_parser(
        "view",
        help="browse a run's rows: one self-contained HTML file (search, filters, lineage, calls)",
        description="Write one HTML file (no server, nothing fetched) to browse a run's rows: "
        "search; filter by origin, category, rule, judge score, kept or dropped; for one row its "
        "messages, lineage back to the seed, the rows it was compared with and every LLM call.",
    )
    view.add_argument(
        "run_dir", help="a generate run, a filter run, or a directory holding both (runs/demo)"
    )
    view.add_argument(
        "--output",
        help="the HTML file to write; replaces only a page view wrote (default: RUN_DIR/view.html)",
    )
    view.set_defaults(func=_view)

    config = sub.add_parser("config", help="print the config reference of a stage")
    config.add_argument("stage", choices=sorted(CONFIG_MODELS))
    config.set_defaults(func=_config_reference)

    seeds = sub.add_parser("seeds", help="work with seed task files")
    seeds_sub = seeds.add_subparsers(dest="seeds_command", required=True, metavar="SUBCOMMAND")
    validate = seeds_sub.add_parser(
        "validate", help="check schema, unique ids, duplicates and category coverage"
    )
    validate.add_argument(
        "path", help="a seed .jsonl file, a directory of them, or hf:DATASET[:SPLIT]"
    )
    validate.add_argument(
        "--min-categories",
        type=int,
        default=15,
        help="fail below this many categories (default 15)",
    )
    validate.add_argument(
        "--near-duplicate-rouge-l",
        type=float,
        default=0.7,
        help="instructions at or above this ROUGE-L F1 count as near-duplicates (default 0.7)",
    )
    validate.set_defaults(func=_seeds_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides after a flag (`--quiet k=v`): argparse takes only one run of them
    if extra and hasattr(args, "overrides") and all("=" in x and x[0] != "-" for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"distillery: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BudgetStop as exc:  # every stage: outputs so far are saved; re-run to continue
        print(f"distillery: stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("distillery: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # teacher.batch.detach, from any stage: submitted, not failed
        from distillery.teacher.batch import Detached

        if not isinstance(exc, Detached):
            raise
        print(f"distillery: {exc}; re-run the same command to collect the answers")
        return 0


if __name__ == "__main__":
    sys.exit(main())
