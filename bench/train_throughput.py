"""Training throughput: TRL `SFTTrainer` defaults (padded batches) vs distillery's
configuration (global best-fit-decreasing packing, padding-free), same model, same
examples, one epoch each. Prints supervised tokens/s for both and their ratio, the
peak-memory ratio and, on a GPU, MFU (model FLOPs as in `training.train.training_flops`:
6 FLOPs per weight per token plus causal attention within each document, over peak dense bf16).

CPU: a tiny random Llama and a tokenizer trained on the spot (ratios only).
CUDA: a Llama-3.2-1B-shaped model initialised randomly from its config (no weights),
sequence length 2048, bf16, full fine-tuning.

    .venv/bin/python bench/train_throughput.py [--examples 256] [--packed-batch N] [--liger]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from distillery.training.packing import pack_examples  # noqa: E402
from distillery.training.train import PEAK_FLOPS, _default_attention, training_flops  # noqa: E402


def make_examples(n: int, max_len: int, vocab: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """Token-level examples with realistic length spread: a prompt (masked) then an answer."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        total = min(max_len, int(rng.lognormvariate(5.3, 0.8)) + 16)
        prompt = max(4, int(total * rng.uniform(0.2, 0.6)))
        ids = [rng.randrange(10, vocab) for _ in range(total)]
        labels = [-100] * prompt + ids[prompt:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def build_model(cuda: bool, tmp: Path) -> tuple[str, Any, int]:
    from transformers import LlamaConfig, LlamaForCausalLM

    if cuda:
        config = LlamaConfig(
            vocab_size=128256,
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            rope_theta=500000.0,
        )
        max_len = 2048
    else:
        config = LlamaConfig(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
        )
        max_len = 512
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp / "model")
    from tests.tiny_models import build_tokenizer

    tokenizer = build_tokenizer("chatml")
    tokenizer.save_pretrained(tmp / "model")
    return str(tmp / "model"), tokenizer, max_len


def run(
    model_path: str,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    packing: bool,
    batch: int,
    cuda: bool,
    out: Path,
    liger: bool = False,
) -> dict[str, float]:
    from distillery.training.config import TrainConfig
    from distillery.training.train import build_trainer

    config = TrainConfig(
        model=model_path,
        mode="full",
        packing=packing,
        batch_size=batch,
        grad_accum=1,
        epochs=1,
        output_dir=str(out),
        save_steps=10**9,
        logging_steps=10**6,
        bf16=cuda,
        attn_implementation=_default_attention(cuda) if packing else "sdpa",
        liger_kernels=liger,
    )
    trainer = build_trainer(config, rows, None, tokenizer, save_strategy="no", max_length=None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if cuda
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 2**20
    )
    counts = trainer.token_counts()
    flops, _ = training_flops(trainer.model, counts["tokens"], counts["sum_sq_doc_lengths"])
    attention = trainer.model.config._attn_implementation
    del trainer
    return {"seconds": seconds, "peak_gb": peak, "flops": flops, "attention": attention}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument(
        "--packed-batch",
        type=int,
        help="packed rows per micro-batch (default: 2 on CUDA, 4 on CPU)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (fastest kept)")
    parser.add_argument("--liger", action="store_true", help="distillery run with Liger kernels")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model_path, tokenizer, max_len = build_model(cuda, tmp)
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(model_path).vocab_size
        examples = make_examples(args.examples, max_len, vocab)
        supervised = sum(sum(1 for x in e["labels"] if x != -100) for e in examples)
        tokens = sum(len(e["input_ids"]) for e in examples)
        packed, fill = pack_examples(examples, max_len)
        default_batch = 8
        packed_batch = args.packed_batch or (2 if cuda else 4)
        print(
            f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}; {len(examples)} examples, {tokens:,} tokens, "
            f"{supervised:,} supervised; packed into {len(packed)} rows of {max_len} (fill {fill:.1%})"
        )
        # alternate the two and keep each one's fastest run: the first run in a process also
        # pays one-off warm-up costs (allocator, kernels), which must not favour either side
        runs: dict[str, list[dict[str, Any]]] = {"base": [], "ours": []}
        for i in range(args.repeats):
            runs["base"].append(
                run(model_path, tokenizer, examples, False, default_batch, cuda, tmp / f"trl{i}")
            )
            runs["ours"].append(
                run(
                    model_path,
                    tokenizer,
                    packed,
                    True,
                    packed_batch,
                    cuda,
                    tmp / f"o{i}",
                    args.liger,
                )
            )
        base, ours = (min(runs[k], key=lambda r: r["seconds"]) for k in ("base", "ours"))
        for name, r in (
            ("TRL defaults (padded, batch 8)", base),
            (f"distillery (packed, batch {packed_batch})", ours),
        ):
            line = (
                f"{name:<34} {r['seconds']:7.1f} s  {supervised / r['seconds']:10,.0f} "
                f"supervised tok/s  attention {r['attention']}"
            )
            if cuda:
                line += f"  peak {r['peak_gb']:.2f} GB"
            if cuda:
                peak = next(
                    (v for k, v in PEAK_FLOPS.items() if k in torch.cuda.get_device_name()), None
                )
                if peak:
                    line += f"  MFU {r['flops'] / r['seconds'] / peak:.1%}"
            print(line)
        memory = (
            f"{ours['peak_gb'] / max(base['peak_gb'], 1e-9):.2f}x"
            if cuda
            else "n/a on CPU (ru_maxrss only grows within one process)"
        )
        print(
            f"supervised tokens/s ratio (distillery / TRL defaults): {base['seconds'] / ours['seconds']:.2f}x; "
            f"peak memory ratio: {memory}"
        )


if __name__ == "__main__":
    main()
