"""Teacher-engine throughput against the loopback server.

N requests with `--latency` seconds of server latency at concurrency C, the server in its
own process beside the client. Prints wall time over the ideal ceil(N/C) * latency, for
a bare `AsyncOpenAI` + semaphore loop (the baseline, measured in the same run) and for the
engine's full path (cache, limits, retries, journal); requests/s; client CPU seconds per
1,000 requests; then the engine again with injected faults (every item must complete,
exactly once).

    .venv/bin/python bench/teacher_engine.py [--n 5000] [--concurrency 128] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillery.teacher.config import TeacherConfig  # noqa: E402
from distillery.teacher.engine import Teacher  # noqa: E402
from distillery.teacher.jobs import JobItem, read_journal, run_job  # noqa: E402
from distillery.teacher.types import ChatRequest  # noqa: E402


def start_server(latency: float, fault_rate: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.helpers.mockserver",
            "--latency",
            str(latency),
            "--fault-rate",
            str(fault_rate),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line.rsplit(" ", 1)[-1]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_stats") as resp:
        return json.load(resp)


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Benchmark request number {i}: say something."}]


async def baseline(url: str, n: int, concurrency: int) -> float:
    client = openai.AsyncOpenAI(api_key="x", base_url=f"{url}/v1", max_retries=0, timeout=60)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with sem:
            r = await client.chat.completions.create(
                model="mock-model", messages=messages(i), max_tokens=64
            )  # type: ignore[arg-type]
            return r.choices[0].message.content or ""

    start = time.perf_counter()
    out = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    assert len(out) == n
    await client.close()
    return wall


async def engine(
    url: str, n: int, concurrency: int, workdir: Path, transport: str = "direct"
) -> tuple[float, dict]:
    config = TeacherConfig(
        spec="openai:mock-model",
        base_urls=[f"{url}/v1"],
        concurrency=concurrency,
        max_tokens=64,
        transport=transport,
        cache_path=str(workdir / "cache.sqlite"),
        max_retries=20,
        backoff_initial_s=0.05,
        backoff_max_s=1.0,
        timeout_s=30,
    )
    items = [JobItem(f"i{i}", ChatRequest(messages(i))) for i in range(n)]
    teacher = await Teacher(config).start()
    start = time.perf_counter()
    result = await run_job(teacher, items, workdir / "journal.jsonl", quiet=True)
    wall = time.perf_counter() - start
    await teacher.aclose()
    rows = read_journal(workdir / "journal.jsonl")
    ok = sum(r.status == "ok" for r in rows.values())
    right = sum(
        r.response == f"echo: {messages(int(r.id[1:]))[0]['content']}" for r in rows.values()
    )
    lines = (workdir / "journal.jsonl").read_text().count("\n")
    return wall, {
        "ok": ok,
        "right_answers": right,
        "journal_lines": lines,
        "failed": len(result.failed),
        "retries": teacher.stats.retries,
    }


def report(name: str, wall: float, cpu: float, n: int, ideal: float) -> None:
    print(
        f"{name:<28} wall {wall:6.2f}s  ratio {wall / ideal:5.3f}  {n / wall:7.1f} req/s  "
        f"client CPU {cpu / n * 1000:5.2f}s/1k req"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    args = parser.parse_args()
    n, c = args.n, args.concurrency
    ideal = math.ceil(n / c) * args.latency
    print(f"N={n} concurrency={c} latency={args.latency}s ideal={ideal:.2f}s")

    proc, url = start_server(args.latency)
    try:
        cpu0 = time.process_time()
        wall = asyncio.run(baseline(url, n, c))
        report("baseline AsyncOpenAI+sem", wall, time.process_time() - cpu0, n, ideal)
        base_ratio = wall / ideal
        for transport in ("sdk", "direct"):
            with tempfile.TemporaryDirectory() as tmp:
                cpu0 = time.process_time()
                wall, info = asyncio.run(engine(url, n, c, Path(tmp), transport))
                report(f"engine, transport={transport}", wall, time.process_time() - cpu0, n, ideal)
                print(f"{'':<28} {info}")
            print(f"{'':<28} engine / baseline wall: {wall / ideal / base_ratio:.3f}")
        print(
            f"server CPU over the three runs: {process_cpu(proc.pid) / (3 * n) * 1000:.2f}s/1k req"
        )
    finally:
        proc.terminate()

    proc, url = start_server(args.latency, args.fault_rate)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cpu0 = time.process_time()
            wall, info = asyncio.run(engine(url, n, c, Path(tmp)))
            report(
                f"engine, {args.fault_rate:.0%} faults", wall, time.process_time() - cpu0, n, ideal
            )
            faults = server_stats(url)["faults"]
            print(f"{'':<28} {info} injected={faults}")
            assert info["ok"] == n and info["right_answers"] == n and info["journal_lines"] == n, (
                info
            )
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
