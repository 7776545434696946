"""One eval report per run directory, and a side-by-side comparison of two runs.

`distillery eval report DIR` reads what the eval commands wrote into DIR (IFEval summary and
per-prompt results, win-rate summary, held-out loss), writes `DIR/summary.json` with every
number and `DIR/report.html` (static; inline SVG): IFEval accuracy per instruction type,
win/tie/loss bars, held-out loss. `distillery eval compare DIR_A DIR_B --output FILE` puts
two runs' numbers side by side.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.jsonl import atomic_write_text, iter_json_lines
from distillery.reports import bar_chart, render


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _find(run: Path, name: str) -> Path | None:
    hits = sorted(run.rglob(name))
    return hits[0] if hits else None


def per_type_accuracy(results_path: Path) -> dict[str, float]:
    """Instruction-level accuracy per instruction type, from eval_results_*.jsonl."""
    hit: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for _, row in iter_json_lines(results_path):
        for instruction_id, ok in zip(
            row["instruction_id_list"], row["follow_instruction_list"], strict=True
        ):
            total[instruction_id] += 1
            hit[instruction_id] += bool(ok)
    return {k: hit[k] / total[k] for k in sorted(total)}


def collect(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    summary: dict[str, Any] = {"run": str(run)}
    ifeval = _find(run, "ifeval_summary.json")
    if ifeval:
        summary["ifeval"] = _load(ifeval)
        strict = ifeval.parent / "eval_results_strict.jsonl"
        if strict.is_file():
            summary["ifeval"]["per_type_strict"] = per_type_accuracy(strict)
    for key, name in (("winrate", "winrate_summary.json"), ("heldout", "heldout_loss.json")):
        found = _find(run, name)
        if found:
            summary[key] = _load(found)
    if len(summary) == 1:
        raise UserError(
            f"{run}: no eval results (run `distillery eval ifeval|winrate|loss --output-dir {run}`)"
        )
    return summary


def render_report(summary: dict[str, Any]) -> str:
    """report.html from `summary.json`: IFEval table and per-type chart, win/tie/loss, loss."""
    ifeval, winrate = summary.get("ifeval"), summary.get("winrate")
    per_type = (ifeval or {}).get("per_type_strict") or {}
    per_type_chart = (
        bar_chart(list(per_type), [100 * v for v in per_type.values()], width=760, title="per type")
        if per_type
        else None
    )
    wins_chart = (
        bar_chart(
            ["student wins", "ties", "baseline wins"],
            [winrate["student_wins"], winrate["ties"], winrate["baseline_wins"]],
            color="#59a14f",
            title="wins",
        )
        if winrate
        else None
    )
    return render(
        "eval_report.html.jinja",
        run=summary["run"],
        ifeval=ifeval,
        per_type_chart=per_type_chart,
        winrate=winrate,
        wins_chart=wins_chart,
        heldout=summary.get("heldout"),
    )


def write_report(run: Path) -> dict[str, Any]:
    summary = collect(run)
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(run / "report.html", render_report(summary))
    return summary


def _flat(summary: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for section in ("ifeval", "winrate", "heldout"):
        for key, value in (summary.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{section}.{key}"] = float(value)
    return out


def compare(run_a: Path, run_b: Path, output: Path) -> dict[str, Any]:
    a, b = _flat(collect(run_a)), _flat(collect(run_b))
    keys = sorted(set(a) | set(b))
    nan = float("nan")
    rows = [
        (k, a.get(k, nan), b.get(k, nan), b[k] - a[k] if k in a and k in b else nan) for k in keys
    ]
    page = render("eval_compare.html.jinja", run_a=str(run_a), run_b=str(run_b), rows=rows)
    atomic_write_text(output, page)
    return {"a": a, "b": b}
