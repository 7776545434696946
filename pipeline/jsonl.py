"""Streaming, atomic JSONL and text IO.

- Reading streams line by line and names `file:line` in every error (bad UTF-8, bad JSON,
  a row that fails its schema).
- Writing goes to a temporary file in the same directory, is fsync'ed, then renamed over the
  target: a crash never leaves a half-written file under the final name.
- `Journal` is the append-only log long jobs write as items finish; a torn last line (from a
  kill in the middle of a write) is ignored on read and truncated away on the next append.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from distillery.errors import UserError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def read_text_utf8(path: Path) -> str:
    """The file's text; a missing file or bad UTF-8 is a one-line `UserError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object; malformed JSON or another kind of value is a
    one-line `UserError` naming the file (and the line)."""
    try:
        data = json.loads(read_text_utf8(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def validation_summary(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].lower()
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field {key!r}: {msg}{more}" if key else f"{msg}{more}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (a number must be finite)")


def loads_input(text: str | bytes) -> Any:
    """`json.loads` for input files, refusing NaN and Infinity: Python reads them, but a
    record holding one would be written back as null and fail to load."""
    return json.loads(text, parse_constant=_no_constant)


def open_jsonl(path: Path) -> IO[bytes]:
    """`path` opened for reading bytes; missing or a directory is a one-line `UserError`."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a .jsonl file") from None


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; errors name `file:line`."""
    path = Path(path)
    with open_jsonl(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x})"
                ) from None
            if not line.strip():
                continue
            try:
                obj = loads_input(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}:{lineno}: malformed JSON: {exc.msg} (column {exc.colno})"
                ) from None
            except ValueError as exc:  # NaN, Infinity
                raise UserError(f"{path}:{lineno}: malformed JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise UserError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def read_jsonl(path: str | Path, model: type[M]) -> Iterator[M]:
    """Stream rows of `path` validated into `model`; the first bad row is a `file:line` error."""
    for lineno, obj in iter_json_lines(path):
        try:
            yield model.model_validate(obj)
        except ValidationError as exc:
            raise UserError(f"{path}:{lineno}: {validation_summary(exc)}") from None


def _dumps(row: BaseModel | dict[str, Any]) -> str:
    if isinstance(row, BaseModel):
        return row.model_dump_json(exclude_none=False)
    return json.dumps(row, ensure_ascii=False)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on clean exit fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_jsonl(path: str | Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write rows atomically (streaming: rows may be a generator). Returns the row count."""
    count = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(_dumps(row) + "\n")
            count += 1
    return count


class Journal:
    """Append-only JSONL log of finished items, durable line by line.

    Each `append` writes one complete line and flushes it to the OS (and fsyncs when
    `fsync=True`), so after `kill -9` every line but possibly a torn last one is intact.
    `read` skips a torn final line; `open` truncates it away before appending.
    """

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._handle: IO[str] | None = None

    def read(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    return  # torn last line from an interrupted write
                try:
                    yield json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise UserError(
                        f"{self.path}: corrupt journal line; delete it to start over"
                    ) from None

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def open(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_torn_tail()
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def append(self, row: BaseModel | dict[str, Any]) -> None:
        if self._handle is None:
            self.open()
        assert self._handle is not None
        self._handle.write(_dumps(row) + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Journal:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
