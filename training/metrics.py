"""What `metrics.json` reports about training: loss and tokens over every step of the run,
the loss curve (train and held-out, per source in a mix), model FLOPs, this invocation's
speed (tokens/s, MFU), the data mix as used, and whether any of it is demo data."""

from __future__ import annotations

from typing import Any

from distillery.training.data import PrepStats
from distillery.training.trainer import loss_over_steps

# dense bf16 peak FLOP/s of GPUs we can name, for MFU (tensor cores, no sparsity)
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
}


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


def loss_curve(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """[step, loss] points from the Trainer's log: `train` (each the mean over the steps
    since the previous log line), `eval` (held-out, over every held-out supervised token),
    and `eval_by_source` (`eval_KEY_loss` of a mix, one eval set per source)."""
    train, held_out = [], []
    by_source: dict[str, list[list[float]]] = {}
    for entry in sorted(log_history, key=lambda e: e.get("step", 0)):
        step = entry.get("step")
        if step is None:
            continue
        if "loss" in entry:
            train.append([step, float(entry["loss"])])
        for key, value in entry.items():
            if key == "eval_loss":
                held_out.append([step, float(value)])
            elif key.startswith("eval_") and key.endswith("_loss"):
                by_source.setdefault(key[len("eval_") : -len("_loss")], []).append(
                    [step, float(value)]
                )
    return {"train": train, "eval": held_out, "eval_by_source": by_source}


def demo_sources(data_mix: list[dict[str, Any]]) -> list[str]:
    """The sources of the mix that are demo data (made by the scripted `fake` teacher): a
    generate or filter run directory whose manifest.json / summary.json says `demo`, or a
    JSONL file of records with `"demo": true`. (Parquet and `hf:` sources are not read.)"""
    import json
    from pathlib import Path

    found = []
    for entry in data_mix:
        path = Path(str(entry.get("path", "")))
        files = [path / n for n in ("summary.json", "manifest.json")] if path.is_dir() else []
        flagged = any(
            f.is_file() and json.loads(f.read_text(encoding="utf-8")).get("demo") is True
            for f in files
        )
        rows = path / "kept.jsonl" if path.is_dir() else path
        if not flagged and rows.is_file() and rows.suffix == ".jsonl":
            flagged = _any_demo_row(rows)
        if flagged:
            found.append(str(entry.get("name", path)))
    return found


def _any_demo_row(path: Any) -> bool:
    """True when a row of the JSONL file carries `"demo": true` (a distillery record)."""
    import json

    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if '"demo"' not in line:  # cheap test first: most rows of real data lack the key
                continue
            try:
                if json.loads(line).get("demo") is True:
                    return True
            except ValueError:
                continue
    return False


def run_metrics(trainer: Any, stats: PrepStats, wall: float) -> dict[str, Any]:
    """Totals over every step of the run (loss, tokens, FLOPs) and this invocation's speed
    (under `_this_invocation`, its counts; wall_s, tokens/s and MFU are this invocation's)."""
    import torch

    now = trainer.token_counts()  # this invocation, summed over every rank
    total = trainer.total_counts()  # every step, including those before the resume
    model = trainer.accelerator.unwrap_model(trainer.model)
    flops, params = training_flops(model, total["tokens"], total["sum_sq_doc_lengths"])
    flops_now, _ = training_flops(model, now["tokens"], now["sum_sq_doc_lengths"])
    metrics: dict[str, Any] = {
        "train_loss": loss_over_steps(trainer.state.log_history),
        "steps": trainer.state.global_step,
        "supervised_tokens": int(total["supervised_tokens"]),
        "tokens": int(total["tokens"]),
        "model_tflops": flops / 1e12,
        "wall_s": round(wall, 2),
        "processes": trainer.args.world_size,
        "supervised_tokens_per_s": now["supervised_tokens"] / wall,
        "tokens_per_s": now["tokens"] / wall,
        "packing_fill": stats.packing_fill,
        "masked_fraction": stats.masked_fraction,
        "prep": {k: v for k, v in stats.as_dict().items() if k != "data_mix"},
        # per source: rows / weight asked, rows available and held out, conversations,
        # examples, tokens and supervised tokens per pass, shares (`training.mix.describe`)
        "data_mix": stats.data_mix,
        # the curve behind train_loss (and eval_loss, when eval_steps evaluates mid-run)
        "loss_curve": loss_curve(trainer.state.log_history),
        **params,
        "mfu_formula": (
            "model FLOPs / (wall_s * processes * peak dense bf16 FLOP/s); model FLOPs = "
            "(6 * trainable + 4 * frozen matmul params) * tokens + 6 * layers * width * "
            "sum(document_length^2)"
        ),
        "_this_invocation": now,
    }
    demo = demo_sources(stats.data_mix or [])
    metrics["is_demo"] = bool(demo)  # any training row is demo data: the report says so
    metrics["demo_sources"] = demo
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        metrics["gpu"] = name
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30  # rank 0's GPU
        if peak:
            metrics["mfu"] = flops_now / (wall * trainer.args.world_size * peak)
    else:
        import resource

        metrics["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return metrics
