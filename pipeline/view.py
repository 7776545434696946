"""`distillery view RUN_DIR`: one self-contained HTML file to browse a run's rows.

Reads a generate run (`generated.jsonl`, `rejected.jsonl`), a filter run (`kept.jsonl`,
`dropped.jsonl`, `summary.json`), or a directory holding both (the demo's `runs/demo/`), and
writes a page with no server and nothing fetched from the network: the CSS and JavaScript are
inline and the rows are embedded as gzip-compressed JSON (decompressed by the browser's
`DecompressionStream`).

What flows into the page:
- an index read at start-up, one column per field: id, status (kept, dropped, rejected,
  generated), origin, category, the rule that dropped it, judge score, parents (as row
  positions, or the id when the parent is not in the run) and the instruction's first
  characters (what search looks at);
- the full rows (messages, trace of every LLM call, usage, scores, drop evidence, meta) in
  chunks of `CHUNK_ROWS`, each decompressed only when one of its rows is opened, with the
  rows each was compared with (`compared`: the near-duplicate survivor, the rows dropped in
  its favour) resolved to positions.

So a 50k-row run opens at the speed of its index, whatever the size of the traces.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.jsonl import atomic_write_text, iter_json_lines, read_text_utf8
from distillery.reports import render

CHUNK_ROWS = 200  # rows per compressed detail chunk: ~10 ms to open one in a browser
SEARCH_CHARS = 400  # characters of each instruction kept in the index (search and list)
STATUSES = ("kept", "dropped", "rejected", "generated")


@dataclass(frozen=True)
class RunFiles:
    """The run directories a view reads; either may be absent, not both."""

    generate: Path | None
    filter: Path | None
    more_generate: tuple[Path, ...] = ()  # other generate runs the filter's input joins


def _is_generate(path: Path) -> bool:
    return (path / "generated.jsonl").is_file()


def _is_filter(path: Path) -> bool:
    return (path / "kept.jsonl").is_file() or (path / "dropped.jsonl").is_file()


def _input_of(filter_dir: Path) -> Path | None:
    """The rows file a filter run read: the path as recorded, else (a relative path recorded
    from another directory) the file of that name in the directory above the filter run."""
    summary = filter_dir / "summary.json"
    if not summary.is_file():
        return None
    try:
        source = Path(str(json.loads(read_text_utf8(summary)).get("input", "")))
    except (json.JSONDecodeError, AttributeError):
        return None
    for where in (source.parent, filter_dir.parent):
        if source.name and (where / source.name).is_file():
            return where / source.name
    return None


def _generates_of(filter_dir: Path) -> list[Path]:
    """The generate runs a filter run read: the one whose rows are its input, or those whose
    rows its input joins (the demo's generated_all.jsonl: generate/ and passes/magpie/)."""
    from distillery.dataset_card import parts_of

    source = _input_of(filter_dir)
    if source is None:
        return []
    if _is_generate(source.parent) and source.name == "generated.jsonl":
        return [source.parent]
    return [p for p in parts_of(source) if _is_generate(p)]


def _generate_of(filter_dir: Path) -> Path | None:
    """The generate run a filter run read, when its `input` is a generate run's rows."""
    source = _input_of(filter_dir)
    return source.parent if source is not None and _is_generate(source.parent) else None


def locate(run_dir: str | Path) -> RunFiles:
    """RUN_DIR is a filter run, a generate run, or a directory whose sub-directories hold at
    most one of each (the demo's layout)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such directory")
    if _is_filter(run):
        return _with_generates(run, _generate_of(run))
    if _is_generate(run):
        return RunFiles(run, None)
    subdirs = sorted(p for p in run.iterdir() if p.is_dir())
    gens = [p for p in subdirs if _is_generate(p)]
    filts = [p for p in subdirs if _is_filter(p)]
    for kind, found in (("generate", gens), ("filter", filts)):
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise UserError(f"{run}: {len(found)} {kind} runs ({names}); view one of them")
    if not gens and not filts:
        raise UserError(
            f"{run}: no run found (a generate run has generated.jsonl, a filter run kept.jsonl "
            "or dropped.jsonl; or give a directory holding them, like runs/demo)"
        )
    generate = gens[0] if gens else None
    if not filts:
        return RunFiles(generate, None)
    return _with_generates(filts[0], generate or _generate_of(filts[0]))


def _with_generates(filt: Path, generate: Path | None) -> RunFiles:
    """A filter run with its generate run and, when its input joins several (the demo's Magpie
    pass), the others, whose rejected candidates are rows of the page too."""
    joined = _generates_of(filt)
    if generate is None and joined:
        generate = joined[0]
    more = tuple(p for p in joined if generate is None or p.resolve() != generate.resolve())
    return RunFiles(generate, filt, more)


@dataclass(frozen=True)
class Source:
    """One rows file of the run and the status its rows get."""

    path: Path
    status: str


def sources(files: RunFiles) -> list[Source]:
    """In page order: the filter's kept and dropped rows, then generate's rows (those the
    filter did not see are `generated`) and the candidates generate rejected."""
    found = []
    if files.filter is not None:
        found += [Source(files.filter / "kept.jsonl", "kept")]
        found += [Source(files.filter / "dropped.jsonl", "dropped")]
    for run in [files.generate, *files.more_generate] if files.generate else []:
        found += [Source(run / "generated.jsonl", "generated")]
        found += [Source(run / "rejected.jsonl", "rejected")]
    return [s for s in found if s.path.is_file()]


def _light(row: dict[str, Any], status: str) -> dict[str, Any]:
    """What the index and the links need of a row (not its messages or trace)."""
    drop = row.get("dropped_by") or {}
    return {
        "id": row["id"],
        "status": status,
        "origin": str(row.get("origin", "?")),
        "category": row.get("category") or "(none)",
        "rule": drop.get("rule"),
        "evidence": drop.get("evidence") if isinstance(drop.get("evidence"), dict) else {},
        "score": _judge_score(row),
        "round": row.get("round", 0),
        "turns": len(row.get("messages") or []),
        "parent_ids": list(row.get("parent_ids") or []),
        "text": str(row.get("instruction", ""))[:SEARCH_CHARS],
        "demo": bool(row.get("demo")),
    }


def scan(found: list[Source]) -> tuple[list[dict[str, Any]], dict[Path, set[int]]]:
    """Pass one: the light fields of every row (`_light`) and, per file, the line numbers
    that are rows of the page (a generate row the filter also wrote is shown once, as the
    filter's copy, which carries its scores and drop)."""
    rows: list[dict[str, Any]] = []
    lines: dict[Path, set[int]] = {}
    seen: set[str] = set()
    for source in found:
        taken = lines.setdefault(source.path, set())
        for lineno, row in iter_json_lines(source.path):
            if not isinstance(row.get("id"), str):
                raise UserError(f"{source.path}:{lineno}: a row without a string 'id'")
            if source.status == "generated" and row["id"] in seen:
                continue
            seen.add(row["id"])
            taken.add(lineno)
            rows.append(_light(row, source.status))
    return rows, lines


def _raw_rows(found: list[Source], lines: dict[Path, set[int]]) -> Iterator[tuple[bytes, str]]:
    """Pass two: (the JSON text of a row as written, its file name), in page order, read
    again instead of kept in memory (a 50k-row run's traces are about a gigabyte)."""
    for source in found:
        taken = lines[source.path]
        with source.path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if lineno in taken:
                    yield raw.strip(), source.path.name


def _positions(rows: list[dict[str, Any]]) -> dict[str, int]:
    """id -> position; an id seen twice points at its first row (the filter's copy)."""
    where: dict[str, int] = {}
    for i, row in enumerate(rows):
        where.setdefault(row["id"], i)
    return where


def compared_with(rows: list[dict[str, Any]], where: dict[str, int]) -> dict[int, list[Any]]:
    """Per position: [relation, other position] for each row named in a drop's evidence
    (`survivor_id`, `similar_to`, ...) and, on the other side, the rows dropped in its favour."""
    links: dict[int, list[Any]] = {}
    for i, row in enumerate(rows):
        for key, value in row["evidence"].items():
            j = where.get(value) if isinstance(value, str) else None
            if j is None or j == i:
                continue
            links.setdefault(i, []).append([f"dropped by {row['rule']}: {key}", j])
            links.setdefault(j, []).append([f"dropped by {row['rule']} in favour of this row", i])
    return links


class _Codes:
    """Strings as small integers, for the index's repeated columns."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._code: dict[str, int] = {}

    def __call__(self, name: str | None) -> int:
        if name is None:
            return -1
        if name not in self._code:
            self._code[name] = len(self.names)
            self.names.append(name)
        return self._code[name]


def _judge_score(row: dict[str, Any]) -> float | None:
    score = (row.get("scores") or {}).get("judge")
    return float(score) if isinstance(score, (int, float)) else None


def build_index(rows: list[dict[str, Any]], where: dict[str, int]) -> dict[str, Any]:
    """The columns the page reads at start-up (list, search, filters, lineage)."""
    codes = {name: _Codes() for name in ("origin", "category", "rule")}
    index: dict[str, Any] = {
        "id": [r["id"] for r in rows],
        "status": [STATUSES.index(r["status"]) for r in rows],
        **{name: [code(r[name]) for r in rows] for name, code in codes.items()},
        "score": [r["score"] for r in rows],
        "round": [r["round"] for r in rows],
        "turns": [r["turns"] for r in rows],
        "parents": [[where.get(p, p) for p in r["parent_ids"]] for r in rows],
        "text": [r["text"] for r in rows],
    }
    index["names"] = {"status": list(STATUSES), **{k: c.names for k, c in codes.items()}}
    return index


def _gzip_b64(raw: bytes) -> str:
    """gzip, then base64: what the page's `unpack` reverses (base64 has no `<`, so the text
    cannot end its <script> element)."""
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _chunks(raw_rows: Iterator[tuple[bytes, str]], links: dict[int, list[Any]]) -> Iterator[str]:
    """The full rows, CHUNK_ROWS to a chunk, each a JSON array whose objects are the rows as
    written with `_file` and `_compared` put first (spliced into the text, not re-encoded)."""
    part: list[bytes] = []
    for i, (raw, name) in enumerate(raw_rows):
        extra = _json({"_file": name, "_compared": links.get(i, [])})
        part.append(extra[:-1] + b"," + raw[1:])  # raw is an object with an id: never {}
        if len(part) == CHUNK_ROWS:
            yield _gzip_b64(b"[" + b",".join(part) + b"]")
            part = []
    if part:
        yield _gzip_b64(b"[" + b",".join(part) + b"]")


def render_view(files: RunFiles) -> tuple[str, int]:
    """The page and the number of rows in it (two passes over the rows files)."""
    found = sources(files)
    rows, lines = scan(found)
    if not rows:
        raise UserError(f"{files.filter or files.generate}: the run has no rows to show")
    where = _positions(rows)
    info = {
        "generate": " + ".join(str(p) for p in (files.generate, *files.more_generate) if p) or None,
        "filter": str(files.filter) if files.filter else None,
        "rows": len(rows),
        "counts": [[s, n] for s in STATUSES if (n := sum(r["status"] == s for r in rows))],
        "demo": any(r["demo"] for r in rows),
        "chunk_rows": CHUNK_ROWS,
    }
    page = render(
        "view.html.jinja",
        info=info,
        index=_gzip_b64(_json(build_index(rows, where))),
        chunks=_chunks(_raw_rows(found, lines), compared_with(rows, where)),
    )
    return page, len(rows)


PAGE_MARK = b"<title>distillery view</title>"  # in the head of every page this writes


def _check_output(out: Path) -> None:
    """The page may replace only a page `distillery view` wrote (never a directory or any
    other file the user gave by mistake)."""
    if out.is_dir():
        raise UserError(f"--output {out}: is a directory; give a file name, e.g. {out}/view.html")
    if out.exists():
        with out.open("rb") as handle:
            head = handle.read(2048)
        if PAGE_MARK not in head:
            raise UserError(
                f"--output {out}: exists and is not a page distillery view wrote; "
                "choose another file name"
            )


def write_view(run_dir: str | Path, output: str | Path | None = None) -> tuple[Path, int]:
    """Write the page (default RUN_DIR/view.html); returns (its path, rows in it)."""
    out = Path(output) if output else Path(run_dir) / "view.html"
    _check_output(out)
    page, rows = render_view(locate(run_dir))
    atomic_write_text(out, page)
    return out, rows
