"""`OUT/report.html` of a training run: the loss curve (train and held-out) and the numbers
behind it, from `OUT/metrics.json` alone (static page, inline SVG, nothing fetched).

Shown: the train loss per logged window and the held-out loss at each evaluation (the final
one included), one held-out line per source of a mix; steps, tokens and supervised tokens;
the mix as used (rows, supervised tokens and held-out loss per source, each with its n); the
demo banner when any training row is demo data (`metrics.json`'s `is_demo`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.jsonl import atomic_write_text, read_json_object
from distillery.reports import line_chart, render


def _curves(metrics: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """label -> [(step, loss)]: train, held-out, held-out per source; the run's final
    held-out loss (evaluated after the last step) closes each held-out line."""
    curve = metrics.get("loss_curve") or {}
    steps = metrics.get("steps") or 0
    lines: dict[str, list[tuple[float, float]]] = {
        "train loss": [(s, v) for s, v in curve.get("train", [])]
    }
    by_source = curve.get("eval_by_source") or {}
    finals = {m["eval_key"]: m.get("eval_loss") for m in metrics.get("data_mix") or []}
    names = {m["eval_key"]: m["name"] for m in metrics.get("data_mix") or []}
    if by_source or len([v for v in finals.values() if v is not None]) > 1:
        for key in sorted(set(by_source) | {k for k, v in finals.items() if v is not None}):
            points = [(s, v) for s, v in by_source.get(key, [])]
            if finals.get(key) is not None and (not points or points[-1][0] != steps):
                points.append((steps, float(finals[key])))
            lines[f"held-out loss: {names.get(key, key)}"] = points
    else:
        points = [(s, v) for s, v in curve.get("eval", [])]
        final = metrics.get("eval_loss")
        if final is not None and (not points or points[-1][0] != steps):
            points.append((steps, float(final)))
        lines["held-out loss"] = points
    return lines


def render_train_report(metrics: dict[str, Any], run: str) -> str:
    """The page for one training run's metrics.json."""
    lines = _curves(metrics)
    chart = line_chart(lines, y_label="loss", title="loss curve") if any(lines.values()) else None
    eval_loss = metrics.get("eval_loss")
    return render(
        "train_report.html.jinja",
        run=run,
        m=metrics,
        chart=chart,
        points={label: len(p) for label, p in lines.items()},
        perplexity=math.exp(min(eval_loss, 50)) if eval_loss is not None else None,
        mix=metrics.get("data_mix") or [],
    )


def write_train_report(out: Path) -> Path:
    """OUT/report.html from OUT/metrics.json (written when a run finishes)."""
    path = out / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path}: no such file (a finished `distillery train` run writes it)")
    metrics = read_json_object(path)
    target = out / "report.html"
    atomic_write_text(target, render_train_report(metrics, str(out)))
    return target
