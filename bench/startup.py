"""Start-up: wall time of `distillery complete` on a few requests, process start to exit.

Each run is a fresh process with a fresh output and no cache, on `--n` requests (default 10):
the scripted `fake` teacher, and `openai:` / `anthropic:` teachers against the loopback
server (`tests/helpers/mockserver.py`, its own process), on their default transport
(`direct`: aiohttp, no SDK import) and, for Anthropic, on `transport: sdk` too. The baseline, measured in the
same run and alternated with it, is the same command after `import openai, anthropic` -
the old import path, where the backends module imported both SDKs whatever the teacher.
Prints the median wall time of `--repeats` runs per case, its ratio to the baseline, and the
median CPU seconds of the process (less sensitive than wall time to a shared machine's load),
and the load average before and after.

    .venv/bin/python bench/startup.py [--n 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = "import sys; from distillery.cli import main; sys.exit(main(sys.argv[1:]))"
EAGER = "import openai, anthropic; " + CLI  # the old import path


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.mockserver"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip().rsplit(" ", 1)[-1]


def write_requests(path: Path, n: int) -> Path:
    with path.open("w") as handle:
        for i in range(n):
            row = {"id": f"q{i}", "messages": [{"role": "user", "content": f"question {i}"}]}
            handle.write(json.dumps(row) + "\n")
    return path


def distillery_exe() -> list[str]:
    """The installed `distillery` script beside this interpreter (what users run)."""
    exe = Path(sys.executable).parent / "distillery"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", CLI]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(
    prefix: list[str], teacher: list[str], inp: Path, out: Path, n: int
) -> tuple[float, float]:
    """One `complete` run in a fresh process: (wall s, CPU s). Fails loudly on a wrong result."""
    cmd = [*prefix, "complete", "--input", str(inp), "--output", str(out), "--quiet"]
    cmd += [*teacher, "teacher.cache=false"]  # --teacher SPEC [key=value...]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    rows = out.read_text().count("\n") if out.exists() else 0
    if proc.returncode != 0 or rows != n:
        raise SystemExit(f"{' '.join(cmd)} -> exit {proc.returncode}, {rows} rows\n{proc.stderr}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    proc, url = start_server()
    cases = {
        "fake": ["--teacher", "fake"],
        "openai (loopback)": ["--teacher", "openai:mock-model", f"teacher.base_urls=[{url}/v1]"],
        "anthropic (loopback)": ["--teacher", "anthropic:mock-model", f"teacher.base_urls=[{url}]"],
        "anthropic (sdk)": [
            "--teacher",
            "anthropic:mock-model",
            f"teacher.base_urls=[{url}]",
            "teacher.transport=sdk",
        ],
    }
    variants = {"distillery complete": distillery_exe(), "baseline": [sys.executable, "-c", EAGER]}
    load_before = os.getloadavg()
    walls: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            inp = write_requests(Path(tmp) / "in.jsonl", args.n)
            for _ in range(args.repeats):
                for case, teacher in cases.items():
                    for variant, prefix in variants.items():  # alternated: same conditions
                        out = Path(tmp) / f"run{sum(map(len, walls.values()))}.jsonl"
                        wall, cpu = timed_run(prefix, teacher, inp, out, args.n)
                        walls.setdefault((case, variant), []).append(wall)
                        cpus.setdefault((case, variant), []).append(cpu)
    finally:
        proc.terminate()
        proc.wait()
    loads = " -> ".join("/".join(f"{x:.2f}" for x in la) for la in (load_before, os.getloadavg()))
    print(f"`distillery complete` on {args.n} requests, median of {args.repeats} runs")
    print(f"load average (1/5/15 min) before -> after: {loads}")
    print(f"{'teacher':<22} {'wall':>7} {'baseline':>9} {'ratio':>6} {'CPU':>7} {'baseline':>9}")
    for case in cases:
        now, base = (statistics.median(walls[(case, v)]) for v in variants)
        cpu, cpu_base = (statistics.median(cpus[(case, v)]) for v in variants)
        print(f"{case:<22} {now:6.2f}s {base:8.2f}s {now / base:6.2f} {cpu:6.2f}s {cpu_base:8.2f}s")


if __name__ == "__main__":
    main()
