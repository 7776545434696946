"""`runs/NAME/index.html`: each stage's headline numbers and links, read back from the files
the stages wrote (nothing is recomputed from rows), laid out by `demo_index.html.jinja`.

Reads, each when present: `generate/manifest.json` and `passes/*/manifest.json` (rows,
rejections, requests, tokens, dollars: summed, with each run's rows), `filter/summary.json` (rows in and kept, drop rate, top rules, judge scores),
`train/metrics.json` (steps, first and last logged training loss, held-out loss, tokens/s)
and `eval/summary.json` (IFEval accuracy, win rate, held-out perplexity, harness scores).
Every rate is shown with its n and 95% interval (`distillery.stats`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distillery.jsonl import atomic_write_text
from distillery.reports import render
from distillery.stats import mean, proportion

LINKS = [
    ("generate", "manifest (counts, rejections, tokens)", "generate/manifest.json"),
    ("generate", "rows with lineage", "generate/generated.jsonl"),
    ("generate", "rejected candidates with evidence", "generate/rejected.jsonl"),
    ("filter", "report", "filter/report.html"),
    ("filter", "summary", "filter/summary.json"),
    ("filter", "row explorer (search, lineage, every LLM call)", "view.html"),
    ("train", "report", "train/report.html"),
    ("train", "metrics", "train/metrics.json"),
    ("eval", "report", "eval/report.html"),
    ("eval", "summary", "eval/summary.json"),
]


STAGE_FILES = [
    "generate/manifest.json",
    "filter/summary.json",
    "train/metrics.json",
    "eval/summary.json",
]


def _load(path: Path) -> dict[str, Any] | None:
    """A stage's JSON; None when absent or unreadable (the index shows what exists)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _generate(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The generate runs' manifests summed (the demo's main pass and its Magpie pass feed one
    filter: its `rows in` is their total), with each run's rows and target."""
    total = {
        key: sum(m.get(key, 0) for _, m in runs)
        for key in ("rows", "rejected", "requests_sent", "input_tokens", "output_tokens")
    }
    origins: dict[str, int] = {}
    for _, m in runs:
        for origin, n in (m.get("rows_by_origin") or {}).items():
            origins[origin] = origins.get(origin, 0) + n
    targets = [m.get("target") for _, m in runs]
    return {
        "rows": total["rows"],
        "target": sum(targets) if all(targets) else None,
        "rejected": total["rejected"],
        "rejected_rate": proportion(total["rejected"], total["rows"] + total["rejected"]).as_dict(),
        "origins": sorted(origins.items(), key=lambda kv: -kv[1]),
        "requests": total["requests_sent"],
        "tokens": total["input_tokens"] + total["output_tokens"],
        "usd": sum(m.get("spent_usd", 0.0) for _, m in runs),
        "runs": [(name, m.get("rows", 0), m.get("target")) for name, m in runs],
    }


def _filter(s: dict[str, Any]) -> dict[str, Any]:
    judge = s.get("judge") or {}
    scores = judge.get("scores") or []
    return {
        "rows_in": s.get("rows_in", 0),
        "kept": s.get("rows_kept", 0),
        "drop_rate": proportion(s.get("rows_dropped", 0), s.get("rows_in", 0)).as_dict(),
        "rules": sorted((s.get("dropped_by_rule") or {}).items(), key=lambda kv: -kv[1])[:4],
        "judge_score": mean(scores).as_dict() if scores else None,
        "judge_model": judge.get("model"),
    }


def _train(m: dict[str, Any]) -> dict[str, Any]:
    curve = (m.get("loss_curve") or {}).get("train") or []
    return {
        "steps": m.get("steps"),
        "first_loss": curve[0][1] if curve else None,
        "last_loss": curve[-1][1] if curve else m.get("train_loss"),
        "mean_loss": m.get("train_loss"),
        "eval_loss": m.get("eval_loss"),
        "supervised_tokens": m.get("supervised_tokens"),
        "tokens_per_s": m.get("supervised_tokens_per_s"),
        "seconds": m.get("wall_s"),
    }


def _eval(s: dict[str, Any]) -> dict[str, Any]:
    ifeval, winrate = s.get("ifeval") or {}, s.get("winrate") or {}
    harness = (s.get("harness") or {}).get("rows") or []
    return {
        "ifeval": (ifeval.get("intervals") or {}).get("prompt_level_strict"),
        "ifeval_instruction": (ifeval.get("intervals") or {}).get("instruction_level_strict"),
        "ifeval_model": ifeval.get("model"),
        "win_rate": (winrate.get("intervals") or {}).get("win_rate"),
        "winrate": winrate,
        "heldout": s.get("heldout"),
        "harness": harness,
    }


def headline(out: Path) -> dict[str, Any]:
    """Per stage (None when the stage has not written its file): its headline numbers."""
    manifests = [out / "generate" / "manifest.json", *sorted(out.glob("passes/*/manifest.json"))]
    generate = [
        (str(path.parent.relative_to(out)), m)
        for path in manifests
        if (m := _load(path)) is not None
    ]
    found = {
        "filter": _load(out / "filter" / "summary.json"),
        "train": _load(out / "train" / "metrics.json"),
        "eval": _load(out / "eval" / "summary.json"),
    }
    shape = {"filter": _filter, "train": _train, "eval": _eval}
    stages = {"generate": _generate(generate) if generate else None}
    stages.update({k: shape[k](v) if v is not None else None for k, v in found.items()})
    demo = any(
        bool(v.get("demo") or v.get("is_demo"))
        for v in [*found.values(), *(m for _, m in generate)]
        if v is not None
    )
    return {"stages": stages, "demo": demo}


def write_index(out: str | Path, seconds: float | None = None) -> Path:
    """Write OUT/index.html: headline numbers and links of the stages found in OUT."""
    out = Path(out)
    facts = headline(out)
    links: dict[str, list[tuple[str, str]]] = {}
    for stage, label, href in LINKS:
        if (out / href).exists():
            links.setdefault(stage, []).append((label, href))
    page = render(
        "demo_index.html.jinja",
        title=out.name,
        seconds=seconds,
        demo=facts["demo"],
        stages=facts["stages"],
        links=links,
        unreadable=[
            name for name in STAGE_FILES if (out / name).is_file() and _load(out / name) is None
        ],
    )
    atomic_write_text(out / "index.html", page)
    return out / "index.html"
