"""Content-addressed response cache in SQLite.

The key is a SHA-256 over exactly what changes the answer: the teacher spec, an optional
namespace, the messages (or a raw prompt), the generation parameters (temperature, top_p,
max_tokens, seed, stop) and a per-request salt. Nothing about how the job runs
(concurrency, batch size, rate limits, retries, replicas) is in the key, so tuning those
never throws paid answers away. Only successful answers are stored; failures are retried
on the next run. No API key or header is ever stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from distillery.teacher.types import RawCompletion

OUTPUT_PARAMS = ("temperature", "top_p", "max_tokens", "seed", "stop")


def cache_key(
    spec: str,
    messages: list[dict[str, str]],
    params: dict[str, Any],
    salt: str = "",
    namespace: str = "",
    prompt: str | None = None,
) -> str:
    """`prompt`: a raw-prompt request's text (in the key only when given, so chat requests
    keep the keys they always had)."""
    material: dict[str, Any] = {
        "spec": spec,
        "namespace": namespace,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "params": {k: params.get(k) for k in OUTPUT_PARAMS},
        "schema": None,  # structured output was removed; kept so existing keys still match
        "salt": salt,
    }
    if prompt is not None:
        material["prompt"] = prompt
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def work_fingerprint(key: str, template_sha256: str | None = None, purpose: str = "") -> str:
    """What produced a journal entry: the request's cache key (spec, namespace, messages,
    sampling parameters, schema, salt) plus the prompt template's hash and the call's purpose,
    which travel into the entry's trace. A resumed job reuses an entry only when this matches.
    """
    blob = json.dumps([key, template_sha256, purpose], separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


class ResponseCache:
    """Thread-safe; WAL mode so readers never block the writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses ("
            " key TEXT PRIMARY KEY, spec TEXT, text TEXT, finish_reason TEXT,"
            " input_tokens INTEGER, output_tokens INTEGER, created REAL DEFAULT (julianday('now')))"
        )

    def get(self, key: str) -> RawCompletion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, finish_reason, input_tokens, output_tokens FROM responses WHERE key=?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return RawCompletion(
            text=row[0], finish_reason=row[1], input_tokens=row[2], output_tokens=row[3]
        )

    def put(self, key: str, spec: str, raw: RawCompletion) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, spec, text, finish_reason, input_tokens,"
                " output_tokens) VALUES (?, ?, ?, ?, ?, ?)",
                (key, spec, raw.text, raw.finish_reason, raw.input_tokens, raw.output_tokens),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
