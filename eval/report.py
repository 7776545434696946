"""One eval report per run directory, and a side-by-side comparison of two runs.

`distillery eval report DIR` reads what the eval commands wrote into DIR (IFEval summary and
per-prompt results, win-rate summary, held-out loss), writes `DIR/summary.json` with every
number and `DIR/report.html` (static; inline SVG): IFEval accuracy per instruction type,
win/tie/loss bars, held-out loss. `distillery eval compare DIR_A DIR_B --output FILE` puts
two runs' numbers side by side.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.filter.report import CSS, bar_chart
from distillery.jsonl import atomic_write_text, iter_json_lines


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


def render(summary: dict[str, Any]) -> str:
    out = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>distillery eval report</title>"
        f"<style>{CSS}</style></head><body><h1>distillery eval report</h1>"
        f"<p class='meta'>run <code>{html.escape(summary['run'])}</code></p>"
    ]
    if "ifeval" in summary:
        s = summary["ifeval"]
        out.append(
            "<h2>IFEval</h2><table><tr><th></th><th class='num'>strict</th><th class='num'>loose</th></tr>"
        )
        for level in ("prompt", "instruction"):
            out.append(
                f"<tr><td>{level}-level accuracy</td><td class='num'>{s[f'{level}_level_strict']:.1%}</td>"
                f"<td class='num'>{s[f'{level}_level_loose']:.1%}</td></tr>"
            )
        out.append("</table>")
        per_type = s.get("per_type_strict") or {}
        if per_type:
            out.append(
                "<figure><figcaption>Strict accuracy per instruction type (%)</figcaption>"
                + bar_chart(
                    list(per_type),
                    [100 * v for v in per_type.values()],
                    width=760,
                    title="per type",
                )
                + "</figure>"
            )
    if "winrate" in summary:
        w = summary["winrate"]
        out.append(
            f"<h2>Judge win rate</h2><p class='meta'>judge <code>{html.escape(str(w['judge']))}</code>; "
            f"win rate {w['win_rate']:.1%}; length-controlled "
            f"{'n/a' if w['length_controlled_win_rate'] is None else format(w['length_controlled_win_rate'], '.1%')}; "
            f"flip rate {w['flip_rate']:.1%}; parse failures {w['parse_failure_rate']:.1%}</p>"
        )
        out.append(
            bar_chart(
                ["student wins", "ties", "baseline wins"],
                [w["student_wins"], w["ties"], w["baseline_wins"]],
                color="#59a14f",
                title="wins",
            )
        )
    if "heldout" in summary:
        h = summary["heldout"]
        out.append(
            f"<h2>Held-out loss</h2><p>loss {h['loss']:.4f}, perplexity {h['perplexity']:.2f} over "
            f"{h['supervised_tokens']:,} supervised tokens</p>"
        )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run: Path) -> dict[str, Any]:
    summary = collect(run)
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(run / "report.html", render(summary))
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
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td class='num'>{a.get(k, float('nan')):.4g}</td>"
        f"<td class='num'>{b.get(k, float('nan')):.4g}</td>"
        f"<td class='num'>{(b[k] - a[k]) if k in a and k in b else float('nan'):+.4g}</td></tr>"
        for k in keys
    )
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>distillery eval comparison"
        f"</title><style>{CSS}</style></head><body><h1>Eval comparison</h1><table><tr><th>metric</th>"
        f"<th>{html.escape(str(run_a))}</th><th>{html.escape(str(run_b))}</th><th>B - A</th></tr>{rows}"
        f"</table></body></html>"
    )
    atomic_write_text(output, page)
    return {"a": a, "b": b}
