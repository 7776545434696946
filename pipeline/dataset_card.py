"""A dataset card from a run's own records: every number on it is read from the run's files,
never written by hand.

Reads a filter run directory (`kept.jsonl`, `dropped.jsonl`, `summary.json`, `config.yaml`,
`identity.json`, `invocations.jsonl`) and the generate run it filtered (`manifest.json`,
`config.yaml`, `identity.json`, `invocations.jsonl`, found from the filter's `input`) - or the
generate runs whose rows the input joins (the demo's `generated_all.jsonl`: `generate/` and
`passes/magpie/`) - or a generate run directory alone. `card_facts` gathers: the seed set (count, categories,
digest), every model with its role, the prompt templates (name + SHA-256) and sampling
parameters found in the rows' call traces, the filter funnel and drops per rule with the
thresholds in force, the decontamination certificate per eval set, rows by origin and
category, tokens and dollars, and the commands and resolved configs that reproduce it.
`render_card` lays them out with `report_templates/dataset_card.md.jinja` under the YAML
metadata the Hub reads (license, task categories, size category, configs/splits).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from distillery.errors import UserError
from distillery.jsonl import iter_json_lines, read_jsonl, read_text_utf8
from distillery.records import Drop, Record

SIZE_CATEGORIES = [  # the Hub's buckets, upper bounds exclusive
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]


@dataclass
class RunFiles:
    """The run directories behind an export: the rows file, the filter run (if the rows are
    its kept rows) and the generate run (if found)."""

    rows: Path
    filter_dir: Path | None
    generate_dirs: list[Path]


def locate(run_dir: str | Path) -> RunFiles:
    """A filter run dir (kept.jsonl + summary.json) or a generate run dir (generated.jsonl +
    manifest.json); the generate run of a filter run is the directory of its `input`."""
    run = Path(run_dir)
    if (run / "kept.jsonl").is_file() and (run / "summary.json").is_file():
        source = Path(str(_json(run / "summary.json").get("input", "")))
        # the path as recorded; recorded relative to another working directory: from each
        # directory above the filter run, or the one above it holding a rows file of that name
        places = [source.parent]
        if not source.is_absolute():
            places += [up / source.parent for up in run.resolve().parents]
        found = (
            where
            for where in [*places, run.parent]
            if source.name
            and (where / source.name).is_file()
            and (where / "manifest.json").is_file()
        )
        generate = next(found, None)
        if generate is not None:
            return RunFiles(run / "kept.jsonl", run, [generate])
        rows = next((p / source.name for p in places if (p / source.name).is_file()), None)
        return RunFiles(run / "kept.jsonl", run, parts_of(rows) if rows else [])
    if (run / "generated.jsonl").is_file() and (run / "manifest.json").is_file():
        return RunFiles(run / "generated.jsonl", None, [run])
    raise UserError(
        f"{run}: not a filter run (kept.jsonl + summary.json) or a generate run "
        "(generated.jsonl + manifest.json)"
    )


def _ids(path: Path) -> set[str]:
    return {str(obj.get("id")) for _, obj in iter_json_lines(path)}


def parts_of(rows_file: Path) -> list[Path]:
    """The generate runs a rows file joins (the demo's `generated_all.jsonl`): the runs one or
    two levels below its directory whose row ids are all in it and together are all of it;
    none unless they account for every row (or the file is not JSON lines)."""
    found = (rows_file.parent.glob(p) for p in ("*/manifest.json", "*/*/manifest.json"))
    runs = sorted(m.parent for ms in found for m in ms if (m.parent / "generated.jsonl").is_file())
    if not runs:  # the usual case: the input is read only when runs could make it up
        return []
    try:
        wanted = _ids(rows_file)
    except UserError:  # a JSON array, CSV, ...: not a join of generate runs
        return []
    parts = [(run, _ids(run / "generated.jsonl")) for run in runs]
    parts = [(run, ids) for run, ids in parts if ids and ids <= wanted]
    covered = set().union(*(ids for _, ids in parts))
    return [run for run, _ in parts] if wanted and covered == wanted else []


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text_utf8(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON: {exc.msg}") from None
    return data if isinstance(data, dict) else {}


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(read_text_utf8(path))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed YAML: {str(exc).splitlines()[0]}") from None
    return data if isinstance(data, dict) else {}


def read_records(path: Path) -> list[Record]:
    return list(read_jsonl(path, Record))


def size_category(n: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if n < bound), "n>1B")


def _commands(stage: str, run: Path | None) -> list[dict[str, Any]]:
    """Every invocation of a run: the command line as typed, when, its exit code."""
    if run is None or not (run / "invocations.jsonl").is_file():
        return []
    return [
        {
            "stage": stage,
            "command": obj.get("command", ""),
            "started": obj.get("started"),
            "exit_code": obj.get("exit_code"),
        }
        for _, obj in iter_json_lines(run / "invocations.jsonl")
    ]


def _seed_set(generate: Path | None, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Seed count (manifest), digest (identity) and categories (the seed files, when they
    are still where the config says and still have that digest)."""
    if generate is None:
        return None
    from distillery.resources import seeds_path
    from distillery.runstate import input_identity

    path = str(_yaml(generate / "config.yaml").get("seeds", ""))
    identity = _json(generate / "identity.json") if (generate / "identity.json").is_file() else {}
    digest = identity.get("inputs", {}).get("seeds")
    out: dict[str, Any] = {"path": path, "count": manifest.get("seeds"), "digest": digest}
    out["categories"] = None
    # resolved as generate resolved it for its identity (`builtin` is the package's seeds)
    if path and input_identity(path if path.startswith("hf:") else seeds_path(path)) == digest:
        from distillery.seeds import load_seeds

        out["categories"] = dict(
            sorted(Counter(s.category or "(none)" for s in load_seeds(path)).items())
        )
    return out


def _models(gens: list[dict[str, Any]], filt_cfg: dict[str, Any]) -> list:
    """(role, model) for every model that wrote, judged or embedded the rows (with the
    generate run's name when there are several)."""
    out = []
    for g in gens:
        run = f" ({g['label']})" if len(gens) > 1 else ""
        teachers = g["manifest"].get("teachers", {}).items()
        out += [(f"teacher: {role}{run}", t.get("spec")) for role, t in teachers]
        cats = g["config"].get("categories", {})
        if cats.get("method") == "embedding":
            out.append((f"embedding: category assignment{run}", cats.get("model")))
    steps = filt_cfg.get("steps", [])
    if "judge" in steps:
        out.append(("judge", filt_cfg.get("judge", {}).get("teacher", {}).get("spec")))
    decontam_emb = "decontam" in steps and filt_cfg.get("decontam", {}).get("embedding_threshold")
    if "semantic" in steps or decontam_emb:
        out.append(
            (
                "embedding: semantic dedup / decontamination",
                filt_cfg.get("semantic", {}).get("model"),
            )
        )
    return [{"role": r, "model": m} for r, m in out]


def _calls(records: list[Record]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prompt templates (name, sha256, purposes) and sampling parameters (model, params,
    purposes) found in the rows' call traces."""
    templates: dict[tuple[str, str], set[str]] = {}
    sampling: dict[tuple[str, str], set[str]] = {}
    for record in records:
        for call in record.trace:
            if call.template is not None:
                key = (call.template.name, call.template.sha256)
                templates.setdefault(key, set()).add(call.purpose)
            params = json.dumps(call.params, sort_keys=True)
            sampling.setdefault((call.model, params), set()).add(call.purpose.split(":")[0])
    return (
        [
            {"name": n, "sha256": h, "purposes": sorted(p)}
            for (n, h), p in sorted(templates.items())
        ],
        [
            {"model": m, "params": json.loads(p), "purposes": sorted(u)}
            for (m, p), u in sorted(sampling.items())
        ],
    )


def _spend(gens: list[dict[str, Any]], judged: list[Record]) -> dict[str, Any]:
    """Tokens and dollars: the generate manifest per teacher role (every invocation), and the
    judge's calls from the traces of every filtered row (kept and dropped; cached calls
    cost nothing)."""
    keys = ("requests_sent", "cache_hits", "input_tokens", "output_tokens", "spent_usd")
    rows = [
        {"stage": g["label"], "role": role, **{k: t.get(k, 0) for k in keys}}
        for g in gens
        for role, t in g["manifest"].get("teachers", {}).items()
    ]
    calls = [c for r in judged for c in r.trace if c.purpose.startswith("judge")]
    if calls:
        live = [c for c in calls if not c.cached]
        rows.append(
            {
                "stage": "filter",
                "role": "judge",
                "requests_sent": len(live),
                "cache_hits": len(calls) - len(live),
                "input_tokens": sum(c.usage.input_tokens for c in live),
                "output_tokens": sum(c.usage.output_tokens for c in live),
                "spent_usd": sum(c.usage.cost_usd for c in live),
            }
        )
    total = {k: sum(r[k] for r in rows) for k in keys}
    return {"by_role": rows, "total": total}


def _decontam(filt: Path, summary: dict[str, Any], dropped: list[Record]) -> dict | None:
    """summary.json's certificate, or - for a run written before it was recorded - the same
    certificate rebuilt from the run's config, its dropped rows and the eval sets (items
    checked is None when a set cannot be read again)."""
    cfg = _yaml(filt / "config.yaml")
    if "decontam" not in cfg.get("steps", []):
        return None
    if summary.get("decontam"):
        return dict(summary["decontam"])
    from distillery.filter.config import DecontamConfig
    from distillery.filter.decontam import EvalItem, certificate, load_eval_sets

    dc = DecontamConfig.model_validate(cfg.get("decontam", {}))
    against = list(cfg.get("against", []))
    evals: list[EvalItem] | None
    try:
        evals = load_eval_sets(against, dc.text_fields)
    except UserError:
        evals = None
    checked = next((f["in"] for f in summary.get("funnel", []) if f["step"] == "decontam"), None)
    drops: list[Drop] = [r.dropped_by for r in dropped if r.dropped_by is not None]
    model = cfg.get("semantic", {}).get("model")
    return certificate(dc, against, evals, drops, checked, model)


def _filter_facts(filt: Path, records_dropped: list[Record]) -> dict[str, Any]:
    summary = _json(filt / "summary.json")
    cfg = _yaml(filt / "config.yaml")
    steps = list(cfg.get("steps", summary.get("steps", [])))
    return {
        "input": summary.get("input"),
        "rows_in": summary.get("rows_in"),
        "rows_kept": summary.get("rows_kept"),
        "funnel": summary.get("funnel", []),
        "dropped_by_rule": dict(sorted(summary.get("dropped_by_rule", {}).items())),
        "settings": [  # the scalar settings of each step that ran (full config: Reproduce)
            {"step": s, "key": k, "value": v}
            for s in steps
            for k, v in (cfg.get(s) or {}).items()
            if v is None or isinstance(v, (int, float, str, bool))
        ],
        "decontamination": _decontam(filt, summary, records_dropped),
    }


def card_facts(files: RunFiles, records: list[Record]) -> dict[str, Any]:
    """Everything the card states, from the run's files (see the module docstring)."""
    filt = files.filter_dir
    dirs = files.generate_dirs
    top = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else None
    gens: list[dict[str, Any]] = [
        {
            "label": str(g.relative_to(top)) if top else "generate",  # e.g. passes/magpie
            "dir": g,
            "manifest": _json(g / "manifest.json"),
            "config": _yaml(g / "config.yaml"),
        }
        for g in dirs
    ]
    filt_cfg = _yaml(filt / "config.yaml") if filt else {}
    dropped = read_records(filt / "dropped.jsonl") if filt else []
    templates, sampling = _calls(records)
    stages = [*((g["label"], g["dir"]) for g in gens), ("filter", filt)]
    seed_sets = [
        {**found, "run": g["label"]}
        for g in gens
        if (found := _seed_set(g["dir"], g["manifest"])) and found["count"]
    ]
    return {
        "rows": len(records),
        "demo": any(r.demo for r in records) or any(g["manifest"].get("demo") for g in gens),
        "rows_by_origin": dict(Counter(r.origin for r in records).most_common()),
        "rows_by_category": dict(Counter(r.category or "(none)" for r in records).most_common()),
        "row_teachers": dict(Counter(r.teacher or "(not recorded)" for r in records).most_common()),
        "seed_sets": seed_sets,
        "generate": [{"run": str(g["dir"]), "target": g["manifest"].get("target")} for g in gens],
        "models": _models(gens, filt_cfg),
        "templates": templates,
        "sampling": sampling,
        "filter": _filter_facts(filt, dropped) if filt else None,
        "spend": _spend(gens, [*records, *dropped] if filt else []),
        "commands": [c for stage, run in stages for c in _commands(stage, run)],
        "configs": {
            stage: read_text_utf8(run / "config.yaml")
            for stage, run in stages
            if run is not None and (run / "config.yaml").is_file()
        },
    }


def card_metadata(facts: dict[str, Any], license_id: str, pretty_name: str | None) -> Any:
    """The YAML header the Hub reads, plus the card's key numbers under `distillery`."""
    from huggingface_hub import DatasetCardData

    filt = facts["filter"] or {}
    return DatasetCardData(
        license=license_id,
        task_categories=["text-generation"],
        size_categories=[size_category(facts["rows"])],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        pretty_name=pretty_name,
        tags=[
            "synthetic",
            "distillery",
            "instruction-tuning",
            *(["demo"] if facts["demo"] else []),
        ],
        configs=[
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
        ],
        distillery={
            "rows": facts["rows"],
            "demo": facts["demo"],
            "rows_by_origin": facts["rows_by_origin"],
            "rows_by_category": facts["rows_by_category"],
            "funnel": filt.get("funnel", []),
            "dropped_by_rule": filt.get("dropped_by_rule", {}),
            "decontamination": filt.get("decontamination"),
            "spend": facts["spend"]["total"],
        },
    )


def _cell(value: Any) -> str:
    """A value inside a Markdown table cell."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")


def render_card(facts: dict[str, Any], license_id: str, pretty_name: str | None = None) -> str:
    """README.md: the Hub metadata, then the card laid out from `facts`."""
    import jinja2
    from huggingface_hub import DatasetCard

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("distillery", "report_templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = _cell
    env.filters["fmt"] = format
    data = card_metadata(facts, license_id, pretty_name)
    text = env.get_template("dataset_card.md.jinja").render(
        card_data=data.to_yaml(), license=license_id, name=pretty_name, **facts
    )
    return str(DatasetCard(text))  # parses the header: a malformed card fails here, not on the Hub
