"""What a training run is (its identity) and what it did (its invocations).

The identity of an `output_dir` is the training config minus the fields that cannot change
the trained weights (`IDENTITY_EXCLUDE`), with `bf16` and `attn_implementation` resolved
as this machine resolves them, the number of processes (the global batch is
batch_size x grad_accum x processes), and digests of the inputs: the data, the eval data, the
base model and the chat template (a mix: every source's digest and rows / weight, by name).
`distillery.runstate.RunDir` stores it and refuses a
re-run with a different one.

Only rank 0 opens the run directory; the other ranks learn its verdict (finished, or could
not open) through a broadcast, so they never race on the bookkeeping files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.model_identity import model_identity
from distillery.runstate import RunDir, config_identity, input_identity, refuse_inputs_inside
from distillery.training.config import DataSource, TrainConfig

# fields that change where or how often things are logged and saved, or memory use with the
# same arithmetic - never the trained weights; a resumed run may change them
IDENTITY_EXCLUDE = (
    "output_dir",  # the run directory itself
    "logging_steps",
    "save_steps",
    "eval_steps",  # evaluation reads the model, never changes it
    "eval_batch_size",  # eval loss is token-weighted: the same for any batch size
    "resume",
    "gradient_checkpointing",  # recomputes the same activations (RNG state preserved)
    "signal_check",  # a pre-flight check of the prepared rows; it never changes them
)


def mix_identity(sources: list[DataSource]) -> dict[str, dict[str, Any]]:
    """A mix in the identity: per source name, its path, content digest (a run directory by
    the rows file it trains on) and its rows / weight; a refused re-run then names the source
    and what changed (`inputs.data.replay.weight: 0.3 -> 0.5`)."""
    from distillery.training.data import run_file
    from distillery.training.mix import source_names

    out = {}
    for name, source in zip(source_names(sources), sources, strict=True):
        path = Path(source.path)
        rows_file = run_file(path) if path.is_dir() else None
        out[name] = {
            "path": source.path,
            "digest": input_identity(rows_file or source.path),
            "rows": source.rows,
            "weight": source.weight,
        }
    return out


def check_paths(config: TrainConfig, out: Path) -> None:
    """The output directory holds none of the run's inputs: `--restart` would move them aside
    (and the run would then write over or train from what it moved)."""
    sources = config.data if isinstance(config.data, list) else [config.data]
    named = [("model", config.model), ("eval_data", config.eval_data)]
    named += [("chat_template", config.chat_template)]
    named += [("data", s.path if isinstance(s, DataSource) else s) for s in sources]
    refuse_inputs_inside(out, named, "--output-dir")


def train_identity(
    config: TrainConfig, template: str | None, *, bf16: bool, attention: str
) -> dict[str, Any]:
    """The identity `RunDir` records for a training run (see the module docstring)."""
    resolved = config.model_copy(update={"bf16": bf16, "attn_implementation": attention})
    exclude: tuple[str, ...] = IDENTITY_EXCLUDE
    data: Any = input_identity(config.data) if not isinstance(config.data, list) else None
    if isinstance(config.data, list):  # a mix: each source by name, with its digest and amount
        exclude = (*IDENTITY_EXCLUDE, "data")
        data = mix_identity(config.data)
    inputs = {
        "data": data,
        "eval_data": input_identity(config.eval_data),
        "model": model_identity(str(config.model)),
        "chat_template": "sha256:" + hashlib.sha256(_template_text(template).encode()).hexdigest(),
    }
    identity = config_identity(resolved, exclude=exclude, inputs=inputs)
    identity["processes"] = int(os.environ.get("WORLD_SIZE", "1"))
    return identity


def _template_text(template: Any) -> str:
    """A chat template as text; a tokenizer's named templates (a dict) in a stable order."""
    if isinstance(template, dict):
        return json.dumps(template, sort_keys=True)
    return template or ""


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate / deepspeed launch (every launcher sets RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def agree(value: Any) -> Any:
    """Rank 0's `value`, on every rank (itself when there is no process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


@contextlib.contextmanager
def open_run(
    out: Path, identity: dict[str, Any], *, restart: bool, shared: bool = True
) -> Iterator[tuple[RunDir | None, dict[str, Any] | None]]:
    """Rank 0 opens `out` as a `RunDir` (lock, identity check, --restart) and holds it for
    the block; every rank gets (the RunDir on rank 0 else None, the finished summary if the
    run is already complete). With `shared`, ranks agree through a broadcast: a rank-0 error
    stops the others with exit code 2 (rank 0 prints why)."""
    with contextlib.ExitStack() as stack:
        run: RunDir | None = None
        problem: UserError | None = None
        if is_main_process():
            try:
                run = stack.enter_context(RunDir(out, "train", identity, restart=restart))
            except UserError as exc:
                problem = exc
        verdict = (problem is not None, run.finished if run else None)
        failed, finished = agree(verdict) if shared else verdict
        if problem is not None:
            raise problem
        if failed:
            raise SystemExit(2)
        yield run, finished


def invocations(run: RunDir, current: dict[str, Any]) -> list[dict[str, Any]]:
    """Every invocation of this run, oldest first: when, exit code, steps, tokens and the
    checkpoint it resumed from. A resume from further than any recorded invocation reached
    means one ended without recording (killed): it is listed as such."""
    rows: list[dict[str, Any]] = []
    for row in run.previous():
        counters = row.get("counters", {})
        rows.append({"started": row.get("started"), "exit_code": row.get("exit_code"), **counters})
    reached = max((r.get("last_step") or 0 for r in rows), default=0)
    resumed_step = current.get("first_step") or 0
    if resumed_step > reached:
        rows.append(
            {"started": None, "exit_code": None, "saved_step": resumed_step, "recorded": False}
        )
    return [*rows, current]


def last_complete_checkpoint(out: Path, report: bool = False) -> str | None:
    """The newest `checkpoint-N` that finished writing and that the Trainer resumes from
    without training past the end.

    The Trainer writes a checkpoint in place and `trainer_state.json` last, so a run killed
    mid-save leaves a directory without a readable state; resuming from it would crash or
    load torn weights. A checkpoint at the last step (the run died writing its outputs) that
    ends mid-epoch (max_steps) is passed over too: resumed from it, the Trainer trains one
    step past max_steps, so the steps after the checkpoint before it are trained again. At
    an epoch's end it resumes with nothing left to train, which is right."""
    import re

    if not out.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p)
        for p in out.iterdir()
        if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    )
    for _, path in reversed(found):
        try:
            state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if report:
                print(f"skipping incomplete checkpoint {path} (no readable trainer_state.json)")
            continue
        at_end = state.get("max_steps", 0) > 0 and state.get("global_step", 0) >= state["max_steps"]
        if at_end and not float(state.get("epoch") or 0).is_integer():
            if report:
                print(
                    f"not resuming from {path}: it is the last step of a run whose outputs were "
                    "not all written; training the steps after the checkpoint before it again"
                )
            continue
        return str(path)
    return None
