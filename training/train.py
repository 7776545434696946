"""`distillery train`: prepare (mask + pack) -> TRL `SFTTrainer` with PEFT -> adapter, merged
model and metrics, in an output directory a re-run can trust.

distillery owns the data preparation (assistant-only labels from the chat template, global
best-fit-decreasing packing) and hands TRL a tokenized dataset (`skip_prepare_dataset`).
The trainer (`distillery.training.trainer`) normalises the loss over the supervised tokens of
the whole accumulation window and every process, whatever the model class declares, and
counts tokens exactly.

The output directory is a `distillery.runstate.RunDir` (rank 0 only): the same command
resumes from the last complete checkpoint, a finished run does nothing, and different
settings or inputs stop with one line naming what differs (`--restart` moves the old outputs
aside). `metrics.json` covers every step of the run across invocations.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

from distillery.config import save_resolved_config
from distillery.errors import UserError
from distillery.jsonl import atomic_write_text
from distillery.runstate import RunDir
from distillery.training.config import TrainConfig
from distillery.training.data import (
    PrepStats,
    load_tokenizer,
    save_prepared,
)
from distillery.training.masking import EndOfTurn
from distillery.training.metrics import PEAK_FLOPS, run_metrics, training_flops
from distillery.training.mix import Mix, heldout_metrics, load_mix, prepare_eval, prepare_train
from distillery.training.report import write_train_report
from distillery.training.runinfo import (
    check_paths,
    invocations,
    is_main_process,
    last_complete_checkpoint,
    open_run,
    train_identity,
)
from distillery.training.trainer import (
    PackedRowsCollator,
    counts_at,
    log_windows_callback,
    trainer_class,
)

__all__ = [
    "PEAK_FLOPS",
    "PackedRowsCollator",
    "build_trainer",
    "last_complete_checkpoint",
    "run_train",
    "training_flops",
]


def _write_eval_split(path: Path, mix: Mix) -> None:
    """The held-out rows, each with the name of the source it came from."""
    rows = (json.dumps({"messages": m, "source": name}) + "\n" for name, (_, m) in mix.held_out)
    atomic_write_text(path, "".join(rows))


def _default_attention(cuda: bool) -> str:
    """flash-attention 2 on a GPU when installed (padding-free rows go in as varlen sequences),
    else SDPA (packed documents are then kept apart by a block-diagonal mask)."""
    return "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else "sdpa"


def resolved_precision(config: TrainConfig) -> tuple[bool, str]:
    """(bf16, attention implementation) as this machine resolves the config's defaults."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = config.bf16 if config.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    return bf16, config.attn_implementation or _default_attention(cuda)


def check_environment(config: TrainConfig) -> None:
    """Settings this machine cannot run, as one-line errors before anything is written."""
    import torch

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
    if resolved_precision(config)[0] and not cuda:
        raise UserError("bf16=true needs a GPU here; set bf16=false")


def training_arguments(config: TrainConfig, has_eval: bool, **overrides: Any) -> Any:
    """TRL's `SFTConfig` for this config. Creating it sets up the process group under
    torchrun (and, under DeepSpeed ZeRO-3, lets the model load already partitioned)."""
    import torch
    from trl import SFTConfig

    check_environment(config)
    bf16, attention = resolved_precision(config)
    # packed rows: flash-attention kernels take one flat padding-free sequence (no padding at
    # all); SDPA/eager would attend over the whole flattened batch (quadratic in batch x
    # max_length), so there each packed row stays its own batch row
    args: dict[str, Any] = dict(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size,
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
        padding_free=config.packing and attention.startswith("flash"),
        remove_unused_columns=False,
        max_length=None,
        eval_strategy="steps" if (has_eval and config.eval_steps) else "no",
        eval_steps=config.eval_steps,
        prediction_loss_only=True,  # eval needs the loss only: no extra forward for logits
        save_only_model=False,
        use_cpu=not torch.cuda.is_available(),  # also makes torchrun on CPU use gloo DDP
    )
    args.update(overrides)
    return SFTConfig(**args)


def build_trainer(
    config: TrainConfig,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | dict[str, list[dict[str, Any]]] | None,
    tokenizer: Any,
    args: Any = None,
    **overrides: Any,
) -> Any:
    """The trainer for prepared rows; `args` from `training_arguments` (made here if None).
    Eval rows per source (a dict) are evaluated one source at a time (`eval_NAME_loss`)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    sft_config = (
        args if args is not None else training_arguments(config, bool(eval_rows), **overrides)
    )
    bf16, attention = resolved_precision(config)
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
    rows_collator = config.packing and not sft_config.padding_free
    return trainer_class()(
        model=model,
        args=sft_config,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=(
            {k: Dataset.from_list(v) for k, v in eval_rows.items()}
            if isinstance(eval_rows, dict)
            else Dataset.from_list(eval_rows)
            if eval_rows
            else None
        ),
        processing_class=tokenizer,
        data_collator=PackedRowsCollator(tokenizer.pad_token_id) if rows_collator else None,
        peft_config=peft_config,
        callbacks=[log_windows_callback()],
    )


def run_train(config: TrainConfig, prepare_only: bool = False, restart: bool = False) -> int:
    """Prepare, train, save. Every rank prepares the same rows (deterministic); only rank 0
    keeps the run directory's books and writes files; nothing is written before the inputs
    have loaded, and a run that fails before its work leaves no directory behind."""
    if not config.model or not config.data:
        raise UserError(
            "train needs --model PATH_OR_NAME and --data FILE (a 'messages' JSONL or dataset dir)"
        )
    out = Path(config.output_dir)
    check_paths(config, out)
    tokenizer, template, stop = load_tokenizer(config)
    bf16, attention = resolved_precision(config)
    effective_template = template or tokenizer.chat_template
    identity = train_identity(config, effective_template, bf16=bf16, attention=attention)
    mix = load_mix(config, prepare_only)  # the sources of data, held-out rows set aside
    if prepare_only:
        rows, stats = prepare_train(config, mix, tokenizer, template, stop)
        with open_run(out, identity, restart=restart, shared=False) as (run, _):
            if run is not None:
                _write_prepared(config, out, run, rows, stats, tokenizer)
        return 0
    args = training_arguments(config, mix.has_eval)
    _ = args.device  # sets up the process group under torchrun: ranks can now agree
    with open_run(out, identity, restart=restart) as (run, finished):
        if finished:
            _say_finished(out, run, finished)
            return 0
        rows, stats = prepare_train(config, mix, tokenizer, template, stop)
        eval_rows = prepare_eval(config, mix, tokenizer, template, stop)
        trainer = build_trainer(config, rows, eval_rows, tokenizer, args=args)
        if run is not None:
            save_resolved_config(config, out)
            if mix.held_out:  # the held-out rows and their sources, for `distillery eval`
                _write_eval_split(out / "eval_split.jsonl", mix)
        try:
            metrics, current = _train(config, trainer, out, stats)
        except BaseException:  # a crash or Ctrl-C: the invocation line says how far it got
            if run is not None:
                run.record(last_step=trainer.state.global_step)
            raise
        _save_models(config, trainer, tokenizer, out, bf16=bool(trainer.args.bf16), stop=stop)
        if run is not None:
            _finish(run, out, metrics, current)
        shut_down(trainer)
    return 0


def _write_prepared(
    config: TrainConfig,
    out: Path,
    run: RunDir,
    rows: list[dict[str, Any]],
    stats: PrepStats,
    tokenizer: Any,
) -> None:
    """`--prepare-only`: the resolved config, the prepared rows, their stats and the label
    preview (`label_preview.html`: the first examples with supervised tokens highlighted)."""
    from distillery.training.preview import write_label_preview

    save_resolved_config(config, out)
    target = save_prepared(rows, stats, out)
    summary = write_label_preview(stats.samples, tokenizer, out / "label_preview.html", n=8)
    run.record(prepare_only=True)
    print(f"prepared {stats.rows:,} rows from {stats.examples:,} examples -> {target}")
    print(json.dumps(stats.as_dict(), indent=1))
    print(summary)


def _say_finished(out: Path, run: RunDir | None, finished: dict[str, Any]) -> None:
    import torch.distributed as dist

    if run is not None:
        run.record(already_finished=True)
        print(
            f"{out}: already finished ({finished.get('steps', '?')} steps, same settings and "
            "inputs); nothing to do (--restart trains again, moving the old outputs aside)",
            flush=True,
        )
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _train(
    config: TrainConfig, trainer: Any, out: Path, stats: PrepStats
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resume from the last complete checkpoint (if any), train, evaluate; (metrics, this
    invocation's counters)."""
    main = is_main_process()
    last = last_complete_checkpoint(out, report=main) if config.resume else None
    first_step = 0
    if last:
        first_step = json.loads((Path(last) / "trainer_state.json").read_text())["global_step"]
        trainer.counts_before = counts_at(last)
        if main:
            print(f"resuming from {last}")
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=last)
    wall = time.monotonic() - started
    metrics = run_metrics(trainer, stats, wall)
    if last and trainer.counts_before is None:
        metrics["token_counts_from_step"] = first_step  # the checkpoint carried no counts
    now = metrics.pop("_this_invocation")
    if trainer.eval_dataset is not None:  # token-weighted: independent of the eval batch size
        metrics.update(heldout_metrics(trainer.evaluate(), metrics["data_mix"]))
    current = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - wall)),
        "exit_code": 0,
        "resumed_from": Path(last).name if last else None,
        "first_step": first_step,
        "last_step": result.global_step,
        "tokens": int(now["tokens"]),
        "supervised_tokens": int(now["supervised_tokens"]),
        "train_wall_s": round(wall, 2),
    }
    return metrics, current


def _finish(run: RunDir, out: Path, metrics: dict[str, Any], current: dict[str, Any]) -> None:
    """Rank 0: metrics.json with every invocation, this invocation's counters, the marker."""
    metrics["invocations"] = invocations(run, current)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    write_train_report(out)
    print(json.dumps(metrics, indent=1))
    run.record(**{k: v for k, v in current.items() if k not in ("started", "exit_code")})
    run.mark_finished({"steps": metrics["steps"], "train_loss": metrics["train_loss"]})


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


def end_of_turn_ids(tokenizer: Any, stop: EndOfTurn | None) -> list[int]:
    """The special tokens of the end-of-turn text the student was trained to write (e.g.
    `<|im_end|>`, Phi-3's `<|end|>`), which generation must stop on."""
    if stop is None:
        return []
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    ids = tokenizer(stop.text, add_special_tokens=False)["input_ids"]
    return [i for i in ids if i in special][:1]


def _stop_on_end_of_turn(directory: Path, ids: list[int]) -> None:
    """Add the end-of-turn token to the saved generation config's eos ids, so `generate`
    (transformers, vLLM, TGI read it) stops where the student ends its turn, not at the
    tokenizer's eos only (which Phi-3- and ChatML-on-a-base-model students never write)."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(str(directory))
    except OSError:
        gen = GenerationConfig()
    eos = gen.eos_token_id
    current = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    merged = current + [i for i in ids if i not in current]
    if merged != current:
        gen.eos_token_id = merged
        gen.save_pretrained(str(directory))


def _save_models(
    config: TrainConfig,
    trainer: Any,
    tokenizer: Any,
    out: Path,
    bf16: bool,
    stop: EndOfTurn | None = None,
) -> None:
    """Full: the model. LoRA/QLoRA: the adapter, and (merge=true) the base model reloaded
    in bf16/fp32 with the adapter merged in - also right for QLoRA (no 4-bit merge) and for
    sharded (FSDP/ZeRO-3) runs, since it reads the saved adapter, not the live model. Saved
    models stop generating at the end-of-turn token they were trained on."""
    target = out / ("model" if config.mode == "full" else "adapter")
    if getattr(trainer, "is_fsdp_enabled", False):
        # checkpoints stay sharded (fast, resumable); under SHARDED_STATE_DICT the Trainer's
        # save_model writes no weights at all, so the final save gathers a full state dict
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(target))  # every rank: gathers sharded weights, rank 0 writes
    trainer.accelerator.wait_for_everyone()
    if not is_main_process():
        return
    tokenizer.save_pretrained(str(target))
    stop_ids = end_of_turn_ids(tokenizer, stop)
    if config.mode == "full":
        _stop_on_end_of_turn(target, stop_ids)
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
    _stop_on_end_of_turn(staging, stop_ids)
    final = out / "merged"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
