"""Is any input of an eval run demo data? Then its report says so, and so does summary.json.

Demo data is what the scripted `fake` teacher made (`Record.demo`; a filter run's
`summary.json` and a generate run's `manifest.json` carry `demo`, a training run's
`metrics.json` carries `is_demo`). An eval run is demo data when any model it used is the
fake teacher (`*_config.yaml`: student, baseline, judge), or any model it scored was trained
on demo data (the training run's `metrics.json` beside or above the model folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from distillery.errors import UserError

FAKE = "fake"


def _is_fake(spec: Any) -> bool:
    return isinstance(spec, str) and (spec == FAKE or spec.startswith(FAKE + ":"))


def trained_on_demo(model: str) -> str | None:
    """The training run's metrics.json that says `model` was trained on demo data, if any
    (`OUT/model`, `OUT/merged`, `OUT/adapter` and OUT itself are looked at)."""
    path = Path(model.removeprefix("hf:"))
    if not path.is_dir():
        return None
    for folder in (path, path.parent):
        metrics = folder / "metrics.json"
        if metrics.is_file():
            try:
                found = json.loads(metrics.read_text(encoding="utf-8"))
            except ValueError:
                return None
            return str(metrics) if found.get("is_demo") or found.get("demo") else None
    return None


def _models(run: Path) -> list[tuple[str, str, Path]]:
    """(role, spec, file) for every model the eval configs and harness results name."""
    out = []
    for config in sorted(run.rglob("*_config.yaml")):
        try:
            loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{config}: not a readable config ({exc.__class__.__name__})") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{config}: not a config mapping")
        for role in ("student", "baseline", "judge"):
            spec = (loaded.get(role) or {}).get("spec")
            if spec:
                out.append((role, str(spec), config))
        harness = loaded.get("harness") or {}
        for role in ("model", "base"):
            if harness.get(role):
                out.append((f"harness {role}", str(harness[role]), config))
    return out


def demo_reasons(run: Path) -> list[str]:
    """One line per reason this eval run's numbers rest on demo data (empty: none)."""
    reasons: list[str] = []
    for role, spec, config in _models(run):
        if _is_fake(spec):
            why = f"the {role} is the scripted fake teacher ({config.name})"
        elif (metrics := trained_on_demo(spec)) is not None:
            why = f"the {role} {spec} was trained on demo data ({metrics})"
        else:
            continue
        if why not in reasons:
            reasons.append(why)
    return reasons
