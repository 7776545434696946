"""The training signal survives the trainer: the labels that reach the loss are the prepared
labels (padded and packed layouts), the saved adapter / merged / full model reloads to the
in-memory model's logits, and `eval_loss` is token-weighted like `distillery eval loss`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from distillery.training.config import TrainConfig
from distillery.training.data import load_tokenizer, prepare

from tests.test_training import conversations, run_cli, write_data
from tests.tiny_models import build_tiny_lm


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "chatml")


def _config(lm: Path, tmp: Path, **fields: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        model=str(lm),
        mode="full",
        batch_size=2,
        grad_accum=1,
        epochs=1,
        learning_rate=5e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_length=128,
        output_dir=str(tmp),
        save_steps=1000,
        logging_steps=1,
    )
    return TrainConfig(**{**base, **fields})


def _spy_on_the_loss(trainer: Any) -> list[dict[str, torch.Tensor]]:
    """Record every training batch exactly as `compute_loss` receives it."""
    seen: list[dict[str, torch.Tensor]] = []
    inner = trainer.compute_loss

    def spy(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if model.training:
            seen.append({k: v.detach().clone() for k, v in inputs.items()})
        return inner(model, inputs, *args, **kwargs)

    trainer.compute_loss = spy
    return seen


@pytest.mark.parametrize(
    "layout", ["padded", "packed", "packed+liger"], ids=["padded", "packed", "liger"]
)
def test_the_labels_that_reach_the_loss_are_the_prepared_labels(
    lm: Path, tmp_path: Path, layout: str
) -> None:
    from distillery.training.train import build_trainer

    liger = layout.endswith("liger")
    if liger and not (torch.cuda.is_available() and importlib.util.find_spec("liger_kernel")):
        pytest.skip("Liger kernels run on a CUDA GPU with liger-kernel installed")
    config = _config(lm, tmp_path, packing=layout != "padded", liger_kernels=liger)
    tokenizer, template, end = load_tokenizer(config)
    rows, _ = prepare(config, conversations(11, seed=3), tokenizer, template, end)
    trainer = build_trainer(config, rows, None, tokenizer, save_strategy="no")
    seen = _spy_on_the_loss(trainer)
    trainer.train()  # one epoch: every prepared row reaches the loss once
    pad = tokenizer.pad_token_id
    reached = []
    for batch in seen:
        for r in range(batch["labels"].size(0)):
            ids, labels = batch["input_ids"][r].tolist(), batch["labels"][r].tolist()
            n = int(batch["attention_mask"][r].sum()) if "attention_mask" in batch else len(ids)
            if "doc_lengths" not in batch and "attention_mask" in batch:
                assert batch["attention_mask"][r].tolist() == [1] * n + [0] * (len(ids) - n)
            reached.append((ids[:n], labels[:n], ids[n:], labels[n:]))
    assert len(reached) == len(rows)
    for row in rows:
        k = len(row["input_ids"])
        match = [x for x in reached if x[0][:k] == row["input_ids"]]
        assert match, "a prepared row never reached the loss"
        ids, labels, pad_ids, pad_labels = match[0]
        assert labels[:k] == row["labels"]  # exactly the prepared supervision
        # whatever follows (row-end padding) is padding and never supervised
        assert set(ids[k:] + pad_ids) <= {pad} and set(labels[k:] + pad_labels) <= {-100}
        reached.remove(match[0])


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_the_saved_model_reloads_to_the_in_memory_logits(
    lm: Path, tmp_path: Path, mode: str
) -> None:
    from distillery.training.train import _save_models, build_trainer
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    config = _config(lm, tmp_path, mode=mode, max_steps=4, packing=False)
    tokenizer, template, end = load_tokenizer(config)
    rows, _ = prepare(config, conversations(8, seed=4), tokenizer, template, end)
    trainer = build_trainer(config, rows, None, tokenizer, save_strategy="no")
    trainer.train()
    _save_models(config, trainer, tokenizer, tmp_path, bf16=False)
    n = min(len(r["input_ids"]) for r in rows[:2])
    ids = torch.tensor([r["input_ids"][:n] for r in rows[:2]])

    def logits(model: Any) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model(input_ids=ids, use_cache=False).logits.float()

    live = logits(trainer.model)
    base = logits(AutoModelForCausalLM.from_pretrained(str(lm)))
    assert not torch.allclose(live, base, atol=1e-3)  # training changed the model
    if mode == "full":
        reloaded = [AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))]
    else:
        reloaded = [
            AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter")),
            AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")),
        ]
    for model in reloaded:
        assert torch.allclose(logits(model), live, atol=1e-5)


def test_eval_loss_is_token_weighted_whatever_the_eval_batch_size(lm: Path, tmp_path: Path) -> None:
    """metrics.json's eval_loss: the same for eval batches of 1 and 4 rows, and equal to
    `distillery eval loss` (training/heldout.py) on the saved model and the held-out split."""
    from distillery.training.heldout import heldout_loss

    data = write_data(tmp_path / "d.jsonl", conversations(40, seed=6))
    common = ("mode=full", "max_steps=2", "batch_size=2", "eval_fraction=0.25")
    metrics = {}
    for size in (1, 4):
        out = tmp_path / f"eval{size}"
        assert run_cli(lm, data, out, *common, f"eval_batch_size={size}") == 0
        metrics[size] = json.loads((out / "metrics.json").read_text())
    assert metrics[1]["eval_loss"] == pytest.approx(metrics[4]["eval_loss"], abs=1e-6)
    assert metrics[1]["eval_supervised_tokens"] == metrics[4]["eval_supervised_tokens"] > 0
    out = tmp_path / "eval4"
    heldout = heldout_loss(str(out / "model"), str(out / "eval_split.jsonl"), max_length=256)
    assert heldout["supervised_tokens"] == metrics[4]["eval_supervised_tokens"]
    assert metrics[4]["eval_loss"] == pytest.approx(heldout["loss"], abs=1e-5)
