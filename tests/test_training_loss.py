"""Loss normalisation for students whose model class declares `accepts_loss_kwargs = False`
(some multimodal-backbone causal LMs, e.g. Gemma-3n/Gemma-4 through AutoModelForCausalLM):
the Trainer then neither counts `num_items_in_batch` nor treats the loss as scaled for
gradient accumulation, and would average per micro-batch. distillery counts the supervised
tokens of the accumulation window itself; the gradients of 4x1, 1x4 and 2x2 must agree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tests.tiny_models import build_tiny_lm


class NoLossKwargsConfig(LlamaConfig):
    model_type = "llama_no_loss_kwargs"


class NoLossKwargsLlama(LlamaForCausalLM):
    """The tiny Llama, declaring (like Qwen3-VL, GLM-4V, Gemma-3n-style wrappers) that its
    forward takes no loss kwargs such as `num_items_in_batch`."""

    config_class = NoLossKwargsConfig
    accepts_loss_kwargs = False


def register() -> None:
    """Make `AutoModelForCausalLM` load NoLossKwargsLlama (idempotent; also used by workers)."""
    if NoLossKwargsConfig.model_type not in AutoConfig.for_model.__globals__["CONFIG_MAPPING"]:
        AutoConfig.register(NoLossKwargsConfig.model_type, NoLossKwargsConfig)
        AutoModelForCausalLM.register(NoLossKwargsConfig, NoLossKwargsLlama)


def build_no_loss_kwargs_lm(directory: Path) -> Path:
    """The tiny chatml Llama, saved as a NoLossKwargsLlama (same weights, same tokenizer)."""
    register()
    shutil.copytree(build_tiny_lm(directory.parent / "plain"), directory)
    cfg = json.loads((directory / "config.json").read_text())
    cfg["model_type"] = NoLossKwargsConfig.model_type
    cfg["architectures"] = [NoLossKwargsLlama.__name__]
    (directory / "config.json").write_text(json.dumps(cfg))
    return directory


@pytest.fixture(scope="module")
def odd_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_no_loss_kwargs_lm(tmp_path_factory.mktemp("odd") / "no-loss-kwargs")


def test_the_tiny_model_class_declares_no_loss_kwargs(odd_lm: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(odd_lm))
    assert type(model) is NoLossKwargsLlama and model.accepts_loss_kwargs is False


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_accumulation_invariance_without_loss_kwargs(
    odd_lm: Path, tmp_path: Path, packing: bool
) -> None:
    from tests.test_training import _grads_after_one_step

    g1, l1 = _grads_after_one_step(odd_lm, tmp_path / "a", batch=4, accum=1, packing=packing)
    g2, l2 = _grads_after_one_step(odd_lm, tmp_path / "b", batch=1, accum=4, packing=packing)
    g3, l3 = _grads_after_one_step(odd_lm, tmp_path / "c", batch=2, accum=2, packing=packing)
    assert g1 and set(g1) == set(g2) == set(g3)
    for name in g1:
        assert torch.allclose(g1[name], g2[name], atol=1e-6, rtol=1e-4), name
        assert torch.allclose(g1[name], g3[name], atol=1e-6, rtol=1e-4), name
    assert abs(l1 - l2) < 1e-4 and abs(l1 - l3) < 1e-4


def test_a_training_micro_batch_without_the_window_count_is_refused(
    odd_lm: Path, tmp_path: Path
) -> None:
    from distillery.training.config import TrainConfig
    from distillery.training.data import load_tokenizer, prepare
    from distillery.training.train import build_trainer

    from tests.test_training import conversations

    config = TrainConfig(model=str(odd_lm), mode="full", packing=False, output_dir=str(tmp_path))
    tokenizer, template, end = load_tokenizer(config)
    rows, _ = prepare(config, conversations(4), tokenizer, template, end)
    trainer = build_trainer(config, rows, None, tokenizer)
    assert trainer.model_accepts_loss_kwargs is False  # the Trainer alone would not count
    batches = [trainer.data_collator(rows[:2]), trainer.data_collator(rows[2:])]
    _, count = trainer.get_batch_samples(iter(batches), 2, torch.device("cpu"))
    supervised = sum(sum(x != -100 for x in r["labels"][1:]) for r in rows)
    assert int(count) == supervised  # the whole window, not one micro-batch
    trainer.model.train()
    with pytest.raises(RuntimeError, match="refusing to average the loss per micro-batch"):
        trainer.compute_loss(trainer.model, dict(batches[0]), num_items_in_batch=None)


@pytest.mark.slow
def test_two_processes_agree_with_one_without_loss_kwargs(odd_lm: Path, tmp_path: Path) -> None:
    """Across processes too: 1 process x 4 rows and 2 processes x 1 row x 2 accumulation
    steps give the same loss and gradients (the count is gathered over processes)."""
    import subprocess
    import sys

    from tests.test_training import ROOT, _torchrun

    worker = str(ROOT / "tests" / "train_worker.py")
    flags = ["--model", str(odd_lm), "--rows", "4", "--packing", "--no-loss-kwargs"]
    one = subprocess.run(
        [sys.executable, worker, *flags, "--batch", "4", "--out", str(tmp_path / "one.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    _torchrun(worker, *flags, "--batch", "1", "--accum", "2", "--out", str(tmp_path / "two.pt"))
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert abs(a["loss"] - b["loss"]) < 1e-4
    assert a["grads"] and set(a["grads"]) == set(b["grads"])
    for name, grad in a["grads"].items():
        assert torch.allclose(grad, b["grads"][name], atol=1e-6, rtol=1e-4), name
