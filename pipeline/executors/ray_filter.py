"""`distillery filter` with `executor: ray`: the rows live in Ray's object store and every
step's per-row work runs there; the decisions are made by the same code as `executor: local`.

The driver holds a few numbers per row (its position, whether it is still in, the judge
score the survivor rule reads), the edges of the dedup steps and the drops one step makes
while it runs; never the rows. Flow:
- input: `ray_ingest.ingest` puts the file's lines in the store in `ray.rows_per_block`-line
  chunks; a task per chunk parses them with `read_rows`' code into a block (line, record).
- heuristics, tags, decontam n-grams: a task per block applies `Heuristics.check`,
  `TagRules.check`, `decontam.check_row` (the benchmark index put in the store once) to the
  rows still in; the drops stay in the store beside their block, the driver learns which
  rows left.
- exact: a 16-byte digest of each row's normalised text per block; the driver groups the
  digests (numpy, no rows) into the same star edges as `dedup.exact_edges`.
- near (method join): shingle signatures, prefix entries, grouped by shingle, every pair in
  a group verified exactly (`near_parts`, on Ray Data); the driver gets edges only.
- semantic: an actor pool (GPU actors with `ray.embed_gpus`) embeds the rows, the neighbour
  search is `neighbours.sharded_semantic_edges` (exact, shard against shard).
- decontam embeddings: actors embed each row's instruction and later user turns and search
  the eval set's index (put once); `decontam.embedding_drops` picks the drops per row.
- judge: its requests are answered by teacher actors (`ray_complete.run_job_on_ray`: one
  concurrency and cost budget, the journal written by the driver); the driver holds the
  judge's prompts of the rows still in while it runs, and the verdicts go back beside
  their blocks.
Every edge set is resolved by `dedup.duplicates` (union-find over the rows the edges touch,
the same survivor rule) and `dedup.duplicate_drop`, multi-turn rows then compared whole as
`filter.conversations.dedup_whole` does. At the end a task per block writes each row as
`kept.jsonl`/`dropped.jsonl` would hold it and counts what the summary needs
(`outputs.RowStats`); the driver appends the blocks in order (`outputs.OutputWriter`), so
`kept.jsonl`, `dropped.jsonl`, `summary.json` and `report.html` are those of `local`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from distillery.embeddings import embed, load_embedder
from distillery.executors import near_parts
from distillery.executors.ray_complete import run_job_on_ray
from distillery.executors.ray_ingest import Blocks, Ingested, ingest
from distillery.executors.session import connect
from distillery.filter.config import FilterConfig, HeuristicsConfig, TagsConfig
from distillery.filter.conversations import MEASURES, judge_row
from distillery.filter.decontam import EvalItem, NgramIndex, check_row, embedding_drops
from distillery.filter.dedup import Edge, duplicate_drop, duplicates, normalise
from distillery.filter.heuristics import Heuristics
from distillery.filter.rows import conversation_text, is_multi_turn, text_of, turns
from distillery.filter.run import Run
from distillery.filter.tag_rules import TagRules
from distillery.judging import JudgeRow
from distillery.records import Drop, Record
from distillery.runstate import RunDir
from distillery.teacher.jobs import JobResult, progress_bar

SAMPLE_ROWS = 20_000  # rows whose shingle frequencies order the near step's prefixes
_SHARED: dict[str, Any] = {}  # per worker process: objects fetched once from the store
SHARED_KEPT = 2  # the newest kept (a step's index); older ones are dropped


def _shared(box: list[Any]) -> Any:
    """The object behind `box[0]` (an ObjectRef, boxed so Ray passes it unresolved), fetched
    once per worker process."""
    import ray

    key = box[0].hex()
    if key not in _SHARED:
        while len(_SHARED) >= SHARED_KEPT:  # a long-lived worker serves run after run
            del _SHARED[next(iter(_SHARED))]
        _SHARED[key] = ray.get(box[0])
    return _SHARED[key]


# -- per-block work (Ray tasks) ------------------------------------------------------------


def _rows_in(block: pa.Table, live: np.ndarray) -> Iterator[tuple[int, Record]]:
    """(line, record) of the block's rows still in (`live`: one flag per block row)."""
    lines = block.column("i").to_numpy()
    raws = block.column("record")
    for k in np.flatnonzero(live).tolist():
        yield int(lines[k]), Record.model_validate_json(raws[k].as_py())


def _drop_table(found: list[tuple[int, str, Drop]]) -> pa.Table:
    return pa.table(
        {
            "i": pa.array([i for i, _, _ in found], pa.int64()),
            "step": pa.array([s for _, s, _ in found], pa.string()),
            "drop": pa.array([d.model_dump_json() for _, _, d in found], pa.string()),
        }
    )


def check_block(
    block: pa.Table, live: np.ndarray, step: str, spec: dict[str, Any]
) -> tuple[pa.Table, np.ndarray]:
    """A per-row rule over the block's rows still in: (drops table, the lines dropped)."""
    check: Callable[[Record], Drop | None]
    if step == "heuristics":
        check = Heuristics(HeuristicsConfig.model_validate(spec["config"])).check
    elif step == "tags":
        check = TagRules(TagsConfig.model_validate(spec["config"])).check
    else:  # decontam: the n-gram index, fetched once per worker process
        index: NgramIndex = _shared(spec["index_box"])
        check = functools.partial(check_row, index, min_overlap=spec["min_overlap"])
    found = [(i, step, d) for i, row in _rows_in(block, live) if (d := check(row)) is not None]
    return _drop_table(found), np.asarray([i for i, _, _ in found], np.int64)


def texts_block(block: pa.Table, live: np.ndarray, what: str) -> pa.Table:
    """(i, text) of the rows still in: `what` is a `text_of` field spec, `conversation` (the
    multi-turn rows' whole text) or `messages` (column `texts`: their non-system turns)."""
    lines: list[int] = []
    texts: list[Any] = []
    for i, row in _rows_in(block, live):
        if what == "conversation":
            if not is_multi_turn(row):
                continue
            texts.append(conversation_text(row))
        elif what == "messages":
            if not is_multi_turn(row):
                continue
            texts.append([m.content for m in row.messages if m.role != "system"])
        elif what == "queries":  # decontam: the instruction, then each later user turn
            later = [u for k, (u, _) in enumerate(turns(row), 1) if k > 1 and is_multi_turn(row)]
            texts.append([text_of(row, "instruction"), *later])
        else:
            texts.append(text_of(row, what))
        lines.append(i)
    column = "texts" if what in ("messages", "queries") else "text"
    kind = pa.list_(pa.string()) if column == "texts" else pa.string()
    return pa.table({"i": pa.array(lines, pa.int64()), column: pa.array(texts, kind)})


def exact_keys_block(block: pa.Table, live: np.ndarray, fields: str) -> np.ndarray:
    """(line, digest as two uint64) per row still in: BLAKE2b-128 of its normalised text."""
    out = []
    for i, row in _rows_in(block, live):
        digest = hashlib.blake2b(normalise(text_of(row, fields)).encode(), digest_size=16)
        out.append((i, *np.frombuffer(digest.digest(), np.uint64).tolist()))
    return np.asarray(out, np.uint64).reshape(-1, 3)


def sample_block_frequencies(*blocks: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """`near_parts.sample_frequencies` over the rows of `blocks` (column `tokens`)."""
    return near_parts.sample_frequencies(
        [np.asarray(t, np.int64) for b in blocks for t in b.column("tokens").to_pylist()]
    )


def pick_block(block: pa.Table, lines: np.ndarray, what: str) -> list[tuple[int, Any]]:
    """(line, value) for the block's rows at `lines`: `survivor` (id, instruction), `judge`
    (a JudgeRow), `instruction`, `id` or `teachers` (the set of the block's row teachers, line -1)."""
    at = np.isin(block.column("i").to_numpy(), lines) if what != "teachers" else None
    live = at if at is not None else np.ones(block.num_rows, bool)
    if what == "teachers":
        return [(-1, {row.teacher for _, row in _rows_in(block, live) if row.teacher})]
    if what == "survivor":
        return [(i, (r.id, r.instruction[:300])) for i, r in _rows_in(block, live)]  # evidence
    if what == "judge":
        return [(i, judge_row(r)) for i, r in _rows_in(block, live)]
    if what == "instruction":
        return [(i, text_of(r, "instruction")) for i, r in _rows_in(block, live)]
    return [(i, r.id) for i, r in _rows_in(block, live)]


def finish_block(
    block: pa.Table, drops: list[pa.Table], verdicts: list[pa.Table]
) -> tuple[list[str], list[str], list[str], Any]:
    """The block's rows as the output files hold them (`outputs.block_lines`: kept lines,
    dropped lines, each dropped row's rule, the rows' `RowStats`): a dropped row carries
    `dropped_by` and `meta.filter_step`, a judged row its score and the judge's calls."""
    import ray
    from distillery.filter.outputs import block_lines

    drops, verdicts = ray.get(list(drops)), ray.get(list(verdicts))  # refs in a list: unresolved
    drop_of: dict[int, tuple[str, str]] = {}
    for table in drops:
        for i, step, raw in zip(*(table.column(c).to_pylist() for c in ("i", "step", "drop")),
                                strict=True):  # fmt: skip
            drop_of.setdefault(i, (step, raw))
    verdict_of: dict[int, tuple[float | None, list[Any]]] = {}
    for table in verdicts:
        for i, score, trace in zip(*(table.column(c).to_pylist() for c in ("i", "score", "trace")),
                                   strict=True):  # fmt: skip
            verdict_of[i] = (score, json.loads(trace))

    def rows() -> Iterator[tuple[Record, Drop | None, str | None]]:
        for i, raw in zip(block.column("i").to_pylist(), block.column("record").to_pylist(),
                          strict=True):  # fmt: skip
            if i in verdict_of:  # as `Run.add_verdict`: the calls join the trace
                obj = json.loads(raw)
                score, trace = verdict_of[i]
                obj["trace"] = [*obj.get("trace", []), *trace]
                if score is not None:
                    obj["scores"] = {**obj.get("scores", {}), "judge": score}
                row = Record.model_validate(obj)
            else:
                row = Record.model_validate_json(raw)
            step, drop = drop_of.get(i, (None, None))
            yield row, Drop.model_validate_json(drop) if drop else None, step

    return block_lines(rows())


class EmbedActor:
    """One embedding model per actor (loaded once): unit vectors per batch of rows (column
    `text`), or per row the mean of its texts' vectors (column `texts`: a conversation's
    turns, `filter.conversations._mean_embeddings`)."""

    def __init__(self, model: str, device: str, batch_size: int) -> None:
        self.model, self.batch_size = load_embedder(model, device), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if "text" in batch:
            vecs = embed(self.model, [str(t) for t in batch["text"]], self.batch_size)
            return {"i": batch["i"], "vec": vecs}
        groups = [list(t) for t in batch["texts"]]
        flat = embed(self.model, [str(t) for g in groups for t in g], self.batch_size)
        owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
        out = np.zeros((len(groups), flat.shape[1]), np.float32)
        np.add.at(out, owner, flat)
        out /= np.bincount(owner, minlength=len(groups))[:, None].astype(np.float32)
        return {"i": batch["i"], "vec": out}


class DecontamEmbedActor:
    """Embeds each row's queries (instruction, then later user turns) and finds the nearest
    eval item in the eval set's index (put once); the rows at or over the threshold."""

    def __init__(self, model: str, device: str, batch_size: int, eval_box: list[Any],
                 threshold: float) -> None:  # fmt: skip
        import faiss

        self.model, self.batch_size, self.threshold = (
            load_embedder(model, device),
            batch_size,
            threshold,
        )
        self.evals, vecs = _shared(eval_box)
        self.index = faiss.IndexFlatIP(vecs.shape[1])
        self.index.add(np.ascontiguousarray(vecs))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        lines = [int(i) for i in batch["i"]]
        groups = [list(t) for t in batch["texts"]]
        # the local order: every instruction first, then the later turns
        queries: list[tuple[int, int | None]] = [
            (i, 1 if len(g) > 1 else None) for i, g in zip(lines, groups, strict=True)
        ]
        texts = [str(g[0]) for g in groups]
        for i, g in zip(lines, groups, strict=True):
            for k, text in enumerate(g[1:], 2):
                queries.append((i, k))
                texts.append(str(text))
        vecs = embed(self.model, texts, self.batch_size)
        sims, ids = self.index.search(np.ascontiguousarray(vecs), 1)
        found = embedding_drops(self.evals, sims, ids, queries, self.threshold)
        return {"i": np.asarray(list(found), np.int64),
                "drop": np.asarray([d.model_dump_json() for d in found.values()], object)}  # fmt: skip


def star_edges(keyed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`dedup.exact_edges` from (line, key hi, key lo) rows in any order: each repeat of a
    key linked to the key's first line. (a, b, similarity 1.0) arrays."""
    if not len(keyed):  # no row left to compare
        return _no_edges()
    order = np.lexsort((keyed[:, 0], keyed[:, 2], keyed[:, 1]))
    rows = keyed[order]
    same = np.r_[False, (rows[1:, 1] == rows[:-1, 1]) & (rows[1:, 2] == rows[:-1, 2])]
    first = np.maximum.accumulate(np.where(~same, np.arange(len(rows)), 0))
    a = rows[first[same], 0].astype(np.int64)
    b = rows[same, 0].astype(np.int64)
    return a, b, np.ones(len(a))


def unique_edges(a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, ...]:
    """Edges found in several groups, once each."""
    if not len(a):
        return a, b, sim
    _, first = np.unique(a * (int(b.max()) + 1) + b, return_index=True)
    return a[first], b[first], sim[first]


def _edges(a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> Iterator[Edge]:
    for x, y, s in zip(a.tolist(), b.tolist(), sim.tolist(), strict=True):
        yield Edge(x, y, s)


class RayRun(Run):
    """`Run` whose rows stay in Ray's object store; decisions as in `Run`."""

    def __init__(
        self, config: FilterConfig, ingested: Ingested, out: Path, evals: list[EvalItem]
    ) -> None:
        super().__init__(config, [], out, evals)
        self.ray = connect(config.ray)
        self.blocks: Blocks = ingested.blocks
        self.lines = ingested.lines
        size = int(self.lines[-1]) + 1
        self.live = np.zeros(size, bool)
        self.live[self.lines] = True
        self.score = np.full(size, np.nan)
        self.score[self.lines] = ingested.scores
        self.start = np.r_[0, np.cumsum(self.blocks.rows)].astype(np.int64)
        self.drop_refs: list[list[Any]] = [[] for _ in self.blocks.refs]
        self.verdict_refs: list[list[Any]] = [[] for _ in self.blocks.refs]
        self._pending: list[tuple[int, str, Drop]] = []
        self._verdicts: list[tuple[int, float | None, list[Any]]] = []
        self._n_dropped = 0
        self._tasks: dict[str, Any] = {}

    @classmethod
    def from_input(
        cls, config: FilterConfig, inp: Path, out: Path, evals: list[EvalItem]
    ) -> RayRun:
        ray = connect(config.ray)
        return cls(config, ingest(ray, inp, config.ray.rows_per_block), out, evals)

    # -- plumbing --------------------------------------------------------------------
    def _task(self, fn: Callable[..., Any], num_returns: int = 1) -> Any:
        key = f"{fn.__name__}/{num_returns}"
        if key not in self._tasks:
            self._tasks[key] = self.ray.remote(num_returns=num_returns)(fn)
        return self._tasks[key]

    def _live_of(self, b: int) -> np.ndarray:
        return self.live[self.lines[self.start[b] : self.start[b + 1]]]

    def _each_block(self, fn: Callable[..., Any], *args: Any) -> tuple[list[Any], list[int]]:
        """`fn(block, live flags, *args)` on every block with a row still in: the result
        refs, and the rows still in behind each."""
        task = self._task(fn)
        refs, rows = [], []
        for b, ref in enumerate(self.blocks.refs):
            live = self._live_of(b)
            if live.any():
                refs.append(task.remote(ref, live, *args))
                rows.append(int(live.sum()))
        return refs, rows

    def _gather(self, refs: list[Any], rows: list[int], desc: str) -> list[Any]:
        """The results of `refs` in order, taken as they finish, with a progress line for
        the rows behind them (rows, rate, ETA: `jobs.progress_bar`)."""
        bar = progress_bar(sum(rows), "row", desc)
        at = {ref: k for k, ref in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        left = list(refs)
        while left:
            ready, left = self.ray.wait(left, num_returns=1)
            for ref in ready:
                out[at[ref]] = self.ray.get(ref)
                bar.update(rows[at[ref]])
        bar.close()
        return out

    def _by_block(self, lines: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        owner = self.blocks.of_lines(lines)
        for b in np.unique(owner).tolist():
            yield b, np.flatnonzero(owner == b)

    def _pick(self, lines: Iterable[int], what: str) -> dict[int, Any]:
        """`pick_block` over the blocks holding `lines` (a few rows' fields)."""
        at = np.unique(np.fromiter(lines, np.int64))
        task = self._task(pick_block)
        refs = [task.remote(self.blocks.refs[b], at[k], what) for b, k in self._by_block(at)]
        return {i: v for part in self.ray.get(refs) for i, v in part}

    def _dataset(self, what: str) -> Any:
        """A Ray dataset of (i, text or texts) for the rows still in (`texts_block`)."""
        refs, _ = self._each_block(texts_block, what)
        return self.ray.data.from_arrow_refs(refs) if refs else None

    def _worker_drops(self, step: str, spec: dict[str, Any]) -> None:
        """`check_block` everywhere: the drops stay beside their blocks."""
        task = self._task(check_block, 2)
        found, rows = [], []
        for b, ref in enumerate(self.blocks.refs):
            live = self._live_of(b)
            if live.any():
                table, lines = task.remote(ref, live, step, spec)
                self.drop_refs[b].append(table)
                found.append(lines)
                rows.append(int(live.sum()))
        for lines in self._gather(found, rows, step):
            self.live[lines] = False
            self._n_dropped += len(lines)

    # -- what `Run` asks of its rows -----------------------------------------------------
    def drop(self, i: int, drop: Drop, step: str) -> None:
        if self.live[i]:
            self.live[i] = False
            self._pending.append((i, step, drop))
            self._n_dropped += 1

    def is_dropped(self, i: int) -> bool:
        return not self.live[i]

    def settle(self) -> None:
        """The drops and verdicts the driver made in this step go to the store by block."""
        if self._pending:
            self._pending.sort(key=lambda x: x[0])
            lines = np.asarray([i for i, _, _ in self._pending], np.int64)
            for b, k in self._by_block(lines):
                part = [self._pending[j] for j in k.tolist()]
                self.drop_refs[b].append(self.ray.put(_drop_table(part)))
            self._pending = []
        if self._verdicts:
            self._verdicts.sort(key=lambda x: x[0])
            lines = np.asarray([i for i, _, _ in self._verdicts], np.int64)
            for b, k in self._by_block(lines):
                part = [self._verdicts[j] for j in k.tolist()]
                table = pa.table({
                    "i": pa.array([i for i, _, _ in part], pa.int64()),
                    "score": pa.array([s for _, s, _ in part], pa.float64()),
                    "trace": pa.array([json.dumps(t) for _, _, t in part], pa.string()),
                })  # fmt: skip
                self.verdict_refs[b].append(self.ray.put(table))
            self._verdicts = []

    def n_left(self) -> int:
        return int(self.live.sum())

    def n_dropped(self) -> int:
        return self._n_dropped

    def ids_of(self, idx: list[int]) -> dict[int, str]:
        return {i: str(rid) for i, rid in self._pick(idx, "id").items()} if idx else {}

    def judge_inputs(self) -> list[tuple[int, JudgeRow]]:
        picked = self._pick(self.lines[self.live[self.lines]].tolist(), "judge")
        return sorted(picked.items())

    def add_verdict(self, i: int, trace: list[Any], score: float | None) -> None:
        self._verdicts.append((i, score, [c.model_dump(mode="json") for c in trace]))
        if score is not None:
            self.score[i] = score

    def teachers(self) -> list[str]:
        task = self._task(pick_block)
        parts = self.ray.get([task.remote(ref, np.zeros(0, np.int64), "teachers")
                              for ref in self.blocks.refs])  # fmt: skip
        return sorted(set().union(*(s for part in parts for _, s in part)))

    # -- steps -----------------------------------------------------------------------
    def heuristics(self) -> None:
        self._worker_drops("heuristics", {"config": self.config.heuristics.model_dump()})

    def tags(self) -> None:
        self._worker_drops("tags", {"config": self.config.tags.model_dump()})

    def exact(self) -> None:
        parts = self._gather(*self._each_block(exact_keys_block, self.config.exact.fields), "exact")
        keyed = np.concatenate(parts) if parts else np.zeros((0, 3), np.uint64)
        self._resolve_arrays(star_edges(keyed), "exact_duplicate", "similarity", "exact")

    def near(self) -> None:
        c = self.config.near  # method minhash is refused on Ray (`run._preflight`)
        ds = self._dataset(c.fields)
        edges, entries = self._near_edges(ds) if ds is not None else (_no_edges(), 0)
        self.near_stats = {"method": "join", "executor": "ray", "prefix_entries": entries,
                           "verified": len(edges[0])}  # fmt: skip
        self._resolve_arrays(edges, "near_duplicate", "jaccard", "near")

    def _near_edges(self, ds: Any) -> tuple[tuple[np.ndarray, ...], int]:
        c = self.config.near
        tokens = ds.map_batches(
            near_parts.shingle_tokens, batch_format="pyarrow", fn_kwargs={"k": c.shingle_size}
        ).materialize()
        # the order's sample counted on a worker: pulling rows here fetched whole blocks
        refs = tokens.limit(SAMPLE_ROWS).to_arrow_refs()
        vocab, freq = self.ray.get(self._task(sample_block_frequencies).remote(*refs))
        entries = tokens.map_batches(
            near_parts.prefix_entries,
            batch_format="pyarrow",
            fn_kwargs={"threshold": c.threshold, "vocab": vocab, "freq": freq},
        ).materialize()
        pairs = entries.groupby("key", num_partitions=self._partitions(entries.count())).map_groups(
            near_parts.verify_group,
            batch_format="pyarrow",
            fn_kwargs={"threshold": c.threshold, "vocab": vocab, "freq": freq},
        )
        parts = [self.ray.get(ref) for ref in pairs.to_arrow_refs()]  # edges only
        if not parts:
            return _no_edges(), entries.count()
        found = pa.concat_tables(parts)
        cols = [found.column(n).to_numpy() for n in ("a", "b", "sim")]
        return unique_edges(*cols), entries.count()

    def _partitions(self, entries: int) -> int:
        """Shuffle partitions for the near step's grouping: a few per CPU of the cluster,
        none smaller than ~50k entries (Ray's default, 200, makes thousands of tiny tasks)."""
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        return max(1, min(200, 4 * cpus, -(-entries // 50_000)))

    def _search_threads(self) -> int:
        """BLAS threads per neighbour-search task: the driver's faiss count, as a local run
        here would use (the similarities' last bits depend on it: `neighbours`), at most a
        node's CPUs."""
        import faiss

        per_node = [n["Resources"].get("CPU", 1) for n in self.ray.nodes() if n.get("Alive")]
        return max(1, min(faiss.omp_get_max_threads(), int(max(per_node, default=1))))

    def semantic(self) -> None:
        from distillery.executors.neighbours import sharded_semantic_edges

        c = self.config.semantic
        vectors = self._vectors("instruction")
        if vectors is None:
            return
        edges, nearest, _ = sharded_semantic_edges(
            self.ray, vectors, c.threshold, c.neighbours, threads=self._search_threads()
        )
        self.nearest = [float(x) for x in nearest]
        self._resolve_arrays(tuple(edges), "semantic_duplicate", "cosine", "semantic")

    def _vectors(self, what: str) -> Any:
        """(i, vec) of the rows still in, from the embedding actor pool."""
        ds = self._dataset(what)
        if ds is None:
            return None
        return self._on_embedders(ds, EmbedActor).materialize()

    def _on_embedders(self, ds: Any, actor: type, **kwargs: Any) -> Any:
        """`ds` mapped by a pool of `actor`s, each loading the semantic step's model once
        (`ray.embed_actors` of them, `ray.embed_gpus` GPUs each)."""
        cfg, r = self.config.semantic, self.config.ray
        return ds.map_batches(
            actor,
            batch_format="numpy",
            batch_size=cfg.batch_size * 8,
            concurrency=r.embed_actors,
            num_gpus=r.embed_gpus or None,
            fn_constructor_kwargs={"model": cfg.model, "batch_size": cfg.batch_size,
                                   "device": "cuda" if r.embed_gpus else cfg.device, **kwargs},
        )  # fmt: skip

    def embeddings(self, idx: list[int]) -> np.ndarray:
        """The vectors of rows `idx`, in that order, on the driver: only the judge's
        diversity pass asks, for the rows it ranks."""
        if not idx:
            return np.zeros((0, 1), np.float32)
        texts = self._pick(idx, "instruction")
        return self.embed_texts([texts[i] for i in idx])

    def _resolve_arrays(
        self, edges: tuple[np.ndarray, ...], rule: str, measure: str, step: str
    ) -> None:
        """`dedup.duplicates` on edges between lines, the survivors' ids fetched; then the
        multi-turn rows still in compared whole (`conversations.dedup_whole`)."""
        self._resolve_edges(_edges(*edges[:3]), rule, measure, step)
        if step not in MEASURES:
            return
        whole = self._whole(step)
        if whole is not None:
            self._resolve_edges(_edges(*whole), f"{rule}_conversation", MEASURES[step], step)

    def _resolve_edges(self, edges: Iterator[Edge], rule: str, measure: str, step: str) -> None:
        def score_of(i: int) -> float | None:
            s = self.score[i]
            return None if np.isnan(s) else float(s)

        found = list(duplicates(edges, score_of))
        survivors = self._pick((d.keep for d in found), "survivor") if found else {}
        for d in found:
            self.drop(d.row, duplicate_drop(d, rule, measure, *survivors[d.keep]), step)

    def _whole(self, step: str) -> tuple[np.ndarray, ...] | None:
        """Edges between the multi-turn rows still in, compared as whole conversations."""
        if step == "near":
            ds = self._dataset("conversation")
            if ds is None or ds.count() < 2:
                return None
            edges, entries = self._near_edges(ds)
            self.near_stats = {**self.near_stats, "conversation": {"prefix_entries": entries,
                                                                  "verified": len(edges[0])}}  # fmt: skip
            return edges
        c = self.config.semantic
        vectors = self._vectors("messages")
        if vectors is None or vectors.count() < 2:
            return None
        from distillery.executors.neighbours import sharded_semantic_edges

        edges, _, _ = sharded_semantic_edges(
            self.ray, vectors, c.threshold, c.neighbours, threads=self._search_threads()
        )
        return tuple(edges)

    def decontam(self) -> None:
        c = self.config.decontam
        box = [self.ray.put(NgramIndex(self.evals, c.ngram))]  # one copy in the object store
        self._worker_drops("decontam", {"index_box": box, "min_overlap": c.min_overlap})
        if c.embedding_threshold is not None:
            self.decontam_embedding()

    def decontam_embedding(self) -> None:
        c = self.config.decontam
        ds = self._dataset("queries")
        if ds is None:
            return
        box = [self.ray.put((self.evals, self.embed_texts([e.text for e in self.evals])))]
        found = self._on_embedders(
            ds, DecontamEmbedActor, eval_box=box, threshold=c.embedding_threshold
        )
        for batch in found.iter_batches(batch_format="numpy", batch_size=None):
            for i, raw in zip(batch["i"].tolist(), batch["drop"].tolist(), strict=True):
                self.drop(int(i), Drop.model_validate_json(raw), "decontam")

    def judge_job(self) -> Callable[..., Awaitable[JobResult]]:
        """The judge's requests answered by teacher actors (a batch-mode judge: the driver)."""
        if self.config.judge.teacher.mode == "batch":
            return super().judge_job()
        return functools.partial(run_job_on_ray, ray_config=self.config.ray)

    # -- outputs ---------------------------------------------------------------------
    def write_outputs(self, funnel: list[dict[str, Any]], wall_s: float, rundir: RunDir) -> int:
        """Each block written as the files hold it, by a task; the driver appends the
        blocks in input order (`MAX_AHEAD` in flight) and writes the summary."""
        from distillery.filter.outputs import OutputWriter, RunFacts

        task = self._task(finish_block, 4)
        bar = progress_bar(sum(self.blocks.rows), "row", "outputs")
        with OutputWriter(self.out, self.config) as writer:
            ahead: list[Any] = []
            for b, ref in enumerate(self.blocks.refs):
                ahead.append(task.remote(ref, self.drop_refs[b], self.verdict_refs[b]))
                if len(ahead) >= MAX_AHEAD:
                    writer.add_block(*self.ray.get(ahead.pop(0)))
                    bar.update(self.blocks.rows[b - len(ahead)])
            for k, refs in enumerate(ahead):
                writer.add_block(*self.ray.get(refs))
                bar.update(self.blocks.rows[len(self.blocks.refs) - len(ahead) + k])
            bar.close()
            return writer.finish(RunFacts.of(self, funnel, wall_s, rundir))


MAX_AHEAD = 4  # blocks being written ahead of the one the driver appends


def _no_edges() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
