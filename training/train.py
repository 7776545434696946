"""`distillery train`: prepare (mask + pack) -> TRL `SFTTrainer` with PEFT -> adapter, merged
model and metrics.

TRL's own padding-free collator turns packed rows (`seq_lengths`) into one row per
micro-batch with per-example `position_ids`, and masks each example's first label.

distillery owns the data preparation (assistant-only labels from the chat template, global
best-fit-decreasing packing) and hands TRL a tokenized dataset (`skip_prepare_dataset`)
with its padding-free collator. Loss normalisation across gradient accumulation and devices
is the Trainer's `num_items_in_batch` path: the loss is summed over supervised tokens and
divided by their count in the whole accumulation window (tested in fp32).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from pipeline.config import save_resolved_config
from pipeline.errors import UserError
from pipeline.jsonl import atomic_write_text
from training.config import TrainConfig
from training.data import PrepStats, load_conversations, load_tokenizer, prepare, save_prepared

# dense bf16 peak FLOP/s of GPUs we can name, for MFU (tensor cores, no sparsity)
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
}


def _write_jsonl(path: Path, conversations: list[tuple[str, list[dict[str, str]]]]) -> None:
    atomic_write_text(path, "".join(json.dumps({"messages": m}) + "\n" for _, m in conversations))


def build_trainer(
    config: TrainConfig,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | None,
    tokenizer: Any,
    **overrides: Any,
) -> Any:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    if config.mode == "qlora" and not cuda:
        raise UserError(
            "mode=qlora needs a CUDA GPU (bitsandbytes 4-bit); use mode=lora or mode=full on CPU"
        )
    if config.liger_kernels and not cuda:
        raise UserError("liger_kernels=true needs a CUDA GPU; set liger_kernels=false")
    bf16 = config.bf16 if config.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    if bf16 and not cuda:
        raise UserError("bf16=true needs a GPU here; set bf16=false")
    model_kwargs: dict[str, Any] = {"attn_implementation": config.attn_implementation or "sdpa"}
    if bf16:
        model_kwargs["dtype"] = torch.bfloat16
    if config.mode == "qlora":
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(str(config.model), **model_kwargs)
    except OSError as exc:
        raise UserError(
            f"model {config.model!r}: cannot load: {str(exc).splitlines()[0]}"
        ) from None
    peft_config = None
    if config.mode in ("lora", "qlora"):
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    args: dict[str, Any] = dict(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        activation_checkpointing=config.gradient_checkpointing,
        use_liger_kernel=config.liger_kernels,
        report_to=[],
        dataset_kwargs={"skip_prepare_dataset": True},
        padding_free=config.packing,
        remove_unused_columns=False,
        max_length=None,
        eval_strategy="steps" if (eval_rows and config.eval_steps) else "no",
        eval_steps=config.eval_steps,
        save_only_model=False,
    )
    args.update(overrides)
    return SFTTrainer(
        model=model,
        args=SFTConfig(**args),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def run_train(config: TrainConfig, prepare_only: bool = False) -> int:
    if not config.model or not config.data:
        raise UserError(
            "train needs --model PATH_OR_NAME and --data FILE (a 'messages' JSONL or dataset dir)"
        )
    out = Path(config.output_dir)
    tokenizer, template, stop = load_tokenizer(config)
    conversations = load_conversations(config.data)
    eval_conv: list[tuple[str, list[dict[str, str]]]] = []
    if config.eval_data:
        eval_conv = load_conversations(config.eval_data)
    elif config.eval_fraction and not prepare_only and len(conversations) >= 10:
        order = list(range(len(conversations)))
        random.Random(config.seed).shuffle(order)
        n_eval = max(1, int(len(conversations) * config.eval_fraction))
        held = set(order[:n_eval])
        eval_conv = [c for i, c in enumerate(conversations) if i in held]
        conversations = [c for i, c in enumerate(conversations) if i not in held]
    out.mkdir(parents=True, exist_ok=True)
    rows, stats = prepare(config, conversations, tokenizer, template, stop)
    save_resolved_config(config, out)
    if prepare_only:
        target = save_prepared(rows, stats, out)
        print(f"prepared {stats.rows:,} rows from {stats.examples:,} examples -> {target}")
        print(json.dumps(stats.as_dict(), indent=1))
        return 0
    eval_rows = None
    if eval_conv:
        _write_jsonl(
            out / "eval_split.jsonl", eval_conv
        )  # the held-out rows, for `distillery eval`
        eval_rows, _ = prepare(config, eval_conv, tokenizer, template, stop)
    trainer = build_trainer(config, rows, eval_rows, tokenizer)
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(out)) if config.resume and out.exists() else None
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=last)
    wall = time.monotonic() - started
    metrics = _metrics(trainer, result, stats, wall)
    if eval_rows:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    _save_models(config, trainer, tokenizer, out)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))
    return 0


def _metrics(trainer: Any, result: Any, stats: PrepStats, wall: float) -> dict[str, Any]:
    import torch

    steps = result.global_step
    args = trainer.args
    # supervised tokens actually seen: the share of the data the steps covered
    rows_seen = min(
        stats.rows * max(1.0, float(args.num_train_epochs)),
        steps
        * args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * args.world_size,
    )
    sup_tokens = stats.supervised_tokens * rows_seen / max(1, stats.rows)
    all_tokens = stats.tokens * rows_seen / max(1, stats.rows)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    metrics: dict[str, Any] = {
        "train_loss": result.training_loss,
        "steps": steps,
        "wall_s": round(wall, 2),
        "supervised_tokens_per_s": sup_tokens / wall,
        "tokens_per_s": all_tokens / wall,
        "packing_fill": stats.packing_fill,
        "masked_fraction": stats.masked_fraction,
        "prep": stats.as_dict(),
        "params": n_params,
        "mfu_formula": "6 * params * tokens_per_s / (n_gpus * peak_bf16_flops)  (attention FLOPs not counted)",
    }
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        metrics["gpu"] = name
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        if peak:
            metrics["mfu"] = 6 * n_params * (all_tokens / wall) / (args.world_size * peak)
    else:
        import resource

        metrics["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return metrics


def _save_models(config: TrainConfig, trainer: Any, tokenizer: Any, out: Path) -> None:
    if config.mode == "full":
        trainer.save_model(str(out / "model"))
        tokenizer.save_pretrained(str(out / "model"))
        return
    trainer.save_model(str(out / "adapter"))
    tokenizer.save_pretrained(str(out / "adapter"))
    if config.merge and config.mode == "lora":
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        tokenizer.save_pretrained(str(out / "merged"))
