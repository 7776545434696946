"""`distillery demo`: generate -> filter -> train -> eval, offline on a CPU in minutes.

The scripted `fake` teacher writes the data (every row, manifest and report says DEMO DATA),
the student is a tiny random Llama with a tokenizer trained on the spot, and every stage runs
its real code: cache, journals, Self-Instruct and Evol-Instruct filters, dedup, the judge,
masking, packing, TRL training, held-out loss, IFEval scoring and the pairwise win rate.
`runs/demo/index.html` shows each stage's headline numbers and links its outputs, and
`runs/demo/view.html` browses the rows.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery.jsonl import write_jsonl
from distillery.resources import BUILTIN_SEEDS, shipped
from distillery.seeds import load_seeds

IFEVAL_DEMO = shipped("demo") / "ifeval_demo.jsonl"


def _step(name: str, started: float) -> None:
    print(f"== {name} ({time.monotonic() - started:.0f}s)", flush=True)


def run_demo(out_dir: str = "runs/demo", rows: int = 60) -> int:
    """Each stage as a user runs it, on the scripted teacher and a tiny student; the first
    stage that does not exit 0 ends the demo with its exit code."""
    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = {"spec": "fake", "cache_path": str(out / "teacher_cache.sqlite")}
    seeds = load_seeds(BUILTIN_SEEDS)
    student = out / "student"
    steps: list[tuple[str, Callable[[], int]]] = [
        ("generate (fake teacher: DEMO DATA)", lambda: _generate(out, rows, cache)),
        ("filter", lambda: _filter(out, cache)),
        (
            "train (tiny random student, tokenizer trained on the spot)",
            lambda: _train(out, student, seeds),
        ),
        (
            "eval (held-out loss, IFEval, win rate vs the untrained student)",
            lambda: _eval(out, student, seeds, cache["cache_path"]),
        ),
    ]
    for name, step in steps:
        _step(name, started)
        code = step()
        if code:
            return code
    _index(out, time.monotonic() - started)
    print(f"done in {time.monotonic() - started:.0f}s: open {out / 'index.html'}")
    print(f"  filter report: {out / 'filter' / 'report.html'}")
    print(f"  eval report:   {out / 'eval' / 'report.html'}")
    print(f"  row explorer:  {out / 'view.html'}")
    return 0


def _generate(out: Path, rows: int, teacher: dict[str, str]) -> int:
    from distillery.generate.config import GenerateConfig
    from distillery.generate.run import run_generate

    config = {
        "seeds": BUILTIN_SEEDS,
        "output_dir": str(out),
        "run_id": "generate",
        "num_instructions": rows,
        "quiet": True,
        "teacher": teacher,
        "evol": {"rounds": 2},
    }
    return run_generate(GenerateConfig.model_validate(config))


def _filter(out: Path, teacher: dict[str, str]) -> int:
    from distillery.filter.config import FilterConfig
    from distillery.filter.run import run_filter

    config = {
        "input": str(out / "generate" / "generated.jsonl"),
        "output_dir": str(out / "filter"),
        "steps": ["heuristics", "exact", "near", "decontam", "judge"],
        "against": [str(IFEVAL_DEMO)],
        "decontam": {"embedding_threshold": None},
        "judge": {"teacher": teacher, "min_score": 5},
    }
    return run_filter(FilterConfig.model_validate(config))


def _train(out: Path, student: Path, seeds: list[Any]) -> int:
    """A tiny random Llama with a tokenizer trained on the seeds, fine-tuned on the kept rows."""
    from distillery.training.config import TrainConfig
    from distillery.training.tiny import build_tiny_lm, build_tokenizer
    from distillery.training.train import run_train

    corpus = [s.instruction for s in seeds] + [i.output for s in seeds for i in s.instances]
    if not (student / "config.json").is_file():
        build_tiny_lm(student, build_tokenizer(corpus, vocab_size=600), width=64)
    config = TrainConfig(
        model=str(student),
        data=str(out / "filter" / "kept.jsonl"),
        output_dir=str(out / "train"),
        mode="full",
        max_length=1024,
        batch_size=2,
        grad_accum=2,
        max_steps=30,
        learning_rate=3e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        eval_fraction=0.1,
        logging_steps=5,
        save_steps=30,
        merge=False,
    )
    return run_train(config)


def _eval(out: Path, student: Path, seeds: list[Any], cache_path: str) -> int:
    """`distillery eval loss`, `eval ifeval` and `eval winrate` as a user runs them (their
    printed summaries go to eval/*.json, not the terminal), then `eval report`."""
    from distillery.eval.config import EvalConfig
    from distillery.eval.report import write_report
    from distillery.eval.run import run_ifeval, run_winrate
    from distillery.training.heldout import run_loss

    ev, model = out / "eval", out / "train" / "model"
    questions = out / "eval_questions.jsonl"
    picked = seeds[:: max(1, len(seeds) // 12)][:12]
    write_jsonl(questions, ({"id": s.id, "instruction": s.instruction} for s in picked))
    answering = {"max_tokens": 48, "cache_path": cache_path}
    ifeval = EvalConfig.model_validate(
        {
            "output_dir": str(ev / "ifeval"),
            "student": {"spec": f"hf:{model}", **answering},
            "ifeval": {"inputs": str(IFEVAL_DEMO)},
        }
    )
    winrate = EvalConfig.model_validate(
        {
            "output_dir": str(ev),
            "student": {"spec": f"hf:{model}", **answering},
            "baseline": {"spec": f"hf:{student}", **answering},
            "judge": {"spec": "fake", "cache_path": cache_path},
            "winrate": {"instructions": str(questions)},
        }
    )
    with contextlib.redirect_stdout(io.StringIO()):
        code = (
            run_loss(str(model), str(out / "train" / "eval_split.jsonl"), str(ev), None, 1024)
            or run_ifeval(ifeval)
            or run_winrate(winrate)
        )
    if code == 0:
        write_report(ev)
    return code


def _index(out: Path, seconds: float) -> None:
    """The row explorer (view.html) and the index page with each stage's headline numbers."""
    from distillery.run_index import write_index
    from distillery.view import write_view

    write_view(out, out / "view.html")
    write_index(out, seconds)
