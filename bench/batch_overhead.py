"""Client overhead of `teacher.mode: batch` against the online path, in the same run.

N chat requests through the engine's full path (cache, journal, trace per item) to the
loopback server (`tests/helpers/batchserver.py`, its own process, batches end at the first
poll): online (`transport: direct`, concurrency 128), then batch mode over the OpenAI Batch
API and over Anthropic's Message Batches (both through their SDKs). Prints wall time,
client CPU seconds per 10k items (this process: the server is another), the bytes uploaded
(from the batch ledger) and the batch/online CPU ratio; checks every item answered once.

    .venv/bin/python bench/batch_overhead.py [--n 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillery.teacher.batch_ledger import Ledger  # noqa: E402
from distillery.teacher.config import TeacherConfig  # noqa: E402
from distillery.teacher.engine import Teacher  # noqa: E402
from distillery.teacher.jobs import JobItem, run_job  # noqa: E402
from distillery.teacher.types import ChatRequest  # noqa: E402


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.batchserver", "--polls-to-end", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip().rsplit(" ", 1)[-1]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def items(n: int, tag: str) -> list[JobItem]:
    """Requests about the size of a Self-Instruct prompt (~600 characters)."""
    filler = "Write a careful, step-by-step answer to the following task. " * 10
    return [
        JobItem(f"q{i}", ChatRequest(messages=[{"role": "user", "content": f"{filler}{tag} {i}"}]))
        for i in range(n)
    ]


async def run(config: TeacherConfig, n: int, work: Path, tag: str) -> tuple[float, float]:
    teacher = await Teacher(config).start()
    try:
        start_wall, start_cpu = time.perf_counter(), cpu_s()
        result = await run_job(teacher, items(n, tag), work / f"{tag}.jsonl", quiet=True)
        wall, cpu = time.perf_counter() - start_wall, cpu_s() - start_cpu
    finally:
        await teacher.aclose()
    answers = [result.rows[f"q{i}"].response or "" for i in range(n)]
    assert len(result.rows) == n and all(a.endswith(f"{tag} {i}") for i, a in enumerate(answers))
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            common = {"spec": "openai:mock-model", "cache_path": str(work / "cache.sqlite")}
            batch = {"collect_s": 0.05, "poll_initial_s": 0.05, "poll_max_s": 0.1,
                     "progress_every_s": 0}  # fmt: skip
            runs = {
                "online, transport direct, concurrency 128": TeacherConfig(
                    **common, base_urls=[f"{url}/v1"], concurrency=128
                ),
                "batch, OpenAI Batch API (files + batches, SDK)": TeacherConfig(
                    **common, base_urls=[f"{url}/v1"], mode="batch",
                    batch={**batch, "ledger_dir": str(work / "ledger-openai")},
                ),
                "batch, Anthropic Message Batches (SDK)": TeacherConfig(
                    **{**common, "spec": "anthropic:mock-model"}, base_urls=[url], mode="batch",
                    batch={**batch, "ledger_dir": str(work / "ledger-anthropic")},
                ),
            }  # fmt: skip
            print(f"{args.n} items; client CPU of this process (the server is another)")
            print("| run | wall | client CPU per 10k items | bytes uploaded | CPU vs online |")
            print("|---|---|---|---|---|")
            online_cpu = None
            for k, (name, config) in enumerate(runs.items()):
                wall, cpu = asyncio.run(run(config, args.n, work, f"t{k}"))
                per_10k = cpu * 10_000 / args.n
                online_cpu = online_cpu or per_10k
                ledger = Ledger(config.batch.ledger_dir) if config.batch.ledger_dir else None
                records = ledger.load() if ledger else []
                sent = sum(r.bytes for r in records)
                shown = f"{sent / 1e6:.2f} MB in {len(records)} batches" if records else "-"
                print(
                    f"| {name} | {wall:.2f} s | {per_10k:.2f} s | {shown} | "
                    f"{per_10k / online_cpu:.2f}x |"
                )
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
