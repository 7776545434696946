"""`distillery view` at scale: a 50k-row run, written and opened in headless Chromium.

The run is the demo's generate + filter run (scripted `fake` teacher, real traces: every
LLM call's prompt and raw answer) copied until it has `--rows` rows, each copy with its own
ids (parents, near-duplicate survivors and the rest of the evidence remapped) and its own
instruction text, so the page carries as many rows, traces and links as a real run of that
size. Measured:

- writing the page (`write_view`: read the JSONL, build the index, compress the chunks) and
  its size;
- in Chromium (`/usr/bin/chromium`, fresh profile, driven by tests/helpers/chromium.py):
  time to first render (`performance.now()` when the list is first drawn, from navigation
  start), a search narrowing the list, and opening one row's detail (its chunk unpacked);
  `--repeats` page loads, median and worst.

    OMP_NUM_THREADS=1 .venv/bin/python bench/view.py [--rows 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillery.records import content_id  # noqa: E402
from distillery.view import write_view  # noqa: E402

from tests.helpers.chromium import CHROMIUM, Chromium  # noqa: E402

FILES = {
    "generate": ("generated.jsonl", "rejected.jsonl"),
    "filter": ("kept.jsonl", "dropped.jsonl"),
}


def demo_run(where: Path) -> Path:
    """generate (60 rows, 2 evolution rounds) + filter, as `distillery demo` runs them."""
    from distillery.demo import _filter, _generate

    teacher = {"spec": "fake", "cache_path": str(where / "teacher_cache.sqlite")}
    assert _generate(where, 60, teacher) == 0 and _filter(where, teacher) == 0
    return where


def _remap(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, dict):
        return {k: _remap(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_remap(v, ids) for v in value]
    return value


def scale_run(small: Path, out: Path, rows: int) -> int:
    """Copies of `small`'s rows until `rows`; returns the number written."""
    base = {
        (stage, name): [json.loads(line) for line in (small / stage / name).open()]
        for stage, names in FILES.items()
        for name in names
    }
    # the generate run's rows are the filter's input: a view shows each once
    per_copy = sum(len(v) for v in base.values()) - len(base[("generate", "generated.jsonl")])
    copies = -(-rows // per_copy)
    all_ids = {r["id"] for v in base.values() for r in v}
    written = 0
    handles = {}
    for stage, names in FILES.items():
        (out / stage).mkdir(parents=True, exist_ok=True)
        for name in names:
            handles[(stage, name)] = (out / stage / name).open("w")
    for c in range(copies):
        ids = {i: content_id(i, str(c)) for i in all_ids}
        for key, part in base.items():
            for row in part:
                row = _remap(row, ids)
                row["instruction"] = f"{row['instruction']} (variant {c})"
                row["messages"][0]["content"] = row["instruction"]
                handles[key].write(json.dumps(row) + "\n")
                written += key != ("generate", "generated.jsonl")
    for h in handles.values():
        h.close()
    summary = json.loads((small / "filter" / "summary.json").read_text())
    summary["input"] = str(out / "generate" / "generated.jsonl")
    (out / "filter" / "summary.json").write_text(json.dumps(summary))
    return written


def browse(page_path: Path, needle: str, repeats: int) -> dict[str, Any]:
    """Page loads: first render and the whole file parsed; then, on the last load, a search
    and one row's detail (its chunk unpacked)."""
    firsts, walls, parsed = [], [], []
    with Chromium(width=1400, height=900, timeout_s=120) as browser:
        for _ in range(repeats):
            page = browser.open("about:blank")
            started = time.monotonic()
            page.send("Page.navigate", {"url": page_path.as_uri()})
            first = page.wait_for("document.body && document.body.dataset.firstRenderMs", 120)
            walls.append(time.monotonic() - started)
            firsts.append(float(first) / 1000)
            page.wait_for("document.readyState === 'complete'", 120)
            parsed.append(time.monotonic() - started)
        count = page.evaluate("document.getElementById('count').textContent")
        started = time.monotonic()
        page.evaluate(f"location.hash = 'q={needle}'")
        page.wait_for(
            f"!document.getElementById('count').textContent.startsWith({count.split()[0]!r})"
        )
        search_s = time.monotonic() - started
        narrowed = page.evaluate("document.getElementById('count').textContent")
        started = time.monotonic()
        page.evaluate("document.querySelector('#rows .row:nth-child(3)').click()")
        page.wait_for("!!document.querySelector('#lineage')")
        detail_s = time.monotonic() - started
    return {
        "first_render_s": firsts,
        "navigate_to_render_wall_s": walls,
        "parsed_wall_s": parsed,
        "list": count,
        "search_s": search_s,
        "narrowed": narrowed,
        "detail_s": detail_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="write the runs and the page here instead of a temp dir")
    parser.add_argument("--small", help="an existing demo-layout run (generate/ + filter/) to copy")
    parser.add_argument("--page", help="only open this page (written by an earlier run)")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is absent: apt-get install -y --no-install-recommends chromium")
    if args.page:
        report(browse(Path(args.page), "variant 7", args.repeats))
        return
    if args.keep:
        measure(Path(args.keep), args)
    else:  # about a gigabyte of rows: removed afterwards
        with tempfile.TemporaryDirectory(prefix="view-bench-") as where:
            measure(Path(where), args)


def measure(where: Path, args: argparse.Namespace) -> None:
    """Write the big run and its page under `where`, then open it."""
    small = Path(args.small) if args.small else demo_run(where / "small")
    n = scale_run(small, where / "big", args.rows)
    started, cpu = time.monotonic(), time.process_time()
    page, shown = write_view(where / "big", where / "view.html")
    write_s, write_cpu = time.monotonic() - started, time.process_time() - cpu
    size_mb = page.stat().st_size / 1e6
    jsonl_mb = sum(p.stat().st_size for p in (where / "big").rglob("*.jsonl")) / 1e6
    print(f"rows: {shown:,} (written {n:,}); JSONL {jsonl_mb:.0f} MB -> page {size_mb:.1f} MB")
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"write_view: {write_s:.1f} s wall, {write_cpu:.1f} s CPU; peak RSS {rss_gb:.2f} GB")
    report(browse(page, "variant 7", args.repeats))


def report(result: dict[str, Any]) -> None:
    firsts = result["first_render_s"]
    print(
        f"first render: median {statistics.median(firsts):.2f} s, worst {max(firsts):.2f} s "
        f"(each: {', '.join(f'{x:.2f}' for x in firsts)}); navigate->render wall: "
        f"{', '.join(f'{x:.2f}' for x in result['navigate_to_render_wall_s'])} s; whole file "
        f"parsed: {', '.join(f'{x:.2f}' for x in result['parsed_wall_s'])} s"
    )
    print(
        f"search 'variant 7': {result['list']} -> {result['narrowed']} in {result['search_s']:.2f} s; "
        f"row detail: {result['detail_s']:.2f} s"
    )
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
