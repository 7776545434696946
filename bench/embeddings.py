"""Embedding throughput and accuracy: `distillery.embeddings.embed` (length-sorted batches
under a token budget, on as many worker threads as torch has threads, one core per op)
against the previous implementation (one sentence-transformers `encode` call, batch 64,
torch's intra-op threads), the bundled all-MiniLM-L6-v2, on real instructions.

- Speed: every variant (path x torch threads) runs in this one process, alternating, `--reps`
  rounds; the best time of each is kept and compared with the previous path at the same
  thread count. Peak RSS per variant: the process's VmHWM, reset before each run
  (/proc/self/clear_refs), minus nothing (it includes the loaded model).
- Accuracy: 1,000 pairs of the sampled texts, 700 with a previous-path cosine in
  [0.85, 0.97] (around the semantic-dedup and decontamination thresholds of
  `distillery.filter.config`) and 300 at random; per pair, |cosine - previous cosine| and
  whether the new cosine falls on the other side of either threshold.
- `--bf16`: adds the new path under bf16 autocast (not used by the project: see the page).
- `--profile`: where the new path's time goes (tokenizer, linear layers, attention, other)
  and the fp32 matmul rate this machine reaches, which bounds the rows/s.

    OMP_NUM_THREADS=1 .venv/bin/python -u bench/embeddings.py [--rows 2000] [--reps 2]
        [--threads 1,2] [--bf16] [--profile] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillery import embeddings  # noqa: E402
from distillery.filter.config import DecontamConfig, SemanticConfig  # noqa: E402

from bench.shared_data import DATA, shared_rows  # noqa: E402

THRESHOLDS = {
    "semantic": SemanticConfig().threshold,
    "decontam": DecontamConfig().embedding_threshold or 0.9,
}


def sample_texts(n: int) -> list[str]:
    texts = [str(r.get("instruction") or r.get("prompt") or "") for r in shared_rows()]
    texts = [t for t in texts if t]
    return random.Random(0).sample(texts, min(n, len(texts)))


def previous(model: Any, texts: list[str]) -> np.ndarray:
    """The implementation before this change: one `encode` call, batch 64."""
    return np.asarray(
        model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False),
        dtype=np.float32,
    )


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def pairs_of(ref: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """700 pairs with a reference cosine in [0.85, 0.97] and 300 random pairs."""
    rng = np.random.default_rng(seed)
    iu = np.triu_indices(len(ref), 1)
    cos = np.einsum("ij,ij->i", ref[iu[0]], ref[iu[1]])
    near = np.flatnonzero((cos >= 0.85) & (cos <= 0.97))
    pick = np.concatenate(
        [rng.choice(near, min(700, len(near)), replace=False), rng.choice(len(cos), 300, False)]
    )
    return iu[0][pick], iu[1][pick]


def accuracy(ref: np.ndarray, new: np.ndarray, a: np.ndarray, b: np.ndarray) -> str:
    old_cos = np.einsum("ij,ij->i", ref[a], ref[b])
    new_cos = np.einsum("ij,ij->i", new[a], new[b])
    dev = np.abs(new_cos - old_cos)
    flips = {k: int(((new_cos >= t) != (old_cos >= t)).sum()) for k, t in THRESHOLDS.items()}
    near = {k: int((np.abs(old_cos - t) < 0.01).sum()) for k, t in THRESHOLDS.items()}
    return (
        f"{len(a)} pairs: |cos diff| max {dev.max():.2e}, mean {dev.mean():.2e}; flipped "
        + ", ".join(f"{k}@{THRESHOLDS[k]}: {flips[k]} of {near[k]} within 0.01" for k in flips)
    )


def bf16(model: object, texts: list[str]) -> np.ndarray:
    with torch.autocast("cpu", dtype=torch.bfloat16):  # thread-local: no worker threads
        return embeddings.embed(model, texts, workers=1)


def speed(model: object, texts: list[str], threads: list[int], reps: int, with_bf16: bool) -> None:
    """Alternating rounds of every variant; best time, ratio to `previous` at equal threads."""
    paths: dict[str, Callable[[object, list[str]], np.ndarray]] = {
        "previous": previous,
        "new": lambda m, t: embeddings.embed(m, t),
    }
    if with_bf16:
        paths["new-bf16"] = bf16
    best: dict[tuple[str, int], tuple[float, float]] = {}
    outputs: dict[str, np.ndarray] = {}
    for rep in range(reps):
        for t in threads:
            for name, fn in paths.items():
                torch.set_num_threads(t)
                reset_peak_rss()
                t0 = time.perf_counter()
                vecs = fn(model, texts)
                dt = time.perf_counter() - t0
                outputs.setdefault(name, vecs)
                print(f"  round {rep + 1} {name:<9} threads {t}: {dt:6.1f} s (load {load()})")
                if (name, t) not in best or dt < best[(name, t)][0]:
                    best[(name, t)] = (dt, peak_rss_mb())
    for (name, t), (dt, rss) in best.items():
        ratio = best[("previous", t)][0] / dt
        print(
            f"  {name:<9} threads {t}: {len(texts) / dt:6.1f} rows/s, "
            f"{ratio:.2f}x previous (same threads), peak RSS {rss:,.0f} MB"
        )
    a, b = pairs_of(outputs["previous"])
    for name in paths:
        if name != "previous":
            print(f"  accuracy {name}: {accuracy(outputs['previous'], outputs[name], a, b)}")


def profile(model: Any, texts: list[str]) -> None:
    """Where the new path's time goes at one thread, and the fp32 matmul bound."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    lengths = embeddings.token_lengths(model, texts)
    for idx in embeddings.length_batches(lengths, 64, embeddings.TOKEN_BUDGET):
        model.tokenizer([texts[i] for i in idx], padding=True, truncation=True)
    tokenizer_s = time.perf_counter() - t0
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        embeddings.embed(model, texts)
        total = time.perf_counter() - t0
    groups = {"linear": ("aten::addmm", "aten::mm"), "attention": ("scaled_dot_product",)}
    spent = dict.fromkeys(groups, 0.0)
    for ev in prof.key_averages():
        for g, names in groups.items():
            if any(n in ev.key for n in names):
                spent[g] += ev.self_cpu_time_total / 1e6
    linear_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    batches = embeddings.length_batches(lengths, 64, embeddings.TOKEN_BUDGET)
    padded = sum(len(i) * int(lengths[i].max()) for i in batches)
    flops = 2 * linear_params * padded
    print(
        f"  {len(texts)} rows, {lengths.sum():,} tokens ({padded / lengths.sum():.3f} padded/real), "
        f"{total:.1f} s (profiled): tokenizer {tokenizer_s / total:.0%}, linear "
        f"{spent['linear'] / total:.0%} ({flops / spent['linear'] / 1e9:.0f} GFLOP/s), attention "
        f"{spent['attention'] / total:.0%}, other "
        f"{1 - (tokenizer_s + spent['linear'] + spent['attention']) / total:.0%}"
    )
    x, w = torch.randn(1024, 384), torch.randn(1536, 384)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    t0 = time.perf_counter()
    for _ in range(50):
        torch.nn.functional.linear(x, w)
    rate = 50 * 2 * x.shape[0] * w.numel() / (time.perf_counter() - t0)
    per_row = 2 * linear_params * lengths.mean()
    print(
        f"  fp32 matmul (1024x384 @ 384x1536), 1 thread: {rate / 1e9:.0f} GFLOP/s -> at most "
        f"{rate / per_row:.0f} rows/s per core from the linear layers alone "
        f"({per_row / 1e9:.2f} GFLOP per row of {lengths.mean():.0f} tokens)"
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=2, help="alternating rounds (best kept)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to compare")
    parser.add_argument("--bf16", action="store_true", help="also the new path under bf16")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return
    texts = sample_texts(args.rows)
    model = embeddings.load_embedder(embeddings.BUNDLED, args.device)
    print(f"{len(texts)} instructions from {DATA}; load average at start {load()}")
    embeddings.embed(model, texts[:64])  # warm-up
    speed(model, texts, [int(t) for t in args.threads.split(",")], args.reps, args.bf16)
    if args.profile:
        profile(model, texts[:500])
    print(f"load average at end {load()}")


if __name__ == "__main__":
    main()
