"""The filter's outputs from a stream of rows (`filter.outputs.OutputWriter`, `filter.rowstats`):
row by row and in blocks they write the same files, the counts match those made over the whole
row list, the report's samples are `random.sample`'s, nothing is half-written after an error,
and the writer holds no list of rows."""

from __future__ import annotations

import json
import pickle
import random
import tracemalloc
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
from distillery.export import to_hf_dataset
from distillery.filter.config import FilterConfig
from distillery.filter.conversations import turn_counts
from distillery.filter.decontam import EvalItem, certificate
from distillery.filter.outputs import OutputWriter, RunFacts, block_lines, dropped_record
from distillery.filter.report import kept_samples, kept_shown
from distillery.filter.rowstats import RowStats, sample_plan
from distillery.filter.tag_rules import tag_counts
from distillery.records import Drop, Message, Record
from distillery.runstate import RunDir

STEPS = ["heuristics", "exact", "decontam", "judge"]
AGAINST = ["ifeval.jsonl", "hf:openai/gsm8k"]
EVALS = [EvalItem("ifeval.jsonl", i, f"eval item {i}") for i in range(4)] + [
    EvalItem("openai/gsm8k", 0, "a gsm8k item")
]
JUDGE = {"model": "fake", "generator_models": ["fake"], "same_family": True, "judged": 40,
         "parse_failures": 2, "parse_failure_rate": 0.05, "call_failures": 0,
         "failures_by_status": {"parse_error": 2}, "reasked": 2,
         "prompts": {"judge_quality": 40}, "scores": [7.0, 8.0, 5.0]}  # fmt: skip


def _row(i: int) -> Record:
    rng = random.Random(i)
    origin = ["self_instruct", "evol:deepen", "evol:breadth", "external"][i % 4]
    user = f"Explain item {i} with {' '.join(rng.choice('abcdefg') for _ in range(i % 7 + 3))}"
    messages = [Message(role="user", content=user),
                Message(role="assistant", content="word " * (i % 13 + 1) + f"end {i}")]  # fmt: skip
    if i % 9 == 0:  # a conversation
        messages += [Message(role="user", content="and then?"),
                     Message(role="assistant", content="then more")]  # fmt: skip
    meta: dict[str, Any] = {"n": i}
    if i % 3 == 0:
        meta["tags"] = {"task_category": ["math", "science", "writing"][i % 5 % 3],
                        "input_quality": ["poor", "good", "excellent", "odd"][i % 4],
                        "difficulty": ["easy", "hard"][i % 2]}  # fmt: skip
    return Record(
        id=f"r{i:03d}", instruction=user, messages=messages, origin=origin,
        round=0 if origin[:5] != "evol:" else 1 + i % 3,
        category=[None, "science", "writing"][i % 3], meta=meta, demo=i == 4,
        scores={"judge": float(i % 10)} if i % 2 else {},
    )  # fmt: skip


def _drop(i: int) -> tuple[Drop | None, str | None]:
    """A mix of rules, several with more than five rows (the report samples five)."""
    if i % 5 == 1:
        return Drop(
            rule="refusal", reason="as an AI", evidence={"phrase": "as an AI"}
        ), "heuristics"
    if i % 7 == 2:
        return Drop(rule="exact_duplicate", evidence={"duplicate_of": f"r{i - 1:03d}"}), "exact"
    if i % 11 == 3:
        source = "ifeval.jsonl" if i % 2 else "openai/gsm8k"
        evidence = {"eval_source": source, "eval_index": 0, "shared_ngrams": 3}
        return Drop(
            rule="decontam_ngram", reason=f"n-grams of {source}", evidence=evidence
        ), "decontam"
    if i % 13 == 4:
        evidence = {"eval_source": "ifeval.jsonl", "cosine": 0.97, "note": "é ü"}
        return Drop(rule="decontam_embedding", evidence=evidence), "decontam"
    if i % 6 == 0:
        return Drop(
            rule="judge_below_threshold", reason="score < 6", evidence={"score": 5.0}
        ), "judge"
    return None, None  # fmt: skip


ROWS = [(_row(i), *_drop(i)) for i in range(90)]


def _config(**extra: Any) -> FilterConfig:
    return FilterConfig.model_validate(
        {"input": "in.jsonl", "output_dir": "out", "steps": STEPS, "against": AGAINST,
         "seed": 7, **extra}
    )  # fmt: skip


def _facts(rundir: RunDir, judge: dict[str, Any] | None = None) -> RunFacts:
    funnel = [{"step": "input", "in": len(ROWS), "dropped": 0, "remaining": len(ROWS),
               "seconds": 0.0}, {"step": "decontam", "in": 70, "dropped": 9, "remaining": 61,
               "seconds": 0.1}]  # fmt: skip
    return RunFacts(funnel, 1.5, rundir, {"method": "join"}, judge or JUDGE, [0.5, 0.91], EVALS)


def _write(out: Path, blocks: int | None, config: FilterConfig | None = None) -> int:
    """ROWS through `add` one by one (blocks None) or as `blocks` blocks through `add_block`,
    each block's counts made apart and pickled, as a worker would send them."""
    ident = {"config": {}, "inputs": {}}
    with RunDir(out, "filter", ident) as rundir, OutputWriter(out, config or _config()) as writer:
        if blocks is None:
            for row, drop, step in ROWS:
                writer.add(row, drop, step)
        else:
            size = -(-len(ROWS) // blocks)
            for lo in range(0, len(ROWS), size):
                kept, dropped, rules, stats = block_lines(ROWS[lo : lo + size])
                writer.add_block(kept, dropped, rules, pickle.loads(pickle.dumps(stats)))
        return writer.finish(_facts(rundir))


FILES = ("kept.jsonl", "dropped.jsonl", "summary.json", "report.html", "config.yaml")


def test_rows_one_by_one_and_in_blocks_write_the_same_files(tmp_path: Path) -> None:
    assert _write(tmp_path / "one", None) == 0
    assert _write(tmp_path / "blocks", 3) == 0
    for name in FILES:
        one, blocks = (tmp_path / d / name for d in ("one", "blocks"))
        assert one.read_bytes() == blocks.read_bytes(), name
    # the files hold what the rows say: kept rows as they are, dropped ones with their drop
    kept = [row for row, drop, _ in ROWS if drop is None]
    dropped = [dropped_record(row, drop, step) for row, drop, step in ROWS if drop is not None]
    out = tmp_path / "blocks"
    assert (out / "kept.jsonl").read_text() == "".join(r.model_dump_json() + "\n" for r in kept)
    assert (out / "dropped.jsonl").read_text().splitlines() == [
        r.model_dump_json() for r in dropped
    ]
    assert all(r.meta["filter_step"] for r in dropped)
    # kept_dataset: streamed from kept.jsonl, the same table as the in-memory export
    import datasets

    saved = datasets.load_from_disk(str(out / "kept_dataset"))
    assert saved.data.table.equals(to_hf_dataset(kept).data.table)


def test_summary_counts_are_those_over_the_whole_row_list(tmp_path: Path) -> None:
    _write(tmp_path / "out", 4)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = [row for row, _, _ in ROWS]
    kept = [row for row, drop, _ in ROWS if drop is None]
    drops = [drop for _, drop, _ in ROWS if drop is not None]
    assert (s["rows_in"], s["rows_kept"], s["rows_dropped"]) == (90, len(kept), len(drops))
    assert s["demo"] is True
    # Counters in order of first appearance, as one pass over the rows gives them
    assert list(s["dropped_by_rule"].items()) == list(Counter(d.rule for d in drops).items())
    assert list(s["categories_before"].items()) == list(
        Counter(r.category or "(none)" for r in rows).items()
    )
    assert list(s["categories_after"]) == list(Counter(r.category or "(none)" for r in kept))
    assert s["lengths"]["response_tokens_after"] == [len((r.response or "").split()) for r in kept]
    assert s["turns_per_conversation"] == {"before": turn_counts(rows), "after": turn_counts(kept)}
    assert s["tags"] == {"before": tag_counts(rows), "after": tag_counts(kept)}
    assert [list(t) for t in s["tags"]["before"].values()] == [
        list(t) for t in tag_counts(rows).values()
    ]
    config = _config()
    expected = certificate(config.decontam, AGAINST, EVALS, drops, 70, config.semantic.model,
                           multi_turn=True)  # fmt: skip
    assert json.dumps(s["decontam"]) == json.dumps(expected)
    ifeval = Counter(d.rule for d in drops if d.evidence.get("eval_source") == "ifeval.jsonl")
    assert s["decontam"]["benchmarks"][0]["by_rule"] == dict(ifeval) and len(ifeval) == 2
    assert s["judge"]["parse_failure_exceeded"] is False and s["near"] == {"method": "join"}


def _ordered(x: Any) -> Any:
    """Counts with every dict's key order (`==` on Counters ignores it)."""
    if is_dataclass(x):
        return [(f.name, _ordered(getattr(x, f.name))) for f in fields(x)]
    if isinstance(x, dict):
        return [(k, _ordered(v)) for k, v in x.items()]
    return x.tolist() if isinstance(x, array) else x


def test_merged_row_stats_equal_one_pass() -> None:
    whole = RowStats()
    for row, drop, _ in ROWS:
        whole.add(row, drop)
    parts = [block_lines(ROWS[lo : lo + 17])[3] for lo in range(0, len(ROWS), 17)]
    merged = RowStats()
    for part in parts:
        merged.merge(pickle.loads(pickle.dumps(part)))
    assert _ordered(merged) == _ordered(whole)
    assert list(whole.dropped_by_rule) == list(dict.fromkeys(d.rule for _, d, _ in ROWS if d))


@pytest.mark.parametrize("seed", [0, 7, 12345])
def test_sample_plan_picks_what_random_sample_picks(seed: int) -> None:
    sizes = {"a": 1, "b": 4, "c": 5, "d": 6, "e": 21, "f": 22, "g": 400, "h": 5000}
    plan = sample_plan(seed, 3000, sizes)
    rng = random.Random(seed)  # the old `_samples`: one generator, rules in sorted order
    for rule in sorted(sizes):
        of_rule = [f"{rule}{k}" for k in range(sizes[rule])]
        picked = rng.sample(of_rule, min(5, len(of_rule)))
        assert picked == [of_rule[k] for k in plan.dropped[rule]]
    for n in (0, 1, 5, 6, 3000):
        kept = [f"k{i}" for i in range(n)]
        old = random.Random(seed).sample(kept, min(5, n))  # the old `kept_samples`
        assert old == [kept[k] for k in sample_plan(seed, n, {}).kept]
    rows = [row for row, _, _ in ROWS]
    picked = [rows[k] for k in sample_plan(seed, len(rows), {}).kept]
    assert kept_samples(rows, seed) == kept_shown(picked)


def test_report_shows_the_dropped_rows_random_sample_picks(tmp_path: Path) -> None:
    _write(tmp_path / "out", 2)
    page = (tmp_path / "out" / "report.html").read_text()
    dropped = [(row, drop) for row, drop, _ in ROWS if drop is not None]
    section = page.split("Sample of dropped rows")[1]
    rng = random.Random(7)  # the config's seed; the old `_samples`
    for rule in sorted({d.rule for _, d in dropped}):
        of_rule = [row.id for row, d in dropped if d.rule == rule]
        picked = rng.sample(of_rule, min(5, len(of_rule)))
        shown = [rid for rid in of_rule if f"<code>{rid}</code>" in section]
        assert sorted(shown) == sorted(picked), rule
        at = [section.index(f"<code>{rid}</code>") for rid in picked]
        assert at == sorted(at), rule  # in the order drawn
    assert "é ü" in page  # evidence as JSON text, not \\u-escaped


def test_an_error_while_writing_leaves_no_file_half_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.jsonl").write_text("from the previous run\n")
    with pytest.raises(RuntimeError, match="killed"), OutputWriter(out, _config()) as writer:
        for n, (row, drop, step) in enumerate(ROWS):
            writer.add(row, drop, step)
            if n == 50:
                assert (out / "kept.jsonl").read_text() == "from the previous run\n"
                assert not (out / "dropped.jsonl").exists()
                raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["kept.jsonl"]  # no temp file left
    assert (out / "kept.jsonl").read_text() == "from the previous run\n"


def test_judge_failures_over_the_bound_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    judge = {**JUDGE, "parse_failures": 20, "parse_failure_rate": 0.5}
    out, ident = tmp_path / "out", {"config": {}, "inputs": {}}
    with RunDir(out, "filter", ident) as rundir, OutputWriter(out, _config()) as writer:
        for row, drop, step in ROWS:
            writer.add(row, drop, step)
        assert writer.finish(_facts(rundir, judge)) == 3
    assert "judge failed: 20 of 40 verdicts" in capsys.readouterr().out
    assert (tmp_path / "out" / "report.html").exists()


def _many_rows(n: int) -> Iterator[tuple[Record, Drop | None, str | None]]:
    body = "lorem ipsum dolor sit amet " * 80
    for i in range(n):
        row = Record(id=f"m{i}", instruction=f"question {i}", origin="external",
                     messages=[Message(role="user", content=f"question {i}"),
                               Message(role="assistant", content=f"{body} {i}")])  # fmt: skip
        drop = Drop(rule=f"rule{i % 3}", evidence={"i": i}) if i % 4 == 0 else None
        yield row, drop, "heuristics" if drop else None


def test_the_writer_holds_no_list_of_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    n = 12_000
    size = n * len(next(_many_rows(1))[0].model_dump_json())  # the rows differ by digits
    _write(tmp_path / "warm", None)  # modules imported before memory is traced
    out = tmp_path / "out"
    with RunDir(out, "filter", {"config": {}, "inputs": {}}) as rundir:
        tracemalloc.start()
        try:
            with OutputWriter(out, _config(steps=["heuristics"])) as writer:
                for row, drop, step in _many_rows(n):
                    writer.add(row, drop, step)
                adding = tracemalloc.get_traced_memory()[1]
                writer.finish(_facts(rundir))  # kept_dataset streamed from kept.jsonl
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # the rows' JSON alone is `size` bytes (their objects far more); the writer stays well
    # under it: per row it keeps a length and a rule code; the dataset writer buffers 1,000 rows
    assert size > 20_000_000 and adding < size / 20 and peak < size / 3, (adding, peak, size)
    assert sum(1 for _ in (out / "kept.jsonl").open()) == n - n // 4
    assert datasets.load_from_disk(str(out / "kept_dataset")).num_rows == n - n // 4
    assert not cache.exists()  # nothing went through the datasets cache
