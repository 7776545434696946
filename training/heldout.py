"""Held-out loss and perplexity with the training stage's own masking (assistant tokens only).

The supervised tokens are the training stage's, from the same derivation: each assistant
turn as the template renders it at inference, through the template's end-of-turn text
(derived from the template, not the eos), so no user or system token is ever scored.

The loss is the mean negative log-likelihood over every supervised token of the set (not a
mean of per-batch means), so it is comparable across batch sizes and with training's loss.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.jsonl import atomic_write_text
from distillery.training.config import TrainConfig
from distillery.training.data import load_conversations, load_tokenizer, prepare


def heldout_loss(
    model_path: str,
    data: str,
    *,
    chat_template: str | None = None,
    stop_token: str | None = None,
    max_length: int = 2048,
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    config = TrainConfig(
        model=model_path,
        data=data,
        chat_template=chat_template,
        stop_token=stop_token,
        max_length=max_length,
        packing=False,
        on_empty_example="drop",
    )
    tokenizer, template, end = load_tokenizer(config)
    rows, stats = prepare(config, load_conversations(data), tokenizer, template, end)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(model_path)
    except OSError as exc:
        raise UserError(f"model {model_path!r}: cannot load: {str(exc).splitlines()[0]}") from None
    model.to(device)
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
            ).logits
        shift_logits = logits[:, :-1].float()
        shift_labels = labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)),
            shift_labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())
    if not total_tokens:
        raise UserError(f"{data}: no supervised token to evaluate")
    loss = total_nll / total_tokens
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50)),
        "supervised_tokens": total_tokens,
        "examples": stats.examples,
        "dropped_empty": stats.dropped_empty,
        "truncated_examples": stats.truncated_examples,
        "end_of_turn": stats.end_of_turn,
        "split_conversations": stats.split_conversations,
        "signal_checked_turns": stats.signal_checked_turns,
    }


def run_loss(
    model: str,
    data: str,
    output_dir: str,
    chat_template: str | None,
    max_length: int,
    stop_token: str | None = None,
) -> int:
    """`distillery eval loss`: held-out loss of MODEL on DATA, written to
    OUTPUT_DIR/heldout_loss.json (read by `distillery eval report`)."""
    result = heldout_loss(
        model, data, chat_template=chat_template, stop_token=stop_token, max_length=max_length
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "heldout_loss.json", json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0
