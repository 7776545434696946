"""The filter's outputs, written from a stream of rows in input order so that no step needs them
all in memory: `kept.jsonl` and `dropped.jsonl` (temp files, renamed into place together when
every row is in), then `kept_dataset/` (streamed from kept.jsonl), `config.yaml`,
`summary.json` and `report.html`. Also the judge's loud failure: too many unparsable verdicts
end the run with exit code 3 and a line saying how many and where their raw text is.

`OutputWriter` takes rows one at a time (`add`) or as blocks already serialised where they
live (`add_block`, with the block's `RowStats`; `block_lines` makes both); `finish(RunFacts)`
writes the rest. `write_outputs` is the local executor's loop over it.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from distillery.config import save_resolved_config
from distillery.export import save_hf_dataset
from distillery.filter.config import FilterConfig
from distillery.filter.decontam import EvalItem, certificate
from distillery.filter.report import render_report
from distillery.filter.rowstats import RowStats, SamplePlan, sample_plan
from distillery.jsonl import _dumps, atomic_open, atomic_write_text
from distillery.records import Drop, Record
from distillery.runstate import RunDir
from distillery.teacher.outcome import COUNTERS

if TYPE_CHECKING:
    from distillery.filter.run import Run

EXIT_JUDGE_FAILED = 3


def kept_line(row: Record) -> str:
    """A kept row as its kept.jsonl line (without the newline)."""
    return _dumps(row)


def dropped_record(row: Record, drop: Drop, step: str | None) -> Record:
    """A dropped row as dropped.jsonl holds it: `dropped_by` set, `meta.filter_step` added."""
    return row.model_copy(update={"dropped_by": drop, "meta": {**row.meta, "filter_step": step}})


def dropped_line(row: Record, drop: Drop, step: str | None) -> str:
    """A dropped row as its dropped.jsonl line (without the newline)."""
    return _dumps(dropped_record(row, drop, step))


def block_lines(
    rows: Iterable[tuple[Record, Drop | None, str | None]],
) -> tuple[list[str], list[str], list[str], RowStats]:
    """(row, drop or None, step) in input order -> `OutputWriter.add_block`'s arguments:
    kept lines, dropped lines, the dropped lines' rules, and the rows' `RowStats`."""
    kept: list[str] = []
    dropped: list[str] = []
    rules: list[str] = []
    stats = RowStats()
    for row, drop, step in rows:
        stats.add(row, drop)
        if drop is None:
            kept.append(kept_line(row))
        else:
            dropped.append(dropped_line(row, drop, step))
            rules.append(drop.rule)
    return kept, dropped, rules, stats


@dataclass
class RunFacts:
    """What the outputs say that is not counted per row."""

    funnel: list[dict[str, Any]]  # per step: rows in, dropped, remaining, seconds
    wall_s: float
    rundir: RunDir
    near_stats: dict[str, Any] | None = None
    judge_info: dict[str, Any] | None = None
    nearest: Sequence[float] = ()  # nearest-neighbour cosines (semantic step)
    evals: list[EvalItem] | None = field(default=None)  # the decontam step's eval items

    @classmethod
    def of(cls, run: Run, funnel: list[dict[str, Any]], wall_s: float, rundir: RunDir) -> RunFacts:
        return cls(funnel, wall_s, rundir, getattr(run, "near_stats", None), run.judge_info,
                   run.nearest, run.evals)  # fmt: skip


class OutputWriter:
    """kept.jsonl and dropped.jsonl written as rows arrive (in input order), through temp
    files that only `finish` renames into place: leaving the `with` block on an error removes
    them, a kill leaves `.kept.jsonl.*.tmp` that the run directory removes on its next open.
    Holds the rows' `RowStats` and one small code per dropped row (its rule), not the rows."""

    def __init__(self, out: Path, config: FilterConfig) -> None:
        self.out, self.config = out, config
        self.stats = RowStats()
        self._rules: dict[str, int] = {}  # rule -> code
        self._codes = array("H")  # the rule of each dropped line, by code
        self._files = ExitStack()
        self._kept = self._files.enter_context(atomic_open(out / "kept.jsonl"))
        self._dropped = self._files.enter_context(atomic_open(out / "dropped.jsonl"))

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._files.__exit__(kind, exc, tb)  # an error: the temp files are removed

    def add(self, row: Record, drop: Drop | None, step: str | None = None) -> None:
        """One row; `drop` None: kept, else dropped by `drop` in `step`."""
        self.stats.add(row, drop)
        if drop is None:
            self._kept.write(kept_line(row) + "\n")
        else:
            self._write_dropped([dropped_line(row, drop, step)], [drop.rule])

    def add_block(
        self, kept_lines: list[str], dropped_lines: list[str], dropped_rules: list[str],
        stats: RowStats,
    ) -> None:  # fmt: skip
        """The next rows in input order, serialised (`block_lines`), with their counts."""
        self.stats.merge(stats)
        self._kept.writelines(line + "\n" for line in kept_lines)
        self._write_dropped(dropped_lines, dropped_rules)

    def _write_dropped(self, lines: list[str], rules: list[str]) -> None:
        self._dropped.writelines(line + "\n" for line in lines)
        self._codes.extend(self._rules.setdefault(r, len(self._rules)) for r in rules)

    def finish(self, facts: RunFacts) -> int:
        """Rename kept.jsonl and dropped.jsonl into place, then write kept_dataset/,
        config.yaml, summary.json and report.html. Returns the exit code (0, or 3 when the
        judge failed too often)."""
        out, config, stats = self.out, self.config, self.stats
        assert len(self._codes) == stats.rows_dropped, "add_block: lines and stats disagree"
        self._files.close()  # fsync and rename both
        plan = sample_plan(config.seed, stats.rows_kept, stats.dropped_by_rule)
        picked: dict[int, Record] = {}
        if stats.rows_kept:
            save_hf_dataset(_kept_rows(out / "kept.jsonl", set(plan.kept), picked),
                            out / "kept_dataset")  # fmt: skip
        save_resolved_config(config, out)
        summary = _summary(config, stats, facts)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        report = render_report(
            summary,
            self._dropped_samples(plan),
            config=config.model_dump(mode="json"),
            counts=stats.survival,
            picked=[picked[k] for k in plan.kept],
        )
        atomic_write_text(out / "report.html", report)
        print(
            f"kept {stats.rows_kept:,} of {stats.rows_in:,} rows -> {out}/kept.jsonl; "
            f"report: {out}/report.html"
        )
        return _judge_exit(summary["judge"], out)

    def _dropped_samples(self, plan: SamplePlan) -> dict[str, list[dict[str, Any]]]:
        """Up to five dropped rows per rule, for the report: one pass over dropped.jsonl that
        parses only the lines the plan picks."""
        wanted: dict[tuple[int, int], int] = {}  # (rule code, k-th of the rule) -> line
        seen = [0] * len(self._rules)
        want = {(self._rules[r], k) for r, ks in plan.dropped.items() for k in ks}
        for line, code in enumerate(self._codes):
            if (code, seen[code]) in want:
                wanted[(code, seen[code])] = line
            seen[code] += 1
        found: dict[int, Record] = {}
        lines, last = set(wanted.values()), max(wanted.values(), default=-1)
        with (self.out / "dropped.jsonl").open(encoding="utf-8") as handle:
            for n, text in zip(range(last + 1), handle, strict=False):
                if n in lines:
                    found[n] = Record.model_validate_json(text)
        return {
            rule: [_dropped_sample(found[wanted[(self._rules[rule], k)]]) for k in ks]
            for rule, ks in plan.dropped.items()
        }


def _kept_rows(path: Path, wanted: set[int], picked: dict[int, Record]) -> Iterator[Record]:
    """The rows of kept.jsonl in order, one at a time; the `wanted` k-th ones go to `picked`."""
    with path.open(encoding="utf-8") as handle:
        for k, text in enumerate(handle):
            row = Record.model_validate_json(text)
            if k in wanted:
                picked[k] = row
            yield row


def _dropped_sample(d: Record) -> dict[str, Any]:
    drop = d.dropped_by
    return {
        "id": d.id,
        "instruction": d.instruction,
        "reason": drop.reason if drop else "",
        "evidence": json.dumps(drop.evidence if drop else {}, ensure_ascii=False),
    }


def _judge_summary(config: FilterConfig, info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The judge's figures, with the parse-failure rate against its bound and where the raw
    text of the failed verdicts is."""
    if info is None:
        return None
    bound = config.judge.max_parse_failure_rate
    rate = info["parse_failure_rate"]
    return {
        **info,
        "max_parse_failure_rate": bound,
        "parse_failure_exceeded": rate > bound,
        "raw_verdicts": {
            "dropped": "dropped.jsonl: rows with dropped_by.rule judge_parse_error or "
            "judge_refusal, raw text in dropped_by.evidence.raw (judge_failed: the call "
            "itself failed, its error in dropped_by.reason)",
            "journals": "journal/judge_attempt*.jsonl",
        },
    }


def _decontam_summary(
    config: FilterConfig, stats: RowStats, facts: RunFacts
) -> dict[str, Any] | None:
    """The contamination certificate (method, thresholds, items checked and rows removed per
    eval set), when the decontam step ran."""
    if "decontam" not in config.steps:
        return None
    rows_checked = next((f["in"] for f in facts.funnel if f["step"] == "decontam"), None)
    return certificate(
        config.decontam,
        config.against,
        facts.evals,
        stats.decontam_drops(),
        rows_checked,
        config.semantic.model,
        multi_turn=stats.multi_turn,
    )


def _summary(config: FilterConfig, stats: RowStats, facts: RunFacts) -> dict[str, Any]:
    """summary.json: the counts, the funnel, each step's figures and the distributions."""
    before, after, rundir = stats.before, stats.after, facts.rundir
    return {
        "input": str(config.input),
        "steps": config.steps,
        "rows_in": stats.rows_in,
        "rows_kept": stats.rows_kept,
        "rows_dropped": stats.rows_dropped,
        "demo": stats.demo,
        "funnel": facts.funnel,
        "dropped_by_rule": dict(stats.dropped_by_rule),
        "near": facts.near_stats,
        "decontam": _decontam_summary(config, stats, facts),
        "judge": _judge_summary(config, facts.judge_info),
        "lengths": {
            "response_tokens_before": before.tokens.tolist(),
            "response_tokens_after": after.tokens.tolist(),
        },
        "categories_before": dict(before.categories),
        "categories_after": dict(after.categories),
        # {user turns: rows}; a single-turn row has 1
        "turns_per_conversation": {"before": before.turn_counts(), "after": after.turn_counts()},
        # LLM tags (meta.tags: Magpie rows): {tag: {value: rows}}, empty when no row has tags
        "tags": {"before": before.tag_counts(), "after": after.tag_counts()},
        "nearest_neighbour_similarity": [round(x, 4) for x in facts.nearest],
        "resumed": rundir.resumed,
        "invocations": len(list(rundir.previous())) + 1,
        # the judge's requests, tokens and dollars over every invocation of this run
        "judge_usage": rundir.totals(*COUNTERS) if "judge" in config.steps else None,
        "wall_time_s": round(facts.wall_s, 2),
    }


def _judge_exit(judge: dict[str, Any] | None, out: Path) -> int:
    """0, or 3 with one line when the judge's parse failures passed their bound."""
    if judge is None or not judge["parse_failure_exceeded"]:
        return 0
    print(
        f"judge failed: {judge['parse_failures']} of {judge['judged']} verdicts could not be "
        f"parsed ({judge['parse_failure_rate']:.0%} > judge.max_parse_failure_rate "
        f"{judge['max_parse_failure_rate']:g}); raw text: {out}/dropped.jsonl "
        f"(dropped_by.evidence.raw) and {out}/journal/judge_attempt*.jsonl"
    )
    return EXIT_JUDGE_FAILED


def write_outputs(run: Run, funnel: list[dict[str, Any]], wall_s: float, rundir: RunDir) -> int:
    """Every output of a local run (its rows in memory), through `OutputWriter`; returns the
    exit code (0, or 3 when the judge failed too often)."""
    with OutputWriter(run.out, run.config) as writer:
        for i, row in enumerate(run.rows):
            writer.add(row, run.drops.get(i), run.step_of.get(i))
        return writer.finish(RunFacts.of(run, funnel, wall_s, rundir))
