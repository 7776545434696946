"""`distillery demo`: generate -> filter -> train -> eval, offline on a CPU in minutes.

The scripted `fake` teacher writes the data (every row, manifest and report says DEMO DATA),
the student is a tiny random Llama with a tokenizer trained on the spot, and every stage runs
its real code: cache, journals, Self-Instruct and Evol-Instruct filters, dedup, the judge,
masking, packing, TRL training, held-out loss, IFEval scoring and the pairwise win rate.
`runs/demo/index.html` links every stage's output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from distillery.jsonl import atomic_write_text, iter_json_lines, write_jsonl
from distillery.reports import render
from distillery.resources import BUILTIN_SEEDS, shipped
from distillery.seeds import load_seeds

IFEVAL_DEMO = shipped("demo") / "ifeval_demo.jsonl"


def _step(name: str, started: float) -> None:
    print(f"== {name} ({time.monotonic() - started:.0f}s)", flush=True)


def run_demo(out_dir: str = "runs/demo", rows: int = 60) -> int:
    from distillery.eval.ifeval import evaluate
    from distillery.eval.report import write_report
    from distillery.eval.run import generate_responses
    from distillery.filter.config import FilterConfig
    from distillery.filter.run import run_filter
    from distillery.generate.config import GenerateConfig
    from distillery.generate.run import run_generate
    from distillery.training.config import TrainConfig
    from distillery.training.tiny import build_tiny_lm, build_tokenizer
    from distillery.training.train import run_train

    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = {"spec": "fake", "cache_path": str(out / "teacher_cache.sqlite")}

    _step("generate (fake teacher: DEMO DATA)", started)
    gen = GenerateConfig.model_validate(
        {
            "seeds": BUILTIN_SEEDS,
            "output_dir": str(out),
            "run_id": "generate",
            "num_instructions": rows,
            "quiet": True,
            "teacher": cache,
            "evol": {"rounds": 2},
        }
    )
    code = run_generate(gen)
    if code:
        return code

    _step("filter", started)
    filt = FilterConfig.model_validate(
        {
            "input": str(out / "generate" / "generated.jsonl"),
            "output_dir": str(out / "filter"),
            "steps": ["heuristics", "exact", "near", "decontam", "judge"],
            "against": [str(IFEVAL_DEMO)],
            "decontam": {"embedding_threshold": None},
            "judge": {"teacher": cache, "min_score": 5},
        }
    )
    run_filter(filt)

    _step("train (tiny random student, tokenizer trained on the spot)", started)
    seeds = load_seeds(BUILTIN_SEEDS)
    corpus = [s.instruction for s in seeds] + [i.output for s in seeds for i in s.instances]
    student = build_tiny_lm(out / "student", build_tokenizer(corpus, vocab_size=600), width=64)
    train = TrainConfig(
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
    run_train(train)

    _step("eval (held-out loss, IFEval, win rate vs the untrained student)", started)
    from distillery.eval.winrate import summarise
    from distillery.training.heldout import heldout_loss

    ev = out / "eval"
    ev.mkdir(exist_ok=True)
    model = out / "train" / "model"
    loss = heldout_loss(str(model), str(out / "train" / "eval_split.jsonl"), max_length=1024)
    atomic_write_text(ev / "heldout_loss.json", json.dumps(loss, indent=1) + "\n")
    prompts = [(str(obj["key"]), obj["prompt"]) for _, obj in iter_json_lines(IFEVAL_DEMO)]
    texts = generate_responses(f"hf:{model}", prompts, ev / "ifeval", "ifeval", max_tokens=48)
    by_key = dict(prompts)
    write_jsonl(
        ev / "ifeval" / "responses.jsonl",
        ({"prompt": by_key[k], "response": texts[k]} for k, _ in prompts),
    )
    evaluate(IFEVAL_DEMO, ev / "ifeval" / "responses.jsonl", ev / "ifeval")
    questions = [(s.id, s.instruction) for s in seeds[:: max(1, len(seeds) // 12)]][:12]
    mine = generate_responses(f"hf:{model}", questions, ev, "student", max_tokens=48)
    base = generate_responses(f"hf:{student}", questions, ev, "baseline", max_tokens=48)
    rows_ = [(qid, q, mine[qid], base[qid]) for qid, q in questions]
    summary = _winrate(rows_, ev, cache)
    atomic_write_text(
        ev / "winrate_summary.json", json.dumps(summarise(summary, "fake"), indent=1) + "\n"
    )
    write_report(ev)

    _index(out, time.monotonic() - started)
    print(f"done in {time.monotonic() - started:.0f}s: open {out / 'index.html'}")
    print(
        f"  filter report: {out / 'filter' / 'report.html'}\n  eval report:   {out / 'eval' / 'report.html'}"
    )
    return 0


def _winrate(rows: list[tuple[str, str, str, str]], ev: Path, teacher: dict[str, str]):
    import asyncio

    from distillery.judging import judge_pairs
    from distillery.teacher.config import TeacherConfig
    from distillery.teacher.engine import Teacher

    async def go():
        judge = await Teacher(TeacherConfig.model_validate(teacher)).start()
        try:
            return await judge_pairs(judge, rows, ev / ".judge.journal")
        finally:
            await judge.aclose()

    return asyncio.run(go())


def _index(out: Path, seconds: float) -> None:
    links = [
        ("Generate: manifest (counts, rejections, tokens)", "generate/manifest.json"),
        ("Generate: rows with lineage", "generate/generated.jsonl"),
        ("Generate: rejected candidates with evidence", "generate/rejected.jsonl"),
        ("Filter: report", "filter/report.html"),
        ("Filter: summary", "filter/summary.json"),
        ("Train: metrics", "train/metrics.json"),
        ("Eval: report", "eval/report.html"),
        ("Eval: summary", "eval/summary.json"),
    ]
    present = [(label, href) for label, href in links if (out / href).exists()]
    page = render("demo_index.html.jinja", seconds=seconds, links=present)
    atomic_write_text(out / "index.html", page)
