"""`distillery filter`: run the chosen steps in order; every decision is kept as data.

Reads rows (distillery records, Alpaca or messages JSONL / JSON array) and writes to
OUTPUT_DIR (`outputs.write_outputs`): `kept.jsonl` (with judge scores when judged),
`dropped.jsonl` (each row with `dropped_by`: rule, reason, evidence, and
`meta.filter_step`), `summary.json`, `report.html`, `kept_dataset/` (Hugging Face,
`messages` format) and `config.yaml`, all at the end. OUTPUT_DIR is a run directory
(`distillery.runstate.RunDir`): the judge's journals resume a run with the same identity
(config minus how requests are sent, digests of the input and local eval sets); other
settings stop with one line naming the difference, unless `restart` moves the old outputs
aside; a finished run re-run does nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from distillery import embeddings
from distillery.errors import BudgetStop, UserError
from distillery.filter import dedup
from distillery.filter.config import FilterConfig
from distillery.filter.conversations import dedup_whole, judge_row, turn_queries
from distillery.filter.decontam import (
    EvalItem,
    NgramIndex,
    check_row,
    embedding_drops,
    load_eval_sets,
    split_spec,
)
from distillery.filter.heuristics import Heuristics
from distillery.filter.outputs import write_outputs
from distillery.filter.rows import read_rows, text_of
from distillery.filter.tag_rules import TagRules
from distillery.identity import teacher_runtime_keys
from distillery.judging import JudgeRow, judge_rows
from distillery.records import Drop, Record
from distillery.runstate import RunDir, config_identity, input_identity
from distillery.teacher.batch_ledger import in_run_dir
from distillery.teacher.engine import NO_TEACHER, Teacher
from distillery.teacher.jobs import JobResult, run_job


class Run:
    def __init__(
        self, config: FilterConfig, rows: list[Record], out: Path, evals: list[EvalItem]
    ) -> None:
        self.config, self.rows, self.out, self.evals = config, rows, out, evals
        self.drops: dict[int, Drop] = {}
        self.step_of: dict[int, str] = {}
        self.alive = list(range(len(rows)))
        self.nearest: list[float] = []
        self.judge_info: dict[str, Any] | None = None
        self.rundir: RunDir | None = None  # the judge's counters are recorded there
        self._embedder: Any = None
        self._embeddings: dict[int, np.ndarray] = {}

    # -- helpers (what `executors.ray_filter.RayRun` overrides to keep rows off the driver) --
    def drop(self, i: int, drop: Drop, step: str) -> None:
        if i not in self.drops:
            self.drops[i] = drop
            self.step_of[i] = step

    def is_dropped(self, i: int) -> bool:
        return i in self.drops

    def settle(self) -> None:
        """After a step: the rows it dropped leave `alive`."""
        self.alive = [i for i in self.alive if i not in self.drops]

    def n_left(self) -> int:
        return len(self.alive)

    def n_dropped(self) -> int:
        return len(self.drops)

    def ids_of(self, idx: list[int]) -> dict[int, str]:
        return {i: self.rows[i].id for i in idx}

    def judge_inputs(self) -> list[tuple[int, JudgeRow]]:
        """(row, what the judge sees) for every row still in: a conversation judged whole."""
        return [(i, judge_row(self.rows[i])) for i in self.alive]

    def add_verdict(self, i: int, trace: list[Any], score: float | None) -> None:
        """A judged row's calls join its trace; a usable verdict's score its scores."""
        self.rows[i].trace.extend(trace)
        if score is not None:
            self.rows[i].scores["judge"] = score

    def write_outputs(self, funnel: list[dict[str, Any]], wall_s: float, rundir: RunDir) -> int:
        """Every output file (`filter.outputs`); the exit code."""
        return write_outputs(self, funnel, wall_s, rundir)

    def teachers(self) -> list[str]:
        """The models that wrote the rows (judged by a model of the same family?)."""
        return sorted({r.teacher for r in self.rows if r.teacher})

    def embeddings(self, idx: list[int]) -> np.ndarray:
        missing = [i for i in idx if i not in self._embeddings]
        if missing:
            vecs = self.embed_texts([text_of(self.rows[i], "instruction") for i in missing])
            self._embeddings.update(zip(missing, vecs, strict=True))
        return np.stack([self._embeddings[i] for i in idx]) if idx else np.zeros((0, 1), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised embeddings of `texts` (the semantic step's model, loaded once)."""
        cfg = self.config.semantic
        if self._embedder is None:
            self._embedder = embeddings.load_embedder(cfg.model, cfg.device)
        return embeddings.embed(self._embedder, texts, cfg.batch_size)

    def _resolve(self, edges: list[dedup.Edge], rule: str, measure: str, step: str) -> None:
        subset = [self.rows[i] for i in self.alive]
        for local, d in dedup.resolve(subset, edges, rule, measure).items():
            self.drop(self.alive[local], d, step)
        dedup_whole(self, step, rule)  # multi-turn rows: then as whole conversations

    # -- steps -----------------------------------------------------------------------
    def heuristics(self) -> None:
        rules = Heuristics(self.config.heuristics)
        for i in self.alive:
            d = rules.check(self.rows[i])
            if d:
                self.drop(i, d, "heuristics")

    def tags(self) -> None:
        rules = TagRules(self.config.tags)
        for i in self.alive:
            d = rules.check(self.rows[i])
            if d:
                self.drop(i, d, "tags")

    def exact(self) -> None:
        texts = [text_of(self.rows[i], self.config.exact.fields) for i in self.alive]
        self._resolve(dedup.exact_edges(texts), "exact_duplicate", "similarity", "exact")

    def near(self) -> None:
        c = self.config.near
        texts = [text_of(self.rows[i], c.fields) for i in self.alive]
        edges, stats = dedup.near_edges(
            texts, c.threshold, c.shingle_size, c.num_perm, c.lsh_threshold, c.max_bucket, c.method
        )
        self.near_stats = stats
        self._resolve(edges, "near_duplicate", "jaccard", "near")

    def semantic(self) -> None:
        c = self.config.semantic
        edges, nearest = dedup.semantic_edges(
            self.embeddings(self.alive), c.threshold, c.neighbours
        )
        self.nearest = nearest
        self._resolve(edges, "semantic_duplicate", "cosine", "semantic")

    def decontam(self) -> None:
        c = self.config.decontam
        index = NgramIndex(self.evals, c.ngram)
        for i in self.alive:
            d = check_row(index, self.rows[i], c.min_overlap)  # every turn of a conversation
            if d:
                self.drop(i, d, "decontam")
        if c.embedding_threshold is not None:
            self.decontam_embedding()

    def decontam_embedding(self) -> None:
        """Drop rows whose embedding is within `decontam.embedding_threshold` of an eval item."""
        import faiss

        c = self.config.decontam
        assert c.embedding_threshold is not None
        left = [i for i in self.alive if i not in self.drops]
        if not left:
            return
        eval_vecs = self.embed_texts([e.text for e in self.evals])
        index_ip = faiss.IndexFlatIP(eval_vecs.shape[1])
        index_ip.add(np.ascontiguousarray(eval_vecs))
        queries, vecs = turn_queries(self, left)  # instructions, then later user turns
        sims, ids = index_ip.search(np.ascontiguousarray(vecs), 1)
        found = embedding_drops(self.evals, sims, ids, queries, c.embedding_threshold)
        for i, d in found.items():
            self.drop(i, d, "decontam")

    def judge(self) -> None:
        c = self.config.judge
        pairs = self.judge_inputs()
        rows = [row for _, row in pairs]
        judged = asyncio.run(self._judge(rows))
        by_id = {row.id: i for i, row in pairs}
        del pairs
        scored: list[tuple[float, int]] = []
        failures = Counter[str]()
        for row_id, j in judged.items():
            i = by_id[row_id]
            ok = j.verdict.status == "ok"
            self.add_verdict(i, j.trace, j.verdict.score if ok else None)
            if not ok:
                failures[j.verdict.status] += 1
                self.drop(
                    i,
                    Drop(
                        rule=f"judge_{j.verdict.status}",
                        reason=j.verdict.error,
                        evidence={"raw": (j.raw or "")[:1000], "attempts": j.attempts},
                    ),
                    "judge",
                )
                continue
            assert j.verdict.score is not None
            scored.append((j.verdict.score, i))
        if c.min_score is not None:
            for score, i in scored:
                if score < c.min_score:  # a score equal to the threshold is kept
                    self.drop(
                        i,
                        Drop(
                            rule="judge_below_threshold",
                            reason=f"score {score:g} < {c.min_score:g}",
                            evidence={"score": score},
                        ),
                        "judge",
                    )
        ranked = sorted(
            ((s, i) for s, i in scored if not self.is_dropped(i)), key=lambda si: (-si[0], si[1])
        )
        if c.diversity_tau is not None and ranked:
            ranked = self._diverse(ranked, c.diversity_tau)
        if c.top_k is not None:
            for score, i in ranked[c.top_k :]:
                self.drop(
                    i,
                    Drop(
                        rule="judge_top_k",
                        reason=f"not in the top {c.top_k}",
                        evidence={"score": score},
                    ),
                    "judge",
                )
        unparsed = sum(n for status, n in failures.items() if status != "failed")
        generators = self.teachers()
        model = c.teacher.spec or ""
        self.judge_info = {
            "model": model,
            "generator_models": generators,
            "same_family": any(
                g.split(":")[0] == model.split(":")[0]
                and g.split(":")[-1].split("-")[0] == model.split(":")[-1].split("-")[0]
                for g in generators
            ),
            "judged": len(judged),
            # verdicts that came back but could not be used; failed calls are counted apart
            "parse_failures": unparsed,
            "parse_failure_rate": unparsed / max(1, len(judged)),
            "call_failures": failures["failed"],
            "failures_by_status": dict(failures),
            "reasked": sum(1 for j in judged.values() if j.attempts > 1),
            "prompts": dict(Counter(r.call.name for r in rows)),  # judge_quality/_conversation
            "scores": [s for s, _ in scored],
        }

    def _diverse(self, ranked: list[tuple[float, int]], tau: float) -> list[tuple[float, int]]:
        """Deita-style: take rows best first, skip one within cosine tau of a row already taken."""
        vecs = self.embeddings([i for _, i in ranked])
        taken: list[int] = []
        out = []
        skipped: list[tuple[int, int, float]] = []  # (row, the better row, cosine)
        for pos, (score, i) in enumerate(ranked):
            if taken:
                sims = vecs[taken] @ vecs[pos]
                best = int(np.argmax(sims))
                if sims[best] >= tau:
                    skipped.append((i, ranked[taken[best]][1], float(sims[best])))
                    continue
            taken.append(pos)
            out.append((score, i))
        ids = self.ids_of(sorted({other for _, other, _ in skipped}))  # one look-up for all
        for i, other, cosine in skipped:
            self.drop(
                i,
                Drop(
                    rule="judge_diversity",
                    reason=f"cosine {cosine:.3f} >= {tau} to a better row",
                    evidence={"similar_to": ids[other], "cosine": round(cosine, 4)},
                ),
                "judge",
            )
        return out

    def judge_job(self) -> Callable[..., Awaitable[JobResult]]:
        """How the judge's requests are answered: `run_job` here, Ray actors in `RayRun`."""
        return run_job

    async def _judge(self, rows: list[JudgeRow]) -> dict[str, Any]:
        moved = self.rundir.moved_to if self.rundir is not None else None
        judge = in_run_dir(self.config.judge.teacher, self.out, moved)  # its batch ledger
        teacher = await Teacher(judge).start()

        def record() -> None:  # after every verdict, so a killed invocation still counts
            if self.rundir is not None:
                self.rundir.record(**teacher.stats.counters())

        try:
            return await judge_rows(
                teacher, rows, self.out / "journal", self.config.judge.max_parse_retries, True,
                on_answer=record, job=self.judge_job(),
            )  # fmt: skip
        finally:
            record()
            await teacher.aclose()


def _preflight(config: FilterConfig) -> tuple[Path, Path, list[EvalItem]]:
    if not config.input or not config.output_dir:
        raise UserError("filter needs --input FILE and --output-dir DIR")
    evals: list[EvalItem] = []
    if "decontam" in config.steps:
        if not config.against:
            raise UserError(
                "the decontam step needs --against SET (a Hugging Face dataset id such as "
                "hf:google/IFEval, or a local PATH[:FIELD])"
            )
        evals = load_eval_sets(config.against, config.decontam.text_fields)
    if "judge" in config.steps and not config.judge.teacher.spec:
        no_judge = NO_TEACHER.replace("teacher.spec", "judge.teacher.spec")
        raise UserError("the judge step has no judge: " + no_judge.replace("--teacher", "--judge"))
    inp, out = Path(config.input), Path(config.output_dir)
    if out.resolve() == inp.resolve() or out.resolve() in inp.resolve().parents:
        raise UserError(
            f"--input {inp} lies in --output-dir {out}, which this run writes (and --restart "
            "moves aside): choose another output directory"
        )
    if "judge" in config.steps:  # key, server and model checked before anything is written
        asyncio.run(_check_judge(config.judge.teacher))
    if config.executor == "ray":  # Ray installed and the cluster reachable, before writing
        if "near" in config.steps and config.near.method != "join":
            raise UserError(
                "near.method minhash runs on one machine only (it is kept for comparison): "
                "use near.method=join (the default) with executor ray"
            )
        from distillery.executors.session import connect

        connect(config.ray)
    return inp, out, evals


async def _check_judge(teacher: Any) -> None:
    judge = await Teacher(teacher).start()
    await judge.aclose()


# Settings outside the identity: where things are, how the judge's requests are sent and
# paid for, how embeddings are batched, the parse-failure bound (it only decides the exit), and
# where the steps run (the executors make the same decisions).
RUN_FIELDS = ("input", "output_dir", "against", "judge.max_parse_failure_rate",
              "semantic.batch_size", "semantic.device", "executor", "ray")  # fmt: skip


def filter_identity(config: FilterConfig) -> dict[str, Any]:
    """The config minus `RUN_FIELDS` and the judge's runtime settings, plus a digest of the
    input file and of each local eval set (a hub set is named by its id)."""
    against = {spec: input_identity(split_spec(spec)[0]) for spec in config.against}
    exclude = [*RUN_FIELDS, *teacher_runtime_keys(["judge.teacher"])]
    inputs = {"input": input_identity(config.input), "against": against}
    return config_identity(config, exclude=exclude, inputs=inputs)


def _run_steps(run: Run) -> list[dict[str, Any]]:
    """Each configured step in order; the funnel: rows in, dropped, left, seconds."""
    n = run.n_left()
    funnel = [{"step": "input", "in": n, "dropped": 0, "remaining": n, "seconds": 0.0}]
    for step in run.config.steps:
        t0, n_in, n_drops = time.monotonic(), run.n_left(), run.n_dropped()
        getattr(run, step)()
        run.settle()
        dropped, left = run.n_dropped() - n_drops, run.n_left()
        funnel.append(
            {
                "step": step,
                "in": n_in,
                "dropped": dropped,
                "remaining": left,
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
        print(f"{step:<10} {n_in:>8,} in  {dropped:>8,} dropped  {left:>8,} left")
    return funnel


def _new_run(config: FilterConfig, inp: Path, out: Path, evals: list[EvalItem]) -> Run:
    """The input read (a bad row stops here, before anything is written). `executor: ray`
    reads it into Ray's object store and runs the steps there (`executors.ray_filter`): the
    driver never holds the rows."""
    if config.executor == "ray":
        from distillery.executors.ray_filter import RayRun

        return RayRun.from_input(config, inp, out, evals)
    return Run(config, read_rows(inp), out, evals)


def run_filter(config: FilterConfig, restart: bool = False) -> int:
    """Preflight (nothing is written if it fails), then the steps and the outputs in the
    output run directory. Exit 0 done, 3 too many unparsable judge verdicts; a budget stop
    raises `BudgetStop` (exit 4) with the judge's journals kept for the re-run."""
    started = time.monotonic()
    inp, out, evals = _preflight(config)
    run = _new_run(config, inp, out, evals)
    with RunDir(out, "filter", filter_identity(config), restart=restart) as rundir:
        done = rundir.finished
        if done is not None:
            print(
                f"{out}: already finished ({done.get('rows_kept', '?')} of "
                f"{done.get('rows_in', '?')} rows kept, same settings); nothing to do "
                "(--restart redoes it)"
            )
            return 0
        run.rundir = rundir
        try:
            funnel = _run_steps(run)
        except BudgetStop:
            print(
                f"judge budget reached: the verdicts so far are kept in {out / 'journal'}; "
                "raise judge.teacher.max_cost_usd and re-run the same command to continue"
            )
            raise
        code = run.write_outputs(funnel, time.monotonic() - started, rundir)
        rundir.exit_code = code
        if code == 0:
            rundir.mark_finished({"rows_in": funnel[0]["in"], "rows_kept": run.n_left()})
        return code
