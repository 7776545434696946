"""One optimizer step of `build_trainer` on fixed rows, for comparing process layouts.

Run alone (`python tests/train_worker.py ...`) or under `accelerate launch --cpu
--num_processes N`; the main process writes the step's loss and the (all-reduced)
gradients to OUT. The tests compare one process with batch B against N processes with
batch B/N: the loss must be averaged over supervised tokens of the whole global batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from distillery.training.config import TrainConfig
from distillery.training.data import load_tokenizer, prepare
from distillery.training.train import build_trainer, shut_down
from transformers import TrainerCallback

from tests.test_training import conversations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--packing", action="store_true")
    parser.add_argument(
        "--no-loss-kwargs", action="store_true", help="the model is a NoLossKwargsLlama"
    )
    args = parser.parse_args()
    if args.no_loss_kwargs:
        from tests.test_training_loss import register

        register()
    config = TrainConfig(
        model=args.model,
        mode="full",
        batch_size=args.batch,
        grad_accum=args.accum,
        max_steps=1,
        learning_rate=1e-9,
        warmup_ratio=0.0,
        packing=args.packing,
        max_length=64 if args.packing else 512,
        output_dir=str(Path(args.out).parent / "trainer"),
        save_steps=1000,
        logging_steps=1,
    )
    tokenizer, template, stop = load_tokenizer(config)
    rows, _ = prepare(config, conversations(24, seed=5), tokenizer, template, stop)
    rows = rows[: args.rows]  # one global batch: every layout sees the same examples
    grads: dict[str, torch.Tensor] = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            for name, p in kw["model"].named_parameters():
                if p.grad is not None:
                    grads[name.removeprefix("module.")] = p.grad.detach().clone()

    trainer = build_trainer(config, rows, None, tokenizer, max_grad_norm=0.0, save_strategy="no")
    trainer.add_callback(Capture())
    trainer.train()
    if trainer.is_world_process_zero():
        torch.save(
            {
                "grads": grads,
                "loss": trainer.state.log_history[0]["loss"],
                "world_size": trainer.args.world_size,
            },
            args.out,
        )
    shut_down(trainer)  # as `distillery train` does: no rank exits with the group alive


if __name__ == "__main__":
    main()
