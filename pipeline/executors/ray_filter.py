"""`distillery filter` with `executor: ray`: the per-row work of each step runs on Ray Data
blocks; the decisions are made by the same code as `executor: local`.

What runs where (`RayRun` is `filter.run.Run` with five steps' inner work moved out):
- heuristics: `Heuristics.check` on every row, in parallel over blocks; the drops come back.
- exact: each row's normalised text as a 16-byte digest, in parallel; the driver groups the
  digests (ids only) into the same star edges as `dedup.exact_edges`.
- near (method join): shingle signatures, prefix entries, grouped by shingle, every pair in
  a group verified exactly (`near_parts`); the driver gets edges (ids and Jaccard) only.
- semantic / decontam embeddings: an actor pool (GPU actors with `ray.embed_gpus`) embeds
  the rows; neighbour search is `dedup.semantic_edges` on the driver, as before.
- decontam n-grams: the benchmark index is put in the object store once and each worker
  process reads it once; `decontam.check_row` runs per row.
Every edge set is resolved by `Run._resolve` (`dedup.resolve`: union-find, the same survivor
rule), so `kept.jsonl`, `dropped.jsonl` (rules and evidence) and the report are the same as
local. The judge's requests are answered by teacher actors (`ray_complete.run_job_on_ray`:
one concurrency and cost budget, the journal written by the driver), so its verdicts and
journals are those of `local`; with `judge.teacher.mode: batch` the driver hands them to
the provider's batch API as under `local`. The rows themselves stay on the driver, which
writes the outputs with `filter.outputs`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from distillery.embeddings import embed, load_embedder
from distillery.executors import near_parts
from distillery.executors.ray_complete import run_job_on_ray
from distillery.executors.session import connect
from distillery.filter.config import FilterConfig, HeuristicsConfig
from distillery.filter.decontam import EvalItem, NgramIndex, check_row
from distillery.filter.dedup import Edge, normalise
from distillery.filter.heuristics import Heuristics
from distillery.filter.rows import text_of
from distillery.filter.run import Run
from distillery.records import Drop, Record
from distillery.teacher.jobs import JobResult

SAMPLE_ROWS = 20_000  # rows whose shingle frequencies order the near step's prefixes
_SHARED: dict[str, Any] = {}  # per worker process: objects fetched once from the store


def _shared(box: list[Any]) -> Any:
    """The object behind `box[0]` (an ObjectRef, boxed so Ray passes it unresolved), fetched
    once per worker process."""
    import ray

    key = box[0].hex()
    if key not in _SHARED:
        _SHARED[key] = ray.get(box[0])
    return _SHARED[key]


def heuristics_block(batch: pa.Table, config: dict[str, Any]) -> pa.Table:
    """(i, drop): the rows of a block that break a heuristic rule, the drop as JSON."""
    rules = Heuristics(HeuristicsConfig.model_validate(config))
    ids, drops = [], []
    for i, raw in zip(
        batch.column("i").to_pylist(), batch.column("record").to_pylist(), strict=True
    ):
        drop = rules.check(Record.model_validate_json(raw))
        if drop is not None:
            ids.append(i)
            drops.append(drop.model_dump_json())
    return pa.table({"i": pa.array(ids, pa.int64()), "drop": pa.array(drops, pa.string())})


def exact_keys_block(batch: pa.Table) -> pa.Table:
    """(i, key): the 16-byte BLAKE2b digest of each row's normalised text."""
    keys = [
        hashlib.blake2b(normalise(t).encode(), digest_size=16).digest()
        for t in batch.column("text").to_pylist()
    ]
    return pa.table({"i": batch.column("i"), "key": pa.array(keys, pa.binary(16))})


def decontam_block(batch: pa.Table, index_box: list[Any], min_overlap: int) -> pa.Table:
    """(i, drop): the rows of a block sharing n-grams with the benchmark index."""
    index: NgramIndex = _shared(index_box)
    ids, drops = [], []
    for i, raw in zip(
        batch.column("i").to_pylist(), batch.column("record").to_pylist(), strict=True
    ):
        drop = check_row(index, Record.model_validate_json(raw), min_overlap)
        if drop is not None:
            ids.append(i)
            drops.append(drop.model_dump_json())
    return pa.table({"i": pa.array(ids, pa.int64()), "drop": pa.array(drops, pa.string())})


class EmbedActor:
    """One embedding model per actor (loaded once), unit vectors per block."""

    def __init__(self, model: str, device: str, batch_size: int) -> None:
        self.model, self.batch_size = load_embedder(model, device), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs = embed(self.model, [str(t) for t in batch["text"]], self.batch_size)
        return {"i": batch["i"], "vec": vecs}


def star_edges(positions: np.ndarray, keys: list[bytes]) -> list[Edge]:
    """`dedup.exact_edges` from (position, key) pairs in any order: each repeat of a key is
    linked to the key's first position."""
    first: dict[bytes, int] = {}
    edges = []
    for pos in np.argsort(positions, kind="stable"):
        key, i = keys[pos], int(positions[pos])
        if key in first:
            edges.append(Edge(first[key], i, 1.0))
        else:
            first[key] = i
    return edges


def unique_edges(a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> list[Edge]:
    """Edges found in several groups, once each, sorted by (a, b) as `setjoin` gives them."""
    if not len(a):
        return []
    _, first = np.unique(a * (int(b.max()) + 1) + b, return_index=True)
    return [
        Edge(int(x), int(y), float(s))
        for x, y, s in zip(a[first].tolist(), b[first].tolist(), sim[first].tolist(), strict=True)
    ]


class RayRun(Run):
    """`Run` whose steps send their per-row work to Ray; decisions as in `Run`."""

    def __init__(
        self, config: FilterConfig, rows: list[Record], out: Path, evals: list[EvalItem]
    ) -> None:
        super().__init__(config, rows, out, evals)
        self.ray = connect(config.ray)

    # -- plumbing --------------------------------------------------------------------
    def _dataset(self, columns: dict[str, Any]) -> Any:
        """A Ray dataset of `ray.rows_per_block`-row blocks (positions in column `i`)."""
        table = pa.table(columns)
        step = self.config.ray.rows_per_block
        blocks = [table.slice(lo, step) for lo in range(0, max(len(table), 1), step)]
        return self.ray.data.from_arrow(blocks)

    def _batches(self, ds: Any) -> Iterator[pa.Table]:
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)

    def _drops(self, ds: Any, step: str) -> None:
        found: dict[int, Drop] = {}
        for batch in self._batches(ds):
            for pos, raw in zip(
                batch.column("i").to_pylist(), batch.column("drop").to_pylist(), strict=True
            ):
                found[pos] = Drop.model_validate_json(raw)
        for pos in sorted(found):
            self.drop(self.alive[pos], found[pos], step)

    def _texts(self, fields: str) -> dict[str, Any]:
        return {
            "i": pa.array(np.arange(len(self.alive)), pa.int64()),
            "text": [text_of(self.rows[i], fields) for i in self.alive],
        }

    # -- steps -----------------------------------------------------------------------
    def _records(self) -> Any:
        """The rows still in, as JSON (column `record`)."""
        records = [self.rows[i].model_dump_json() for i in self.alive]
        return self._dataset(
            {"i": pa.array(np.arange(len(records)), pa.int64()), "record": records}
        )

    def heuristics(self) -> None:
        ds = self._records()
        config = self.config.heuristics.model_dump()
        self._drops(
            ds.map_batches(heuristics_block, batch_format="pyarrow", fn_kwargs={"config": config}),
            "heuristics",
        )

    def exact(self) -> None:
        ds = self._dataset(self._texts(self.config.exact.fields))
        positions, keys = [], []
        for batch in self._batches(ds.map_batches(exact_keys_block, batch_format="pyarrow")):
            positions.extend(batch.column("i").to_pylist())
            keys.extend(batch.column("key").to_pylist())
        edges = star_edges(np.asarray(positions, np.int64), keys)
        self._resolve(edges, "exact_duplicate", "similarity", "exact")

    def near(self) -> None:
        c = self.config.near
        if c.method != "join" or not self.alive:
            super().near()  # MinHash-LSH stays on the driver (kept for comparison only)
            return
        edges, entries = self._near_edges(self._dataset(self._texts(c.fields)))
        self.near_stats = {"method": "join", "executor": "ray", "prefix_entries": entries,
                           "verified": len(edges)}  # fmt: skip
        self._resolve(edges, "near_duplicate", "jaccard", "near")

    def _near_edges(self, ds: Any) -> tuple[list[Edge], int]:
        c = self.config.near
        tokens = ds.map_batches(
            near_parts.shingle_tokens, batch_format="pyarrow", fn_kwargs={"k": c.shingle_size}
        ).materialize()
        sample = [np.asarray(r["tokens"], np.int64) for r in tokens.take(SAMPLE_ROWS)]
        vocab, freq = near_parts.sample_frequencies(sample)
        entries = tokens.map_batches(
            near_parts.prefix_entries,
            batch_format="pyarrow",
            fn_kwargs={"threshold": c.threshold, "vocab": vocab, "freq": freq},
        ).materialize()
        pairs = entries.groupby("key").map_groups(
            near_parts.verify_group, batch_format="pyarrow", fn_kwargs={"threshold": c.threshold}
        )
        parts = list(self._batches(pairs))
        if not parts:
            return [], entries.count()
        found = pa.concat_tables(parts)
        cols = [found.column(n).to_numpy() for n in ("a", "b", "sim")]
        return unique_edges(*cols), entries.count()

    def decontam(self) -> None:
        c = self.config.decontam
        box = [self.ray.put(NgramIndex(self.evals, c.ngram))]  # one copy in the object store
        ds = self._records()
        kwargs = {"index_box": box, "min_overlap": c.min_overlap}
        self._drops(
            ds.map_batches(decontam_block, batch_format="pyarrow", fn_kwargs=kwargs), "decontam"
        )
        if c.embedding_threshold is not None:
            self.decontam_embedding()  # through `embeddings`: vectors from the actor pool

    def embeddings(self, idx: list[int]) -> np.ndarray:
        """As `Run.embeddings`, the missing vectors computed by the actor pool."""
        cfg, r = self.config.semantic, self.config.ray
        missing = [i for i in idx if i not in self._embeddings]
        if missing:
            texts = [text_of(self.rows[i], "instruction") for i in missing]
            ds = self._dataset({"i": pa.array(missing, pa.int64()), "text": texts})
            vectors = ds.map_batches(
                EmbedActor,
                batch_format="numpy",
                batch_size=cfg.batch_size * 8,
                concurrency=r.embed_actors,
                num_gpus=r.embed_gpus or None,
                fn_constructor_kwargs={
                    "model": cfg.model,
                    "device": "cuda" if r.embed_gpus else cfg.device,
                    "batch_size": cfg.batch_size,
                },
            )
            for batch in vectors.iter_batches(batch_format="numpy", batch_size=None):
                self._embeddings.update(zip(batch["i"].tolist(), batch["vec"], strict=True))
        return super().embeddings(idx)

    def judge_job(self) -> Callable[..., Awaitable[JobResult]]:
        """The judge's requests answered by teacher actors (a batch-mode judge: the driver)."""
        if self.config.judge.teacher.mode == "batch":
            return super().judge_job()
        return functools.partial(run_job_on_ray, ray_config=self.config.ray)
