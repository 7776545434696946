"""`distillery demo`: generate -> filter -> train -> eval, offline on a CPU in minutes.

The scripted `fake` teacher writes the data (every row, manifest and report says DEMO DATA),
the student is a tiny random Llama with a tokenizer trained on the spot, and every stage runs
its real code: cache, journals, Self-Instruct and Evol-Instruct filters, conversations of
1-3 turns with a simulated user, a Magpie pass (the random student drawing instructions
from its chat template's pre-query text: noise, but the rendering, the stop at its end of
turn, the filters, tags and multi-turn all run), dedup, the tag rules, the judge, masking,
packing, TRL training, held-out loss, IFEval scoring and the pairwise win rate.
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

from distillery.jsonl import atomic_write_text, write_jsonl
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
        (
            "student (tiny random Llama, tokenizer trained on the spot)",
            lambda: _student(student, seeds),
        ),
        ("generate (fake teacher: DEMO DATA, 1-3 turns)", lambda: _generate(out, rows, cache)),
        ("generate: Magpie pass (the random student draws)", lambda: _magpie(out, student, cache)),
        ("filter (both passes)", lambda: _filter(out, cache)),
        ("train (the tiny student on the kept rows)", lambda: _train(out, student)),
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
        "conversation": {"turns": [1, 3]},  # the simulated user asks follow-ups, or ends
    }
    return run_generate(GenerateConfig.model_validate(config))


def _magpie(out: Path, student: Path, teacher: dict[str, str]) -> int:
    """Magpie with the random student as the `hf:` model (answers and tags from the scripted
    teacher): its draws are noise, most run to max_tokens before its end-of-turn token and
    are rejected as cut off, so the target may not be met - the rows made go on."""
    from distillery.generate.config import GenerateConfig
    from distillery.generate.run import EXIT_TARGET_NOT_MET, run_generate

    drawing = {"spec": f"hf:{student}", "cache_path": teacher["cache_path"], "seed": 0,
               "max_tokens": 128, "max_length_retries": 0, "hf": {"device": "cpu"}}  # fmt: skip
    config = {
        "method": "magpie",
        "output_dir": str(out / "passes"),  # not beside generate/: one generate run per view
        "run_id": "magpie",
        "num_instructions": 4,
        "quiet": True,
        "max_top_ups": 0,
        "teacher": drawing,
        "response_teacher": teacher,
        "tag_teacher": teacher,
        "evol": {"rounds": 0},
        "magpie": {"oversample": 6, "max_rounds": 2, "instruction": {"max_tokens": 128}},
        "conversation": {"turns": [1, 2]},
    }
    code = run_generate(GenerateConfig.model_validate(config))
    return 0 if code == EXIT_TARGET_NOT_MET else code


def _filter_input(out: Path) -> Path:
    """Both passes' rows in one file, the filter's input."""
    rows = [out / "generate" / "generated.jsonl", out / "passes" / "magpie" / "generated.jsonl"]
    text = "".join(p.read_text(encoding="utf-8") for p in rows if p.is_file())
    target = out / "generated_all.jsonl"
    atomic_write_text(target, text)
    return target


def _filter(out: Path, teacher: dict[str, str]) -> int:
    from distillery.filter.config import FilterConfig
    from distillery.filter.run import run_filter

    config = {
        "input": str(_filter_input(out)),
        "output_dir": str(out / "filter"),
        "steps": ["heuristics", "tags", "exact", "near", "decontam", "judge"],
        "tags": {"min_input_quality": "average"},  # Magpie's rows carry tags; others are kept
        "against": [str(IFEVAL_DEMO)],
        "decontam": {"embedding_threshold": None},
        "judge": {"teacher": teacher, "min_score": 5},
    }
    return run_filter(FilterConfig.model_validate(config))


def _student(student: Path, seeds: list[Any]) -> int:
    """A tiny random Llama with a tokenizer trained on the seeds (ChatML template): Magpie's
    model, and the student that trains."""
    from distillery.training.tiny import build_tiny_lm, build_tokenizer

    corpus = [s.instruction for s in seeds] + [i.output for s in seeds for i in s.instances]
    if not (student / "config.json").is_file():
        build_tiny_lm(student, build_tokenizer(corpus, vocab_size=600), width=64)
    return 0


def _train(out: Path, student: Path) -> int:
    """The tiny student fine-tuned on the kept rows (both passes, every assistant turn)."""
    from distillery.training.config import TrainConfig
    from distillery.training.train import run_train

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
        eval_steps=10,  # held-out points on the training report's loss curve
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
    base = EvalConfig.model_validate(  # the untrained student: the report sets them side by side
        {
            "output_dir": str(ev / "ifeval-base"),
            "student": {"spec": f"hf:{student}", **answering},
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
            or run_ifeval(base)
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
