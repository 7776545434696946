"""distillery's trainer: TRL's `SFTTrainer` on its public surface, plus three guarantees.

- **Loss normalisation never turns off.** The training loss is the summed token loss of a
  micro-batch divided by `num_items_in_batch`, the supervised tokens of the whole
  accumulation window on every process (TRL's fused-head loss). The Trainer counts
  `num_items_in_batch` only for model classes that accept loss kwargs; for one that declares
  `accepts_loss_kwargs = False` (some Gemma-3n/Gemma-4 style wrappers) distillery counts it
  itself, and a training micro-batch without the count stops training with an error.
- **Exact token counts** (supervised tokens, tokens, sum of squared document lengths), kept
  on the device and logged cumulatively with every training log line (`tokens`,
  `supervised_tokens`, `sum_sq_doc_lengths`), so each checkpoint's `trainer_state.json`
  holds the counts of every step up to it and a resumed run continues them.
- **Token-weighted evaluation.** `eval_loss` (and `eval_mean_token_accuracy`,
  `eval_entropy`) is the mean over every supervised token of the eval set, gathered per row
  across processes, so it does not depend on the eval batch size.

Every training window is logged: at each checkpoint and at the last step (so the log history
of a checkpoint covers all its steps, and the mean training loss over all steps of a resumed
run can be read back from it).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

COUNTERS = ("supervised_tokens", "tokens", "sum_sq_doc_lengths")


class PackedRowsCollator:
    """Packed rows as a [rows, longest] batch for SDPA/eager attention.

    Each example's `position_ids` restart at 0 and there is no `attention_mask`, so
    transformers builds a block-diagonal causal mask from the position ids (row-end padding
    has position 0 and labels -100: each pad token is its own one-token sequence). The label
    at each example's first position is masked, as TRL's padding-free collator does.
    """

    def __init__(self, pad_token_id: int) -> None:
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.inner = DataCollatorForLanguageModeling(
            pad_token_id=pad_token_id, return_position_ids=True
        )

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = self.inner(rows)
        del batch["attention_mask"]
        batch["labels"][batch["position_ids"] == 0] = -100
        batch["doc_lengths"] = torch.tensor([n for row in rows for n in row["seq_lengths"]])
        return batch


def _doc_lengths(inputs: dict[str, Any], doc_lengths: Any) -> Any:
    """Lengths of the documents in a batch, whatever layout the collator produced."""
    import torch

    labels = inputs["labels"]
    if doc_lengths is not None:
        return doc_lengths
    if "cu_seq_lens_q" in inputs:  # padding-free: one row of packed documents
        return torch.diff(inputs["cu_seq_lens_q"].reshape(-1))
    if "attention_mask" in inputs:
        return inputs["attention_mask"].sum(-1)
    return torch.full((labels.shape[0],), labels.shape[-1])


def supervised_count(batches: list[dict[str, Any]]) -> Any:
    """Supervised (next-token) labels in a list of collated batches: the loss denominator."""
    import torch

    return sum(
        (b["shift_labels"] if "shift_labels" in b else b["labels"][..., 1:]).ne(-100).sum()
        for b in batches
    ) + torch.zeros((), dtype=torch.long)


@functools.cache
def trainer_class() -> type:
    """The `SFTTrainer` subclass `build_trainer` instantiates."""
    import torch
    from trl import SFTTrainer

    class DistillerySFTTrainer(SFTTrainer):
        # compute_loss always returns the token-summed loss / num_items_in_batch (TRL's fused
        # head), so the Trainer must not divide it again by the accumulation steps
        loss_is_scaled_for_ga = True  # type: ignore[assignment]
        counts_before: dict[str, float] | None = None  # global counts restored at resume
        _counts: Any = None  # this invocation's counts on this process, on the device
        _eval_sums: Any = None

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
            if num_items is None and batches and "labels" in batches[0] and self._plain_dp():
                # the model class declares accepts_loss_kwargs=False: the Trainer did not count
                num_items = supervised_count(batches).to(device)
                if self.args.average_tokens_across_devices and self.args.world_size > 1:
                    num_items = self.accelerator.gather(num_items).sum()
            return batches, num_items

        def _plain_dp(self) -> bool:
            return self.get_tp_size() * self.get_cp_size() * self.get_sp_size() == 1

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            doc_lengths = inputs.pop("doc_lengths", None)  # PackedRowsCollator's, not the model's
            if not model.training:
                if return_outputs:
                    return super().compute_loss(model, inputs, True, num_items_in_batch)
                return self._eval_loss(model, inputs)
            if num_items_in_batch is None:
                raise RuntimeError(
                    "distillery: a training micro-batch came without the supervised-token count "
                    "of its accumulation window (num_items_in_batch); refusing to average the "
                    "loss per micro-batch. Tensor/context/sequence parallelism is not supported."
                )
            self._count(inputs, doc_lengths)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def _count(self, inputs: dict[str, Any], doc_lengths: Any) -> None:
            """Add this micro-batch's counts on the device (no host sync per micro-batch)."""
            labels = inputs["labels"]
            lengths = _doc_lengths(inputs, doc_lengths).to(labels.device, torch.float64)
            step = torch.stack(
                [
                    labels[..., 1:].ne(-100).sum().to(torch.float64),
                    lengths.sum(),
                    (lengths**2).sum(),
                ]
            )
            self._counts = step if self._counts is None else self._counts + step

        def _eval_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
            """Per-row summed NLL, supervised tokens, entropy and top-1 hits, gathered over
            processes (rows accelerate repeats to even out the last batch are dropped)."""
            outputs = model(**inputs, use_cache=False, fused_lm_head=True)
            nll = -outputs.log_probs.detach().sum(-1)
            extra = [  # TRL's head computes these for its metrics; zeros if it stops doing so
                torch.zeros_like(nll) if x is None else x.detach().sum(-1)
                for x in (outputs.entropy, outputs.is_top1)
            ]
            rows = torch.stack([nll, outputs.label_mask.sum(-1), *extra], dim=-1).double()
            flat = rows.size(0) == 1 and "cu_seq_lens_q" in inputs  # one padding-free row
            gathered = (
                self.accelerator.gather(rows) if flat else self.accelerator.gather_for_metrics(rows)
            )
            total = gathered.sum(0)
            self._eval_sums = total if self._eval_sums is None else self._eval_sums + total
            return (rows[:, 0].sum() / rows[:, 1].sum().clamp(min=1)).float()

        def evaluation_loop(
            self,
            dataloader,
            description,
            prediction_loss_only=None,
            ignore_keys=None,
            metric_key_prefix="eval",
        ):
            self._eval_sums = None
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            prefix, metrics = metric_key_prefix, output.metrics
            if metrics is not None and self._eval_sums is not None and self._eval_sums[1] > 0:
                nll, n, entropy, top1 = self._eval_sums.tolist()
                metrics[f"{prefix}_loss"] = nll / n
                metrics[f"{prefix}_entropy"] = entropy / n
                metrics[f"{prefix}_mean_token_accuracy"] = top1 / n
                metrics[f"{prefix}_supervised_tokens"] = int(n)
            return output

        def token_counts(self) -> dict[str, float]:
            """This invocation's counts, summed over every process (a collective)."""
            local = (
                torch.zeros(3, dtype=torch.float64, device=self.args.device)
                if self._counts is None
                else self._counts.to(self.args.device)
            )
            total = self.accelerator.reduce(local, reduction="sum").tolist()
            return dict(zip(COUNTERS, total, strict=True))

        def total_counts(self) -> dict[str, float]:
            """Counts of every step of the run: restored from the checkpoint, plus this
            invocation's (a collective)."""
            now = self.token_counts()
            before = self.counts_before or {}
            return {k: before.get(k, 0.0) + now[k] for k in COUNTERS}

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and getattr(
                self.model, "training", False
            ):  # a training window: every rank logs it
                logs.update({k: int(v) for k, v in self.total_counts().items()})
            super().log(logs, start_time)

    return DistillerySFTTrainer


def log_windows_callback() -> Any:
    """A callback that logs the training window at every checkpoint and at the last step, so
    the log history covers every step (and a checkpoint's history, every step up to it)."""
    from transformers import TrainerCallback

    class LogEveryWindow(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save or control.should_training_stop:
                control.should_log = True
            return control

    return LogEveryWindow()


def loss_over_steps(log_history: list[dict[str, Any]]) -> float | None:
    """Mean training loss over every logged step: each logged `loss` is the mean over the
    steps since the previous log line, so it is weighted by that window's length."""
    total, steps, last = 0.0, 0, 0
    for entry in sorted((e for e in log_history if "loss" in e), key=lambda e: e["step"]):
        window = entry["step"] - last
        total += entry["loss"] * window
        steps += window
        last = entry["step"]
    return total / steps if steps else None


def counts_at(checkpoint: str | Path) -> dict[str, float] | None:
    """The cumulative token counts logged at a checkpoint's own step, if there are any."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    for entry in reversed(state.get("log_history", [])):
        if entry.get("step") == state["global_step"] and all(k in entry for k in COUNTERS):
            return {k: float(entry[k]) for k in COUNTERS}
    return None
