"""One eval report per run directory, and a side-by-side comparison of two runs.

`distillery eval report DIR` reads what the eval commands wrote into DIR (IFEval summaries
and per-prompt results, win-rate summary and pairs, held-out loss, lm-evaluation-harness
results), writes `DIR/summary.json` with every number and `DIR/report.html` (static; inline
SVG). Every rate carries n and a 95% interval (`distillery.stats`); IFEval runs of several
models (the student's and the base's, each its own `eval ifeval --output-dir` inside DIR)
stand side by side, as do the harness scores of the student and its base; a few sample
answers are shown; `is_demo` (and the page's banner) says when any input is demo data
(`distillery.eval.demo_data`). `distillery eval compare DIR_A DIR_B --output FILE` puts two runs'
numbers side by side.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from distillery.errors import UserError
from distillery.eval.demo_data import demo_reasons
from distillery.jsonl import atomic_write_text, iter_json_lines, read_json_object, read_text_utf8
from distillery.reports import bar_chart, render

SAMPLES = 3  # sample answers shown per section


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(read_text_utf8(path))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed YAML: {str(exc).splitlines()[0]}") from None
    return data if isinstance(data, dict) else {}


def _load(path: Path) -> dict[str, Any] | None:
    return read_json_object(path) if path.is_file() else None


def _find(run: Path, name: str) -> Path | None:
    hits = sorted(run.rglob(name))
    return hits[0] if hits else None


def per_type_counts(results_path: Path) -> dict[str, tuple[int, int]]:
    """Instruction type -> (instructions followed, instructions), from eval_results_*.jsonl."""
    hit: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for _, row in iter_json_lines(results_path):
        for instruction_id, ok in zip(
            row["instruction_id_list"], row["follow_instruction_list"], strict=True
        ):
            total[instruction_id] += 1
            hit[instruction_id] += bool(ok)
    return {k: (hit[k], total[k]) for k in sorted(total)}


def per_type_accuracy(results_path: Path) -> dict[str, float]:
    """Instruction-level accuracy per instruction type, from eval_results_*.jsonl."""
    return {k: hit / n for k, (hit, n) in per_type_counts(results_path).items()}


def _ifeval_model(folder: Path) -> str:
    """The model an IFEval run scored (its config's student.spec), else its folder name."""
    config = folder / "ifeval_config.yaml"
    if config.is_file():
        spec = _yaml(config).get("student", {}).get("spec")
        if spec:
            return str(spec)
    return folder.name


def _ifeval(summary_path: Path) -> dict[str, Any]:
    """One IFEval run: its summary with n + intervals, per-type accuracy and sample answers."""
    from distillery import stats
    from distillery.eval.ifeval import intervals

    folder = summary_path.parent
    found = read_json_object(summary_path)
    found["model"] = _ifeval_model(folder)
    found["folder"] = str(folder)
    results = {m: folder / f"eval_results_{m}.jsonl" for m in ("strict", "loose")}
    if results["strict"].is_file():
        counts = per_type_counts(results["strict"])
        found["per_type_strict"] = {k: hit / n for k, (hit, n) in counts.items()}
        found["per_type_strict_n"] = {k: n for k, (_, n) in counts.items()}
    if all(p.is_file() for p in results.values()):
        rows = {m: [r for _, r in iter_json_lines(p)] for m, p in results.items()}
        found["intervals"] = intervals(rows)
    elif "intervals" not in found:  # only the summary: n and the counts behind each rate
        found["intervals"] = {
            f"{level}_level_{mode}": stats.proportion(
                round(found[f"{level}_level_{mode}"] * found[f"{level}s"]), found[f"{level}s"]
            ).as_dict()
            for level in ("prompt", "instruction")
            for mode in ("strict", "loose")
        }
    responses = folder / "responses.jsonl"
    if responses.is_file():
        found["samples"] = [r for _, r in iter_json_lines(responses)][:SAMPLES]
    return found


def _ordered_ifeval(run: Path, student: str | None) -> list[dict[str, Any]]:
    """Every IFEval run under `run`, the student's first."""
    runs = [_ifeval(p) for p in sorted(run.rglob("ifeval_summary.json"))]
    return sorted(runs, key=lambda r: r["model"] != student)


def _winrate(path: Path) -> dict[str, Any]:
    from distillery import stats

    found = read_json_object(path)
    if "intervals" not in found:  # written before intervals were: from the counts
        judged, pairs = found["judged"], found["pairs"]
        found["intervals"] = {
            "win_rate": stats.win_rate(
                found["student_wins"], found["ties"], found["baseline_wins"]
            ).as_dict(),
            "flip_rate": stats.proportion(
                round((found["flip_rate"] or 0) * judged), judged
            ).as_dict(),
            "parse_failure_rate": stats.proportion(
                round((found["parse_failure_rate"] or 0) * pairs), pairs
            ).as_dict(),
        }
    pairs = path.parent / "winrate_pairs.jsonl"
    if pairs.is_file():
        rows = [r for _, r in iter_json_lines(pairs) if "instruction" in r]
        found["samples"] = rows[:SAMPLES]
    return found


def _heldout(run: Path) -> list[dict[str, Any]]:
    """Every `eval loss` result under `run` (e.g. the student's in DIR, its base's in
    DIR/base), the one directly in `run` first; each labelled with its folder."""
    found = sorted(run.rglob("heldout_loss.json"), key=lambda p: (p.parent != run, str(p)))
    return [{**read_json_object(p), "folder": str(p.parent.relative_to(run))} for p in found]


def _student_spec(run: Path) -> str | None:
    config = _find(run, "winrate_config.yaml")
    if config is None:
        return None
    return _yaml(config).get("student", {}).get("spec")


def _training_mix(student: str | None) -> dict[str, Any] | None:
    """The data mix the student was trained on, from its training run's metrics.json (beside
    or above the model folder, as `distillery train` writes OUT/model, OUT/merged): rows and
    supervised tokens per source and the held-out loss of each."""
    path = Path(student.removeprefix("hf:")) if student else None
    if path is None or not path.is_dir():
        return None
    for folder in (path, path.parent):
        if (folder / "metrics.json").is_file():
            mix = read_json_object(folder / "metrics.json").get("data_mix")
            return {"metrics": str(folder / "metrics.json"), "sources": mix} if mix else None
    return None


def collect(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    summary: dict[str, Any] = {"run": str(run)}
    ifeval = _ordered_ifeval(run, _student_spec(run))
    if ifeval:
        summary["ifeval"] = ifeval[0]
        summary["ifeval_others"] = ifeval[1:]
    found = _find(run, "winrate_summary.json")
    if found:
        summary["winrate"] = _winrate(found)
    heldout = _heldout(run)
    if heldout:
        summary["heldout"], summary["heldout_others"] = heldout[0], heldout[1:]
    harness = _find(run, "harness_summary.json")
    if harness:
        summary["harness"] = _load(harness)
    if len(summary) == 1:
        raise UserError(
            f"{run}: no eval results (run `distillery eval "
            f"ifeval|winrate|harness|loss --output-dir {run}`)"
        )
    student = _student_spec(run) or (ifeval[0]["model"] if ifeval else None)
    mix = _training_mix(student or (summary.get("harness") or {}).get("student"))
    if mix:
        summary["training_mix"] = mix
    reasons = demo_reasons(run)
    summary["is_demo"] = bool(reasons)
    summary["demo_reasons"] = reasons
    return summary


def render_report(summary: dict[str, Any]) -> str:
    """report.html from `summary.json`: IFEval side by side with per-type chart, win/tie/loss,
    the harness's forgetting table, held-out loss, sample answers, the demo banner."""
    ifeval, winrate = summary.get("ifeval"), summary.get("winrate")
    per_type = (ifeval or {}).get("per_type_strict") or {}
    sizes = (ifeval or {}).get("per_type_strict_n") or {}  # each bar's n is in its label
    per_type_chart = (
        bar_chart(
            [f"{k} (n={sizes[k]})" if k in sizes else k for k in per_type],
            [100 * v for v in per_type.values()],
            width=760,
            value_fmt="{:.0f}%",
            title="per type",
        )
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
        ifeval_runs=[ifeval, *summary.get("ifeval_others", [])] if ifeval else [],
        per_type_chart=per_type_chart,
        winrate=winrate,
        wins_chart=wins_chart,
        heldout=[summary["heldout"], *summary["heldout_others"]] if "heldout" in summary else [],
        harness=summary.get("harness"),
        training_mix=summary.get("training_mix"),
        is_demo=summary.get("is_demo", False),
        demo_reasons=summary.get("demo_reasons", []),
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
    for row in (summary.get("harness") or {}).get("rows", []):
        out[f"harness.{row['task']}.{row['metric']}"] = float(row["student"]["value"])
    return out


def _intervals(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The flat keys of `_flat` that are rates -> their n and 95% interval."""
    out = {}
    for section in ("ifeval", "winrate"):
        for key, interval in ((summary.get(section) or {}).get("intervals") or {}).items():
            out[f"{section}.{key}"] = interval
    for row in (summary.get("harness") or {}).get("rows", []):
        out[f"harness.{row['task']}.{row['metric']}"] = row["student"]
    return out


def compare(run_a: Path, run_b: Path, output: Path) -> dict[str, Any]:
    """Two runs' numbers side by side; a rate shows its n and 95% interval per run."""
    sum_a, sum_b = collect(run_a), collect(run_b)
    a, b = _flat(sum_a), _flat(sum_b)
    ci_a, ci_b = _intervals(sum_a), _intervals(sum_b)
    keys = sorted(set(a) | set(b))
    nan = float("nan")
    rows = [
        (k, a.get(k, nan), b.get(k, nan), b[k] - a[k] if k in a and k in b else nan) for k in keys
    ]
    page = render(
        "eval_compare.html.jinja",
        run_a=str(run_a),
        run_b=str(run_b),
        rows=rows,
        ci_a=ci_a,
        ci_b=ci_b,
        is_demo=sum_a["is_demo"] or sum_b["is_demo"],
    )
    atomic_write_text(output, page)
    return {"a": a, "b": b}
