"""`distillery train` settings."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from distillery.config import Section
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError


class LoraSettings(Section):
    """PEFT LoRA / QLoRA adapters."""

    r: int = Field(16, ge=1, le=1024, description="adapter rank")
    alpha: int = Field(32, ge=1, description="scaling numerator (alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: str | list[str] = Field(
        "all-linear", description="modules to adapt; 'all-linear' = every linear layer"
    )


class DataSource(Section):
    """One source of a training mix (`data: [{path: ...}, ...]`).

    How much of it trains, in conversations (before masking; a conversation a history-rewriting
    template splits still counts once): `rows: N` takes exactly N, `weight: W` takes W times the
    source's size (0.3: a seeded 30% sample; 2: every row twice; 1.5: every row once plus a
    seeded half); neither: every row once. Counts above the source's size repeat every row
    before sampling the rest. Sampling is seeded by `seed` and the source's path, after the
    held-out rows (eval_fraction) are set aside, so a held-out row never trains.
    """

    path: str = Field(
        description="'messages' data: JSONL (a distillery run's kept.jsonl / generated.jsonl), "
        "Parquet, a saved HF dataset dir, a filter or generate run dir, or hf:NAME[:SPLIT]"
    )
    rows: int | None = Field(None, ge=1, description="take exactly this many conversations")
    weight: float | None = Field(
        None, gt=0, description="take weight x the source's size in conversations (default 1)"
    )
    name: str | None = Field(
        None, description="label in metrics.json and eval_split.jsonl (default: from the path)"
    )

    @model_validator(mode="after")
    def _one_amount(self) -> DataSource:
        if self.rows is not None and self.weight is not None:
            raise ValueError("give rows or weight, not both")
        return self


def _source_error(i: int, exc: ValidationError) -> PydanticCustomError:
    """A mix entry's first problem as one line naming `data[i].KEY`."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    key = f"data[{i}]" + (f".{loc}" if loc else "")
    if first["type"] == "extra_forbidden":
        allowed = list(DataSource.model_fields)
        hint = difflib.get_close_matches(str(first["loc"][-1]), allowed, n=1)
        msg = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        msg += f"; allowed: {', '.join(allowed)}"
    else:
        msg = first["msg"].removeprefix("Value error, ")
    return PydanticCustomError("data_source", "{key}: {msg}", {"key": key, "msg": msg})


class TrainConfig(Section):
    """Fine-tune a student on `messages` data with assistant-only loss."""

    model: str | None = Field(None, description="student: a local path or hub name of a causal LM")
    data: str | list[DataSource] | None = Field(
        None,
        description="'messages' data: JSONL, Parquet, a saved HF dataset dir, or hf:NAME[:SPLIT]; "
        "or a mix: a list of {path, rows or weight, name} (see docs/train.md)",
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

    @field_validator("data", mode="before")
    @classmethod
    def _mix_entries(cls, value: Any) -> Any:
        """A mix's entries validated one by one, so a problem names `data[i].KEY` (the union
        with the single-path form would otherwise report the string branch first)."""
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise PydanticCustomError(
                "data_source", "data: expected a path or a list of sources ({path, rows | weight})"
            )
        if not value:
            raise PydanticCustomError("data_source", "data: an empty mix; give at least one source")
        out = []
        for i, entry in enumerate(value):
            if isinstance(entry, str):  # `data: [a.jsonl, b.jsonl]`: every row of each
                entry = {"path": entry}
            try:
                out.append(DataSource.model_validate(entry))
            except ValidationError as exc:
                raise _source_error(i, exc) from None
        return out
