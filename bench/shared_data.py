"""Rows of the public reference data in ../shared/data, for the benchmarks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def shared_rows() -> Iterator[dict[str, Any]]:
    """Every row of every JSON/JSONL file there, except model responses to eval prompts."""
    for path in sorted(DATA.rglob("*.json")) + sorted(DATA.rglob("*.jsonl")):
        if "responses_" in path.name:
            continue
        raw = path.read_text()
        rows = (
            json.loads(raw)
            if path.suffix == ".json"
            else [json.loads(x) for x in raw.splitlines() if x.strip()]
        )
        yield from rows
