"""`distillery train` settings."""

from __future__ import annotations

from typing import Literal

from distillery.config import Section
from pydantic import Field


class LoraSettings(Section):
    """PEFT LoRA / QLoRA adapters."""

    r: int = Field(16, ge=1, le=1024, description="adapter rank")
    alpha: int = Field(32, ge=1, description="scaling numerator (alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: str | list[str] = Field(
        "all-linear", description="modules to adapt; 'all-linear' = every linear layer"
    )


class TrainConfig(Section):
    """Fine-tune a student on `messages` data with assistant-only loss."""

    model: str | None = Field(None, description="student: a local path or hub name of a causal LM")
    data: str | None = Field(
        None,
        description="'messages' data: JSONL, Parquet, a saved HF dataset dir, or hf:NAME[:SPLIT]",
    )
    eval_data: str | None = Field(
        None, description="held-out data for eval loss; default: eval_fraction of data"
    )
    eval_fraction: float = Field(
        0.02, ge=0, lt=1, description="held-out share of data when eval_data is unset"
    )
    output_dir: str = Field("runs/train", description="checkpoints, adapter, merged model, metrics")
    chat_template: str | None = Field(
        None, description="a .jinja chat template file; default: the tokenizer's"
    )
    stop_token: str | None = Field(
        None,
        description="end-of-turn token; default: derived from the chat template (the first "
        "special token after a probe answer)",
    )
    history_rewrite: Literal["split", "error"] = Field(
        "split",
        description="a template that renders earlier turns differently once later turns follow "
        "(Qwen3, DeepSeek-R1 drop reasoning): split such a conversation into one example per "
        "assistant turn, each as at inference, or stop with an error",
    )
    signal_check: bool = Field(
        True,
        description="before the model loads, check every example's context and supervised "
        "tokens against inference-time rendering and tokenization; stop at the first fault",
    )
    max_length: int = Field(
        2048, ge=16, le=1_048_576, description="tokens per example (and per packed row)"
    )
    packing: bool = Field(
        True, description="global best-fit-decreasing packing; examples never attend to each other"
    )
    on_empty_example: Literal["error", "drop"] = Field(
        "error",
        description="an example with no supervised token: stop with an error, or drop and count it",
    )
    mode: Literal["lora", "qlora", "full"] = Field(
        "lora", description="LoRA adapters, 4-bit QLoRA (GPU), or full"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps for linear warmup")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    epochs: float = Field(1.0, gt=0, description="passes over the data")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: use epochs)")
    batch_size: int = Field(
        4, ge=1, description="packed rows (or examples) per device per micro-batch"
    )
    grad_accum: int = Field(4, ge=1, description="micro-batches per optimizer step")
    seed: int = Field(42, description="random seed")
    bf16: bool | None = Field(
        None, description="bf16 mixed precision; default: on when a CUDA GPU supports it"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations to save memory")
    liger_kernels: bool = Field(
        False, description="use Liger fused kernels (GPU, needs liger-kernel)"
    )
    attn_implementation: str | None = Field(
        None,
        description="'sdpa', 'eager', 'flash_attention_2'; default: flash-attn 2 on a GPU if installed, else sdpa",
    )
    logging_steps: int = Field(10, ge=1, description="log every N optimizer steps")
    save_steps: int = Field(500, ge=1, description="checkpoint every N optimizer steps")
    eval_steps: int | None = Field(
        None, ge=1, description="evaluate every N steps (default: at the end)"
    )
    eval_batch_size: int | None = Field(
        None, ge=1, description="rows per device per eval batch (default: batch_size)"
    )
    resume: bool = Field(
        True, description="continue from the last checkpoint in output_dir if there is one"
    )
    merge: bool = Field(
        True, description="also save the adapter merged into the base model (LoRA, QLoRA)"
    )
