"""Run directories a re-run can trust: one writer at a time, resume only the same work.

Every stage that writes a run directory (generate, filter, train, eval, complete) opens it
through `RunDir`:

- **Lock.** `.distillery.lock` is held (`flock`) while the run writes; a second run on the
  same directory fails at once naming the holder (pid, host, command, since). The lock dies
  with its process, so a `kill -9` never leaves a stale lock.
- **Identity.** `identity.json` records what produced the outputs: the resolved config
  (minus the fields that cannot change a result, such as concurrency) and a digest of every
  input (seeds, data files, base model). A re-run with the same identity resumes; a different
  one stops with one line naming what differs (`teacher.temperature: 0.7 -> 0.1`) and the
  two ways forward: another output directory, or `--restart`, which moves the old outputs
  aside (never deletes them).
- **Invocations.** `invocations.jsonl` gets one line per invocation (when, command, exit
  code, whether it resumed, and the stage's own counters), so manifests can add up spend,
  requests and tokens over every invocation of one run. The counters so far are kept in
  `running.json` while the run lasts, so an invocation killed with `kill -9` is still counted
  (its line is added, with exit code "killed", by the next run that opens the directory).
- **Finish.** `mark_finished()` records that the outputs are complete for this identity; a
  re-run with the same command can then do nothing and say so.
- **Nothing half-written.** Temp files left by a killed atomic write are removed on open; a
  run that fails before writing anything of its own leaves no directory behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from distillery.errors import UserError
from distillery.jsonl import atomic_write_text
from pydantic import BaseModel

LOCK = ".distillery.lock"
IDENTITY = "identity.json"
INVOCATIONS = "invocations.jsonl"
FINISHED = "finished.json"
RUNNING = "running.json"  # the invocation in progress (its counters so far)
_BOOKKEEPING = {LOCK, IDENTITY, INVOCATIONS, FINISHED, RUNNING}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and contents)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")):
            h.update(str(f.relative_to(p)).encode() + b"\0" + file_digest(f).encode() + b"\n")
        return "sha256:" + h.hexdigest()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def input_identity(spec: str | Path | None) -> str | None:
    """What an input is, for the identity: a content digest for a local file or directory;
    the spec itself for a name that is not a local path (`hf:NAME`, a hub model id)."""
    if spec is None:
        return None
    p = Path(spec)
    if p.exists():
        return file_digest(p)
    return str(spec)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"teacher": {"spec": x}} -> {"teacher.spec": x}."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: obj}


def config_identity(
    config: BaseModel, exclude: Iterable[str] = (), inputs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The identity of a run: its config as JSON (dotted keys in `exclude`, and any key under
    them, left out) and `inputs` (name -> `input_identity(...)`)."""
    dropped = tuple(exclude)
    flat = flatten(config.model_dump(mode="json"))
    kept = {
        k: v for k, v in flat.items() if not any(k == d or k.startswith(d + ".") for d in dropped)
    }
    return {"config": kept, "inputs": dict(inputs or {})}


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 3) -> str:
    """`key: old -> new` for the first `limit` differing keys, and how many more."""
    a, b = flatten(old), flatten(new)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "(unset)") != b.get(k, "(unset)")]

    def show(v: Any) -> str:
        text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
        return text if len(text) <= 40 else text[:37] + "..."

    def name(key: str) -> str:  # config keys as the user writes them
        return key.removeprefix("config.")

    parts = [f"{name(k)}: {show(a.get(k, '(unset)'))} -> {show(b.get(k, '(unset)'))}" for k in keys]
    more = f" (and {len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


def _hash(identity: Mapping[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def refuse_inputs_inside(out: Path, named: Iterable[tuple[str, Any]], flag: str) -> None:
    """A one-line error if a local input (`(key, path or spec)`) lies in the output directory
    `out` (named by `flag` in the message): `--restart` would move it aside, and the run
    would then be recorded as made from a file that is no longer there, or is its own output."""
    where = out.resolve()
    for key, spec in named:
        if spec is None or not Path(str(spec)).exists():
            continue  # not a local file (hf:NAME, a hub model id)
        path = Path(str(spec)).resolve()
        if where == path or where in path.parents:
            raise UserError(
                f"{key}: {spec} lies in {flag} {out}, which this run writes (and --restart "
                "moves aside): choose another output directory"
            )


def acquire_lock(directory: Path) -> IO[str]:
    """Hold `directory/.distillery.lock` (the lock lasts while the returned file is open, and
    dies with the process); if another process holds it, a one-line error naming it."""
    fh = (directory / LOCK).open("a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise UserError(
            f"{directory}: in use by {holder}; wait for it to finish or use another "
            "output directory"
        ) from None
    fh.seek(0)
    fh.truncate()
    command = " ".join(["distillery", *sys.argv[1:]])[:200]
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    fh.write(f"pid {os.getpid()} on {socket.gethostname()} ({command}, since {since})\n")
    fh.flush()
    return fh


@contextlib.contextmanager
def locked(directory: str | Path) -> Iterator[None]:
    """`acquire_lock` for the block: for outputs kept outside a `RunDir` (eval's)."""
    fh = acquire_lock(Path(directory))
    try:
        yield
    finally:
        fh.close()


class RunDir:
    """Open with `with RunDir(path, "generate", identity, restart=...) as run:`.

    Inside, `run.resumed` says whether earlier work of the same identity is there,
    `run.finished` whether it is already complete; `run.record(**counters)` stores this
    invocation's counters and `run.exit_code` its exit code (both saved on exit),
    `run.previous()` yields the earlier invocations' lines and `run.totals(...)` sums them.
    """

    def __init__(
        self, path: str | Path, stage: str, identity: Mapping[str, Any], *, restart: bool = False
    ) -> None:
        self.path = Path(path)
        self.stage = stage
        self.identity = {"stage": stage, **identity}
        self.key = _hash(self.identity)
        self.restart = restart
        self.resumed = False
        self.exit_code: Any = 0  # the stage sets it; saved with the invocation
        self.moved_to: Path | None = None
        self._created = False
        self._created_dirs: list[Path] = []
        self._lock_fh: IO[str] | None = None
        self._counters: dict[str, Any] = {}
        self._running_fd: int | None = None  # running.json, open while counters are recorded
        self._running_len = 0
        self._started = time.time()

    # -- opening ---------------------------------------------------------------------------
    def __enter__(self) -> RunDir:
        # this directory and any parents it needs that do not exist yet (removed again if the
        # run fails before writing anything)
        self._created_dirs = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self._created = bool(self._created_dirs)
        blocker = next((p for p in (self.path, *self.path.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise UserError(f"{self.path}: {blocker} is a file, not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._remove_stale_temps()
            self._recover_killed()
            self._check_identity()
        except BaseException:
            self._release(remove_if_empty=True)
            raise
        return self

    def _acquire_lock(self) -> None:
        self._lock_fh = acquire_lock(self.path)

    def _remove_stale_temps(self) -> None:
        """Temp files (and directories) of an atomic write that a kill interrupted
        (`.NAME.XXXX.tmp`)."""
        for tmp in sorted(self.path.rglob(".*.tmp"), key=lambda p: len(p.parts)):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _recover_killed(self) -> None:
        """An invocation that died without closing (`kill -9`, power loss) left its counters
        in `running.json`: they become its line in `invocations.jsonl`."""
        path = self.path / RUNNING
        if not path.is_file():
            return
        with contextlib.suppress(OSError, json.JSONDecodeError):
            row = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(row, dict):
                row["exit_code"] = "killed"
                with (self.path / INVOCATIONS).open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        path.unlink(missing_ok=True)

    def _check_identity(self) -> None:
        stored_path = self.path / IDENTITY
        has_work = any(p.name not in _BOOKKEEPING for p in self.path.iterdir())
        if stored_path.is_file():
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
            if _hash(stored) == self.key and not (self.restart and has_work):
                self.resumed = has_work
                return
            if not self.restart:
                raise UserError(
                    f"{self.path} holds a {self.stage} run with different settings "
                    f"({describe_difference(stored, self.identity)}): {self._elsewhere()}, "
                    "or add --restart to move the old outputs aside"
                )
            self._move_aside()  # --restart: the same settings too (a redo from scratch)
        elif has_work and not self.restart:
            raise UserError(
                f"{self.path} already holds outputs that distillery did not record the "
                f"settings of: {self._elsewhere()}, or add --restart to move them aside"
            )
        elif has_work:
            self._move_aside()
        atomic_write_text(stored_path, json.dumps(self.identity, indent=1, sort_keys=True) + "\n")

    def _elsewhere(self) -> str:
        """How to put a different run somewhere else, in this stage's terms."""
        return {
            "generate": "use another run id (--run-id) or output directory",
            "complete": "write to another --output",
        }.get(self.stage, "use another output directory (--output-dir)")

    def _move_aside(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.old-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.old-{stamp}-{n}")
        target.mkdir()
        for entry in self.path.iterdir():
            if entry.name != LOCK:
                shutil.move(str(entry), str(target / entry.name))
        self.moved_to = target
        print(f"--restart: moved the previous outputs of {self.path} to {target}", flush=True)

    # -- during the run ---------------------------------------------------------------------
    @property
    def finished(self) -> dict[str, Any] | None:
        """The summary `mark_finished` stored for this identity, if the run is complete."""
        path = self.path / FINISHED
        if not path.is_file():
            return None
        done = json.loads(path.read_text(encoding="utf-8"))
        return done if done.get("identity") == self.key else None

    def mark_finished(self, summary: Mapping[str, Any] | None = None) -> None:
        body = {"identity": self.key, "at": time.time(), **(summary or {})}
        atomic_write_text(self.path / FINISHED, json.dumps(body, indent=1) + "\n")

    def clear_finished(self) -> None:
        (self.path / FINISHED).unlink(missing_ok=True)

    def record(self, **counters: Any) -> None:
        """This invocation's counters (requests, spend, tokens...), saved when it ends and
        meanwhile in `running.json`, so that a killed invocation still counts."""
        self._counters.update(counters)
        # called after every answer, so cheap: one pwrite over the previous text (padded to
        # its length with spaces); a kill cannot tear a single write, and it only has to
        # survive the process, not the machine
        text = json.dumps(self._row(None), ensure_ascii=False).encode()
        self._running_len = max(self._running_len, len(text))
        if self._running_fd is None:
            self._running_fd = os.open(self.path / RUNNING, os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(self._running_fd, text.ljust(self._running_len), 0)

    def previous(self) -> Iterator[dict[str, Any]]:
        """Earlier invocations of this identity, oldest first (a torn last line is skipped)."""
        path = self.path / INVOCATIONS
        if not path.is_file():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("identity") == self.key:
                yield row

    def totals(self, *names: str) -> dict[str, float]:
        """Each counter summed over the earlier invocations and this one."""
        rows = [*self.previous(), {"counters": self._counters}]
        return {n: sum(float(r.get("counters", {}).get(n) or 0) for r in rows) for n in names}

    # -- closing ----------------------------------------------------------------------------
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        code = 0 if exc_type is None else getattr(exc, "exit_code", None)
        if exc_type is SystemExit:
            code = exc.code
        elif exc_type is KeyboardInterrupt or exc_type is asyncio.CancelledError:
            code = 130  # Ctrl-C, as a shell reports it (asyncio.run cancels the main task)
        wrote = any(p.name not in _BOOKKEEPING for p in self.path.iterdir())
        if wrote or self.resumed or self._counters:
            self._append_invocation(code if exc_type else self.exit_code)
        if self._running_fd is not None:
            os.close(self._running_fd)
            self._running_fd = None
        (self.path / RUNNING).unlink(missing_ok=True)
        self._release(remove_if_empty=exc_type is not None and not wrote)

    def _append_invocation(self, code: Any) -> None:
        with (self.path / INVOCATIONS).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(self._row(code), ensure_ascii=False) + "\n")

    def _row(self, code: Any) -> dict[str, Any]:
        """This invocation's line of `invocations.jsonl`."""
        return {
            "identity": self.key,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self._started)),
            "wall_s": round(time.time() - self._started, 2),
            "command": " ".join(["distillery", *sys.argv[1:]])[:500],
            "exit_code": code,
            "resumed": self.resumed,
            "restarted": self.moved_to is not None,
            "counters": self._counters,
        }

    def _release(self, remove_if_empty: bool) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None
        if remove_if_empty and self._created and self.moved_to is None:
            leftovers = [p for p in self.path.iterdir() if p.name not in _BOOKKEEPING]
            if not leftovers:
                shutil.rmtree(self.path, ignore_errors=True)
                for parent in self._created_dirs[1:]:
                    with contextlib.suppress(OSError):  # only while empty
                        parent.rmdir()
