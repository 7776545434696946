"""`distillery eval harness`: lm-evaluation-harness tasks on the student and its base model.

`lm_eval` (the `harness` extra) scores each model with `simple_evaluate` (backend `hf` or
`vllm`) on the same items; per side this writes `harness_SIDE.json`:

- `results`: lm_eval's aggregate per task or group and metric (`acc,none`, ...) as it prints
  them, with `n-samples`, `n-shot`, task versions and the lm_eval / transformers versions;
- `scores`: every item's score per task and metric (`{doc_id: value}`; IFEval's
  instruction-level metrics keep one verdict per instruction), from which the report computes
  n, 95% intervals and the student - base differences item by item (`eval/forgetting.py`);
- `examples`: the first `harness.samples` prompts of each task with the answer (the chosen
  option for a multiple-choice task).

With `--base`, `harness_summary.json` holds the forgetting table. A side whose file was made
with the same settings and models is not run again (the student's, when the base failed);
other settings, another student included, stop with one line unless `--restart`
(`eval/run.py`'s `_same_work`).
"""

from __future__ import annotations

import gc
import importlib.util
import json
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.eval.config import HarnessSettings

INSTALL = "`.venv/bin/pip install -e '.[harness]'` (lm-evaluation-harness)"


def require_lm_eval() -> None:
    """lm_eval is an optional extra: without it, one line saying how to install it."""
    if importlib.util.find_spec("lm_eval") is None:
        raise UserError(f"eval harness needs lm_eval: {INSTALL}")


def task_manager(settings: HarnessSettings) -> Any:
    """lm_eval's task index: only the include path when it has every task asked for
    (indexing lm_eval's ~15k bundled task files takes seconds), else both."""
    from lm_eval.tasks import TaskManager

    if settings.include_path:
        if not Path(settings.include_path).is_dir():
            raise UserError(f"harness.include_path {settings.include_path}: no such folder")
        local = TaskManager(include_path=settings.include_path, include_defaults=False)
        if all(t in local.all_tasks for t in settings.tasks):
            return local
        manager = TaskManager(include_path=settings.include_path)
    else:
        manager = TaskManager()
    unknown = [t for t in settings.tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"harness.tasks: unknown task(s) {', '.join(unknown)} (lm_eval --tasks list names them)"
        )
    return manager


def _device(settings: HarnessSettings) -> str:
    if settings.device:
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_model(path: str, settings: HarnessSettings, manager: Any) -> dict[str, Any]:
    """One model on `settings.tasks`: lm_eval's results, per-item scores and examples."""
    import lm_eval

    model_args = ",".join(a for a in (f"pretrained={path}", settings.model_args) if a)
    raw = lm_eval.simple_evaluate(
        model=settings.backend,
        model_args=model_args,
        tasks=list(settings.tasks),
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        batch_size=settings.batch_size,
        device=_device(settings),
        apply_chat_template=settings.apply_chat_template,
        task_manager=manager,
        log_samples=True,
    )
    if raw is None:  # simple_evaluate returns None on ranks other than 0
        raise UserError("eval harness: lm_eval returned no results (run it as one process)")
    result = {
        "model": path,
        "results": _plain(raw["results"]),
        "groups": {k: list(v) for k, v in (raw.get("group_subtasks") or {}).items()},
        "n-samples": _plain(raw.get("n-samples", {})),
        "n-shot": _plain(raw.get("n-shot", {})),
        "versions": _plain(raw.get("versions", {})),
        "higher_is_better": _plain(raw.get("higher_is_better", {})),
        "lm_eval_version": raw.get("lm_eval_version"),
        "transformers_version": raw.get("transformers_version"),
        "date": raw.get("date"),
        "scores": {t: item_scores(s) for t, s in raw["samples"].items()},
        "examples": {t: examples(s, settings.samples) for t, s in raw["samples"].items()},
    }
    del raw
    gc.collect()  # the model goes before the next side loads
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _plain(obj: Any) -> Any:
    """lm_eval's dicts as JSON (numpy numbers, tuples and callables as plain values)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _value(v: Any) -> float | list[float] | None:
    if isinstance(v, (bool, int, float)):
        return float(v)
    if isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float)) for x in v):
        return [float(x) for x in v]  # IFEval instruction level: one verdict per instruction
    return None  # a corpus-level metric's raw material (e.g. BLEU's pairs): no item score


def item_scores(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`metric,filter` -> {doc_id: the item's score} from lm_eval's logged samples."""
    out: dict[str, dict[str, Any]] = {}
    for sample in samples:
        for metric in sample.get("metrics", []):
            value = _value(sample.get(metric))
            if value is not None:
                key = f"{metric},{sample.get('filter', 'none')}"
                out.setdefault(key, {})[str(sample["doc_id"])] = value
    return out


def _answer(sample: dict[str, Any]) -> str:
    """The model's answer: generated text, or the option it gave the highest likelihood."""
    resps = sample.get("filtered_resps") or []
    args = sample.get("arguments") or []
    if resps and isinstance(resps[0], str):
        return resps[0]
    if resps and isinstance(resps[0], (list, tuple)) and len(args) == len(resps):
        best = max(range(len(resps)), key=lambda i: float(resps[i][0]))
        return str(args[best][1]).strip()
    return json.dumps(_plain(resps))[:500]


def examples(samples: list[dict[str, Any]], k: int) -> list[dict[str, str]]:
    """The first k items (one per doc, first filter): prompt, target and the model's answer."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for sample in samples:
        doc = str(sample["doc_id"])
        if len(out) >= k or doc in seen:
            continue
        seen.add(doc)
        args = sample.get("arguments") or [[""]]
        target = sample.get("target", "")
        if isinstance(target, int) and len(args) > target >= 0 and len(args[target]) > 1:
            target = str(args[target][1]).strip()  # multiple choice: the option, not its index
        out.append(
            {
                "doc_id": doc,
                "prompt": str(args[0][0]),
                "target": str(target),
                "answer": _answer(sample),
            }
        )
    return out
