"""The filter under `executor: local` and `executor: ray`: rows/s, peak memory of the driver
and of the largest Ray worker, and agreement of the decisions.

Each executor runs `distillery filter` end to end (reading the JSONL input, writing every
output) in its own subprocess; kept.jsonl and dropped.jsonl must be byte-identical.
- Synthetic: N rows (bench/dedup.py's random words with planted exact and near duplicates),
  steps exact,near (default 1M; `--rows` smaller when the machine cannot take it).
- Real: the ~28k rows of ../shared/data (skipped if absent), steps heuristics,exact,near.
Each run is a fresh subprocess (its own peak RSS). Ray is a local instance with 2 CPUs;
its start-up is reported apart from the steps. Worker memory is the largest RSS of any
`ray::` process, sampled every 0.2 s (the object store's shared memory is not in it).

    .venv/bin/python bench/ray_filter.py [--rows 1000000] [--skip-real]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic_rows(n: int) -> list[Any]:
    from distillery.records import Message, Record

    from bench.dedup import synthetic_texts

    return [
        Record(
            id=f"s{i}",
            instruction=text,
            origin="external",
            messages=[Message(role="user", content=text), Message(role="assistant", content="ok")],
        )
        for i, text in enumerate(synthetic_texts(n))
    ]


def real_rows() -> list[Any]:
    from distillery.filter.rows import to_record

    from bench.shared_data import shared_rows

    rows, seen = [], set()
    for k, obj in enumerate(shared_rows()):
        try:
            record = to_record(obj, f"shared[{k}]")
        except ValueError:
            continue
        if record.id not in seen:
            seen.add(record.id)
            rows.append(record)
    return rows


class PeakSampler:
    """The largest value `measure()` (bytes) returns, sampled every `every_s` in a thread."""

    def __init__(self, measure: Callable[[], int], every_s: float) -> None:
        self.peak, self.measure, self.every_s = 0, measure, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.measure())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def largest_ray_worker_rss() -> int:
    """The largest RSS of any Ray worker process (`ray::...`)."""
    import psutil

    sizes = [0]
    for proc in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = proc.info.get("cmdline") or []
        mem = proc.info.get("memory_info")
        if cmd and cmd[0].startswith("ray::") and mem is not None:
            sizes.append(mem.rss)
    return max(sizes)


def own_anonymous_memory() -> int:
    """This process's anonymous memory (RssAnon: its own heap, not the pages of Ray's
    shared-memory object store that it maps while putting or reading objects, which VmHWM
    counts)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def write_input(source: str, n: int, path: Path) -> int:
    """The rows as the JSONL file both executors read; returns the row count."""
    from distillery.jsonl import write_jsonl

    if not path.exists():
        write_jsonl(path, synthetic_rows(n) if source == "synthetic" else real_rows())
    return sum(1 for _ in path.open("rb"))


def peak_rss_mb() -> int:
    """This process's peak RSS (VmHWM: per address space, so not inherited through exec as
    `ru_maxrss` is from the parent that wrote the input)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def child(executor: str, inp: Path, steps: str, out: Path) -> dict:
    """One `distillery filter` run, outputs included: timings and peak memory."""
    import torch
    from distillery.cli import main as cli

    torch.set_num_threads(1)
    started = time.monotonic()
    watch = None
    if executor == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        watch = PeakSampler(largest_ray_worker_rss, 0.2)
    ready = time.monotonic()
    own = PeakSampler(own_anonymous_memory, 0.1)
    args = ["filter", "--input", str(inp), "--output-dir", str(out), "--steps", steps,
            f"executor={executor}", "ray.rows_per_block=50000", "--restart"]  # fmt: skip
    assert cli(args) == 0
    done = time.monotonic()
    worker_peak = watch.stop() if watch is not None else 0
    summary = json.loads((out / "summary.json").read_text())
    return {
        "executor": executor,
        "rows": summary["rows_in"],
        "steps": steps,
        "startup_s": round(ready - started, 1),
        "run_s": round(done - ready, 1),
        "rows_per_s": round(summary["rows_in"] / max(done - ready, 1e-9)),
        "dropped": summary["rows_dropped"],
        "driver_peak_rss_mb": peak_rss_mb(),
        "driver_peak_anon_mb": own.stop() // 2**20,
        "largest_worker_peak_rss_mb": worker_peak // 2**20,
    }


def compare(source: str, n: int, steps: list[str], tmp: Path) -> None:
    inp = tmp / f"{source}-{n}.jsonl"
    print(f"{source}: {write_input(source, n, inp):,} rows in {inp}")
    results = {}
    for executor in ("local", "ray"):
        out = tmp / f"{source}-{executor}"
        cmd = [sys.executable, __file__, "--child", executor, str(inp), ",".join(steps), str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-3000:])
            raise SystemExit(f"{executor} run failed")
        results[executor] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results[executor]))
    for name in ("kept.jsonl", "dropped.jsonl"):
        a = (tmp / f"{source}-local" / name).read_bytes()
        b = (tmp / f"{source}-ray" / name).read_bytes()
        print(f"{source} {name}: {'identical' if a == b else 'DIFFERENT'} "
              f"(sha256 {hashlib.sha256(a).hexdigest()[:12]} / {hashlib.sha256(b).hexdigest()[:12]})")  # fmt: skip
    local, ray = results["local"], results["ray"]
    print(f"{source}: ray/local rows/s {ray['rows_per_s'] / local['rows_per_s']:.2f}, driver peak "
          f"{ray['driver_peak_rss_mb'] / local['driver_peak_rss_mb']:.2f}")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        executor, inp, steps, out = sys.argv[2:6]
        print(json.dumps(child(executor, Path(inp), steps, Path(out))))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--tmp", default="/tmp/distillery-bench-ray")
    args = parser.parse_args()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    compare("synthetic", args.rows, ["exact", "near"], tmp)
    from bench.shared_data import DATA

    if args.skip_real or not DATA.is_dir():
        print(f"real rows skipped ({DATA} absent or --skip-real)")
        return
    compare("real", 0, ["heuristics", "exact", "near"], tmp)


if __name__ == "__main__":
    main()
