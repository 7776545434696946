"""The filter under `executor: local` and `executor: ray`: rows/s, peak memory of the driver
and of the largest Ray worker, and agreement of the decisions.

- Synthetic: N rows (bench/dedup.py's random words with planted exact and near duplicates),
  steps exact,near (default 1M; `--rows` smaller when the machine cannot take it).
- Real: the ~28k rows of ../shared/data (skipped if absent), steps heuristics,exact,near.
Each run is a fresh subprocess (its own peak RSS). Ray is a local instance with 2 CPUs;
its start-up is reported apart from the steps. Worker memory is the largest RSS of any
`ray::` process, sampled every 0.2 s (the object store's shared memory is not in it).
Agreement: every row's decision (kept, or the rule and evidence that dropped it) compared.

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


class WorkerMemory:
    """The largest RSS of any Ray worker process (`ray::...`), sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = proc.info.get("cmdline") or []
                mem = proc.info.get("memory_info")
                if cmd and cmd[0].startswith("ray::") and mem is not None:
                    self.peak = max(self.peak, mem.rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def child(executor: str, source: str, n: int, steps: list[str], decisions: Path) -> dict:
    """One run of the steps (no outputs written): timings, memory, decisions to a file."""
    import torch
    from distillery.filter.config import FilterConfig
    from distillery.filter.run import Run, _run_steps

    torch.set_num_threads(1)
    rows = synthetic_rows(n) if source == "synthetic" else real_rows()
    config = FilterConfig(steps=steps, executor=executor)  # type: ignore[arg-type]
    config.ray.num_cpus = 2
    config.ray.rows_per_block = 50_000
    started = time.monotonic()
    watch = WorkerMemory() if executor == "ray" else None
    if executor == "ray":
        from distillery.executors.ray_filter import RayRun

        run: Run = RayRun(config, rows, Path("/tmp"), [])
    else:
        run = Run(config, rows, Path("/tmp"), [])
    ready = time.monotonic()
    _run_steps(run)
    done = time.monotonic()
    worker_peak = watch.stop() if watch is not None else 0
    lines = [
        json.dumps([r.id, run.drops[i].model_dump() if i in run.drops else None], sort_keys=True)
        for i, r in enumerate(rows)
    ]
    decisions.write_text("\n".join(lines) + "\n")
    return {
        "executor": executor,
        "source": source,
        "rows": len(rows),
        "steps": steps,
        "startup_s": round(ready - started, 1),
        "steps_s": round(done - ready, 1),
        "rows_per_s": round(len(rows) / max(done - ready, 1e-9)),
        "dropped": len(run.drops),
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "largest_worker_peak_rss_mb": worker_peak // 2**20,
        "decisions_sha256": hashlib.sha256(decisions.read_bytes()).hexdigest()[:16],
    }


def compare(source: str, n: int, steps: list[str], tmp: Path) -> None:
    results = {}
    for executor in ("local", "ray"):
        out = tmp / f"{source}-{executor}.jsonl"
        cmd = [sys.executable, __file__, "--child", executor, source, str(n), ",".join(steps),
               str(out)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            raise SystemExit(f"{executor} run failed")
        results[executor] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results[executor]))
    a = (tmp / f"{source}-local.jsonl").read_text().splitlines()
    b = (tmp / f"{source}-ray.jsonl").read_text().splitlines()
    same = sum(x == y for x, y in zip(a, b, strict=True))
    print(f"{source}: {same}/{len(a)} rows with the same decision ({same / len(a):.2%})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        executor, source, n, steps, out = sys.argv[2:7]
        print(json.dumps(child(executor, source, int(n), steps.split(","), Path(out))))
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
