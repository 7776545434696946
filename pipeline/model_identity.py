"""What a model is, for a run's identity: its files by content, weights cheaply.

Neutral (no stage's): training's run identity names its base model this way, and eval's
harness identity names the student and the base model it scores.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from distillery.runstate import file_digest, input_identity

# weight files above this size are identified by size and modification time, not content
FULL_DIGEST_BYTES = 64 << 20


def _file_key(path: Path) -> str:
    """Content digest for files up to FULL_DIGEST_BYTES; for a larger one (weights), the
    Hugging Face cache's content address when it is a cache blob, else size + mtime."""
    stat = path.stat()
    if stat.st_size <= FULL_DIGEST_BYTES:
        return file_digest(path)
    real = path.resolve()
    if real.parent.name == "blobs":  # hub cache: the blob's name is its sha256 (LFS etag)
        return f"blob:{real.name}"
    return f"size:{stat.st_size}:mtime_ns:{stat.st_mtime_ns}"


def model_identity(spec: str) -> str:
    """A base model's identity without reading gigabytes of weights every run.

    A local directory: every first-level file (config, tokenizer, weight index) by content,
    weight files above 64 MiB by their hub-cache content address or by size + mtime (any
    rewrite changes the mtime, so a changed model is never taken for the old one; a copy
    that does not keep mtimes reads as different, the safe direction). A hub name: the name
    and the revision in the local cache, if any.
    """
    path = Path(spec)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(f"{f.name}\0{_file_key(f)}\n".encode())
        return "sha256:" + h.hexdigest()
    if path.exists():
        return input_identity(path) or spec
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a valid repo id: the name is all we know
        cached = None
    if isinstance(cached, str):
        return f"{spec}@{Path(cached).parent.name}"
    return spec
