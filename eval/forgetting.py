"""The forgetting table: a student's lm-evaluation-harness scores beside its base model's.

Reads two `harness_SIDE.json` results (`eval/harness.py`) and writes, per top-level task or
group and metric: n, each side's score with its 95% interval, and student - base. Intervals
come from the item scores (`distillery.stats`):

- a metric whose items score 0 or 1 (accuracy, exact match, IFEval's prompt level): Wilson
  over the items; IFEval's instruction level: Wilson over the instructions (every verdict
  counted as one, as lm_eval's own instruction-level accuracy does);
- other per-item metrics: the normal interval of their mean;
- a metric lm_eval aggregates otherwise (corpus BLEU, an unweighted mean of subtasks): lm_eval's
  own standard error, value +- 1.96 stderr;
- student - base over the items both scored, paired item by item (0/1 scores: Agresti-Min;
  others: the normal interval of the per-item differences); a forgetting of 2 points with an
  interval of +-3 is not one yet.
"""

from __future__ import annotations

import math
from typing import Any

from distillery import stats

SKIP = {"alias", "name", "sample_len", " "}


def top_level(result: dict[str, Any]) -> list[str]:
    """Tasks and groups asked for, not the subtasks of a group (MMLU's 57 stay in the JSON)."""
    inside = {t for subtasks in result["groups"].values() for t in subtasks}
    return [t for t in result["results"] if t not in inside]


def leaves(task: str, groups: dict[str, list[str]]) -> list[str]:
    """The tasks under a group, through nested groups (a task is its own leaf)."""
    subtasks = groups.get(task) or []
    if not subtasks:
        return [task]
    return [leaf for sub in subtasks for leaf in leaves(sub, groups)]


def item_scores(result: dict[str, Any], task: str, metric: str) -> dict[str, Any]:
    """(task, doc) -> score over every leaf task of `task`."""
    out: dict[str, Any] = {}
    for leaf in leaves(task, result["groups"]):
        for doc, value in (result["scores"].get(leaf, {}).get(metric) or {}).items():
            out[f"{leaf}/{doc}"] = value
    return out


def _flat(values: Any) -> list[float]:
    return [x for v in values for x in (v if isinstance(v, list) else [v])]


def interval(result: dict[str, Any], task: str, metric: str) -> stats.Interval:
    """The score lm_eval reports for `task`/`metric`, with n and a 95% interval."""
    numbers = result["results"][task]
    value = float(numbers[metric])
    flat = _flat(item_scores(result, task, metric).values())
    if flat and math.isclose(math.fsum(flat) / len(flat), value, abs_tol=1e-6):
        if all(v in (0.0, 1.0) for v in flat):
            return stats.proportion(sum(flat), len(flat))
        return stats.mean(flat)
    name, _, filt = metric.partition(",")
    stderr = numbers.get(f"{name}_stderr,{filt}")
    n = len(flat) or int(numbers.get("sample_len") or 0)
    if isinstance(stderr, (int, float)) and math.isfinite(stderr):
        half = stats.Z95 * float(stderr)
        return stats.Interval(value, n, value - half, value + half, "lm_eval stderr, normal")
    return stats.Interval(value, n, None, None, "no interval (no item scores or stderr)")


def difference(
    student: dict[str, Any], base: dict[str, Any], task: str, metric: str
) -> stats.Interval:
    """student - base, paired over the items (instructions) both sides scored."""
    s, b = item_scores(student, task, metric), item_scores(base, task, metric)
    pairs = [(s[k], b[k]) for k in s if k in b]
    a: list[float] = []
    c: list[float] = []
    for x, y in pairs:
        xs, ys = _flat([x]), _flat([y])
        if len(xs) == len(ys):
            a.extend(xs)
            c.extend(ys)
    value = float(student["results"][task][metric]) - float(base["results"][task][metric])
    if a and math.isclose(math.fsum(a) / len(a) - math.fsum(c) / len(c), value, abs_tol=1e-6):
        if all(v in (0.0, 1.0) for v in (*a, *c)):
            return stats.paired_proportions(a, c)
        return stats.paired_difference(a, c)
    return stats.Interval(value, len(a), None, None, "no paired items")


def _metrics(numbers: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in numbers.items()
        if k not in SKIP
        and "_stderr," not in k
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    ]


def table(student: dict[str, Any], base: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per top-level task and metric: n, each side's interval, the difference."""
    rows = []
    for task in top_level(student):
        for metric in _metrics(student["results"][task]):
            name = metric.partition(",")[0]
            row: dict[str, Any] = {
                "task": task,
                "metric": metric,
                "higher_is_better": (student["higher_is_better"].get(task) or {}).get(name),
                "student": interval(student, task, metric).as_dict(),
                "base": None,
                "difference": None,
            }
            if base and metric in (base["results"].get(task) or {}):
                row["base"] = interval(base, task, metric).as_dict()
                row["difference"] = difference(student, base, task, metric).as_dict()
            rows.append(row)
    return rows


def side_by_side(
    student: dict[str, Any], base: dict[str, Any] | None
) -> dict[str, list[dict[str, str]]]:
    """Per task or group asked for, the kept examples with both sides' answers to the same
    prompt (a group shows its first subtask's: MMLU gets one table, not 57)."""
    out: dict[str, list[dict[str, str]]] = {}
    for task in top_level(student):
        leaf = next((t for t in leaves(task, student["groups"]) if t in student["examples"]), None)
        if leaf is None:
            continue
        theirs = {e["doc_id"]: e for e in (base or {}).get("examples", {}).get(leaf, [])}
        out[task if leaf == task else f"{task} ({leaf})"] = [
            {
                "prompt": e["prompt"],
                "target": e["target"],
                "student": e["answer"],
                "base": theirs[e["doc_id"]]["answer"] if e["doc_id"] in theirs else "",
            }
            for e in student["examples"][leaf]
        ]
    return out


def same_model(student: str, base: str) -> bool:
    """Whether --base names the student itself (by path or by content, as training identifies
    models): its forgetting table would be zero by construction."""
    from distillery.model_identity import model_identity

    return student == base or model_identity(student) == model_identity(base)


def summarise(student: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    """`harness_summary.json`: the models, the table and the examples."""
    return {
        "student": student["model"],
        "base": base["model"] if base else None,
        "same_model": base is not None and same_model(student["model"], base["model"]),
        "lm_eval_version": student.get("lm_eval_version"),
        "n-shot": student.get("n-shot"),
        "rows": table(student, base),
        "examples": side_by_side(student, base),
    }
