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

import functools
import importlib.util
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from distillery.config import save_resolved_config
from distillery.errors import UserError
from distillery.jsonl import atomic_write_text
from distillery.training.config import TrainConfig
from distillery.training.data import (
    PrepStats,
    load_conversations,
    load_tokenizer,
    prepare,
    save_prepared,
)

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


@functools.cache
def _trainer_class() -> type:
    """TRL's `SFTTrainer`, counting the tokens it trains on (for exact tokens/s and MFU)."""
    import torch
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        # supervised tokens, tokens, sum of squared document lengths: kept on the device and
        # added without a host sync, so counting never stalls the step
        _counts: Any = None

        def compute_loss(self, model, inputs, *args, **kwargs):
            doc_lengths = inputs.pop("doc_lengths", None)  # PackedRowsCollator's, not the model's
            if model.training:
                labels = inputs["labels"]
                if doc_lengths is not None:
                    lengths = doc_lengths
                elif "cu_seq_lens_q" in inputs:  # padding-free: one row of packed documents
                    lengths = torch.diff(inputs["cu_seq_lens_q"].reshape(-1))
                elif "attention_mask" in inputs:
                    lengths = inputs["attention_mask"].sum(-1)
                else:
                    lengths = torch.full((labels.shape[0],), labels.shape[-1])
                lengths = lengths.to(labels.device, torch.float64)
                step = torch.stack(
                    [
                        labels[..., 1:].ne(-100).sum().to(torch.float64),
                        lengths.sum(),
                        (lengths**2).sum(),
                    ]
                )
                self._counts = step if self._counts is None else self._counts + step
            result = super().compute_loss(model, inputs, *args, **kwargs)
            if doc_lengths is not None and model.training and hasattr(self, "_total_train_tokens"):
                # TRL logs `num_tokens` as one row's length per batch when there is no
                # attention mask; with several packed rows per batch, correct it to the real
                # token count (a collective: every rank takes this branch together)
                missing = int(doc_lengths.sum()) - inputs["position_ids"].size(1)
                local = torch.tensor(missing, device=inputs["position_ids"].device)
                self._total_train_tokens += int(self.accelerator.gather_for_metrics(local).sum())
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return result

        def token_counts(self) -> dict[str, float]:
            """Counts since this process started, summed over every process of the run."""
            local = (
                torch.zeros(3, dtype=torch.float64, device=self.args.device)
                if self._counts is None
                else self._counts.to(self.args.device)
            )
            total = self.accelerator.reduce(local, reduction="sum").tolist()
            return dict(zip(("supervised", "tokens", "sum_sq_doc_lengths"), total, strict=True))

    return CountingSFTTrainer


def _default_attention(cuda: bool) -> str:
    """flash-attention 2 on a GPU when installed (padding-free rows go in as varlen sequences),
    else SDPA (packed documents are then kept apart by a block-diagonal mask)."""
    return "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"


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
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    if config.mode == "qlora" and not cuda:
        raise UserError(
            "mode=qlora needs a CUDA GPU (bitsandbytes 4-bit); use mode=lora or mode=full on CPU"
        )
    if config.liger_kernels and not cuda:
        raise UserError("liger_kernels=true needs a CUDA GPU; set liger_kernels=false")
    for wanted, package, extra in (
        (config.mode == "qlora", "bitsandbytes", "mode=qlora"),
        (config.liger_kernels, "liger_kernel", "liger_kernels=true"),
        (config.attn_implementation == "flash_attention_2", "flash_attn", "flash_attention_2"),
    ):
        if wanted and not importlib.util.find_spec(package):
            raise UserError(
                f"{extra} needs the {package.replace('_', '-')} package: "
                f"`.venv/bin/pip install -e '.[gpu]'` (flash-attn: `pip install flash-attn`)"
            )
    bf16 = config.bf16 if config.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    if bf16 and not cuda:
        raise UserError("bf16=true needs a GPU here; set bf16=false")
    attention = config.attn_implementation or _default_attention(cuda)
    # packed rows: flash-attention kernels take one flat padding-free sequence (no padding at
    # all); SDPA/eager would attend over the whole flattened batch (quadratic in batch x
    # max_length), so there each packed row stays its own batch row
    flat = config.packing and attention.startswith("flash")
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
        padding_free=flat,
        remove_unused_columns=False,
        max_length=None,
        eval_strategy="steps" if (eval_rows and config.eval_steps) else "no",
        eval_steps=config.eval_steps,
        save_only_model=False,
        use_cpu=not cuda,  # also makes torchrun on CPU use gloo DDP (the multi-process tests)
    )
    args.update(overrides)
    # SFTConfig before the model: under DeepSpeed ZeRO-3 (zero3_init_flag) creating the
    # arguments is what lets from_pretrained load the weights already partitioned
    sft_config = SFTConfig(**args)
    model_kwargs: dict[str, Any] = {"attn_implementation": attention}
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
    return _trainer_class()(
        model=model,
        args=sft_config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        data_collator=PackedRowsCollator(tokenizer.pad_token_id)
        if config.packing and not flat
        else None,
        peft_config=peft_config,
    )


def _is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate / deepspeed launch (every launcher sets RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def run_train(config: TrainConfig, prepare_only: bool = False) -> int:
    """Prepare, train, save. Every rank prepares the same rows (deterministic); only rank 0
    writes files, and nothing is written before the data and the model have loaded."""
    if not config.model or not config.data:
        raise UserError(
            "train needs --model PATH_OR_NAME and --data FILE (a 'messages' JSONL or dataset dir)"
        )
    out = Path(config.output_dir)
    main = _is_main_process()
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
    rows, stats = prepare(config, conversations, tokenizer, template, stop)
    if prepare_only:
        if main:
            out.mkdir(parents=True, exist_ok=True)
            save_resolved_config(config, out)
            target = save_prepared(rows, stats, out)
            print(f"prepared {stats.rows:,} rows from {stats.examples:,} examples -> {target}")
            print(json.dumps(stats.as_dict(), indent=1))
        return 0
    eval_rows = prepare(config, eval_conv, tokenizer, template, stop)[0] if eval_conv else None
    trainer = build_trainer(config, rows, eval_rows, tokenizer)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved_config(config, out)
        if eval_conv and not config.eval_data:  # the held-out rows, for `distillery eval`
            _write_jsonl(out / "eval_split.jsonl", eval_conv)
    last = last_complete_checkpoint(out, report=main) if config.resume else None
    if last and main:
        print(f"resuming from {last}")
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=last)
    wall = time.monotonic() - started
    metrics = _metrics(trainer, result, stats, wall)
    if eval_rows:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    _save_models(config, trainer, tokenizer, out, bf16=bool(trainer.args.bf16))
    if main:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
        print(json.dumps(metrics, indent=1))
    shut_down(trainer)
    return 0


def shut_down(trainer: Any) -> None:
    """Every rank waits for rank 0's merge and metrics; then the DDP/FSDP wrappers are freed
    while the process group is alive, and the group is destroyed. (Tearing these down in
    interpreter-exit order aborted or hung about 1 run in 7 on CPU/gloo.)"""
    import gc

    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    gc.collect()
    accelerator.wait_for_everyone()
    accelerator.end_training()


def last_complete_checkpoint(out: Path, report: bool = False) -> str | None:
    """The newest `checkpoint-N` that finished writing. The Trainer writes a checkpoint in
    place and `trainer_state.json` last, so a run killed mid-save leaves a directory without
    a readable state; resuming from it would crash or load torn weights."""
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
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if report:
                print(f"skipping incomplete checkpoint {path} (no readable trainer_state.json)")
            continue
        return str(path)
    return None


def training_flops(
    model: Any, tokens: float, sum_sq_doc_lengths: float
) -> tuple[float, dict[str, int]]:
    """Model FLOPs of the training tokens seen (hardware-independent; recomputation for
    gradient checkpointing and padding are not counted).

    Matmul weights (every parameter except an untied input embedding, which is a lookup):
    6 FLOPs per weight per token when trained (forward 2, backward 4), 4 when frozen
    (LoRA/QLoRA base: the backward needs activation gradients, not weight gradients).
    Causal attention within each document of length L: 6 * layers * width * L^2
    (scores and weighted sum, 2 * 2 * L^2/2 * width per layer forward, x3 with backward).
    """
    embed = model.get_input_embeddings()
    out_emb = model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is embed.weight
    embed_params = 0 if tied else embed.weight.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if embed.weight.requires_grad:
        trainable -= embed_params
    else:
        frozen -= embed_params
    cfg = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    layers = int(getattr(cfg, "num_hidden_layers", 0))
    width = int(getattr(cfg, "num_attention_heads", 0) * getattr(cfg, "head_dim", 0) or 0) or int(
        getattr(cfg, "hidden_size", 0)
    )
    flops = (6 * trainable + 4 * frozen) * tokens + 6 * layers * width * sum_sq_doc_lengths
    return flops, {"trainable_params": trainable, "frozen_matmul_params": frozen}


def _metrics(trainer: Any, result: Any, stats: PrepStats, wall: float) -> dict[str, Any]:
    import torch

    counted = trainer.token_counts()  # summed over every rank
    model = trainer.accelerator.unwrap_model(trainer.model)
    flops, params = training_flops(model, counted["tokens"], counted["sum_sq_doc_lengths"])
    metrics: dict[str, Any] = {
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "wall_s": round(wall, 2),
        "processes": trainer.args.world_size,
        "supervised_tokens": int(counted["supervised"]),
        "tokens": int(counted["tokens"]),
        "supervised_tokens_per_s": counted["supervised"] / wall,
        "tokens_per_s": counted["tokens"] / wall,
        "packing_fill": stats.packing_fill,
        "masked_fraction": stats.masked_fraction,
        "prep": stats.as_dict(),
        **params,
        "model_tflops": flops / 1e12,
        "mfu_formula": (
            "model FLOPs / (wall_s * processes * peak dense bf16 FLOP/s); model FLOPs = "
            "(6 * trainable + 4 * frozen matmul params) * tokens + 6 * layers * width * "
            "sum(document_length^2)"
        ),
    }
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        metrics["gpu"] = name
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30  # rank 0's GPU
        if peak:
            metrics["mfu"] = flops / (wall * trainer.args.world_size * peak)
    else:
        import resource

        metrics["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return metrics


def _save_models(config: TrainConfig, trainer: Any, tokenizer: Any, out: Path, bf16: bool) -> None:
    """Full: the model. LoRA/QLoRA: the adapter, and (merge=true) the base model reloaded
    in bf16/fp32 with the adapter merged in - also right for QLoRA (no 4-bit merge) and for
    sharded (FSDP/ZeRO-3) runs, since it reads the saved adapter, not the live model."""
    target = out / ("model" if config.mode == "full" else "adapter")
    if getattr(trainer, "is_fsdp_enabled", False):
        # checkpoints stay sharded (fast, resumable); under SHARDED_STATE_DICT the Trainer's
        # save_model writes no weights at all, so the final save gathers a full state dict
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(target))  # every rank: gathers sharded weights, rank 0 writes
    trainer.accelerator.wait_for_everyone()
    if not _is_main_process():
        return
    tokenizer.save_pretrained(str(target))
    if config.mode == "full" or not config.merge:
        return
    import torch
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(
        str(target), dtype=torch.bfloat16 if bf16 else torch.float32
    ).merge_and_unload()
    staging = out / "merged.partial"
    merged.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    final = out / "merged"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
