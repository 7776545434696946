"""Cost of the pre-flight signal check: `training.data.prepare` on the same conversations
with `signal_check=False` (masking and packing alone) and `True`, in one process, each run
twice alternating (the faster of each kept). Prints both times and their ratio.

Conversations are synthetic (1-3 assistant turns, log-normal answer lengths, median ~120
words, some with code indentation); the tokenizer is a byte-level BPE trained on the spot
with one of the test chat templates (tests/chat_templates/), so nothing is downloaded.

    .venv/bin/python bench/signal_check.py [--examples 10000] [--family chatml|qwen3|...]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers' batch calls on one core
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillery.training.config import TrainConfig  # noqa: E402
from distillery.training.data import prepare  # noqa: E402
from distillery.training.masking import end_of_turn  # noqa: E402

from tests.tiny_models import FAMILIES, build_tokenizer  # noqa: E402

WORDS = [
    "the",
    "sea",
    "sky",
    "blue",
    "wide",
    "poem",
    "fox",
    "dog",
    "quick",
    "lazy",
    "brown",
    "capital",
    "france",
    "paris",
    "explain",
]


def text(rng: random.Random, words: int) -> str:
    out = " ".join(rng.choice(WORDS) for _ in range(words))
    if rng.random() < 0.2:  # code with indentation
        out += "\n\ndef f(x):\n    if x:\n        return x\n    return 0\n"
    return out


def conversations(n: int, seed: int = 0) -> list[tuple[str, list[dict[str, Any]]]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        messages: list[dict[str, Any]] = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": text(rng, 8)})
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            messages.append({"role": "user", "content": text(rng, rng.randint(5, 60))})
            words = min(1500, int(rng.lognormvariate(4.8, 0.7)))
            messages.append({"role": "assistant", "content": text(rng, words)})
        rows.append((f"bench:{i}", messages))
    return rows


def timed(config: TrainConfig, rows: list[Any], tokenizer: Any, end: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    _, stats = prepare(config, rows, tokenizer, None, end)
    return time.perf_counter() - started, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--family", default="chatml", choices=sorted(FAMILIES))
    args = parser.parse_args()
    tokenizer = build_tokenizer(args.family)
    end = end_of_turn(tokenizer, None)
    rows = conversations(args.examples)
    config = TrainConfig(model="bench", max_length=8192, packing=True)
    best = {False: float("inf"), True: float("inf")}
    stats = None
    for _ in range(2):
        for check in (False, True):
            wall, got = timed(
                config.model_copy(update={"signal_check": check}), rows, tokenizer, end
            )
            best[check] = min(best[check], wall)
            stats = got if check else stats
    assert stats is not None
    print(
        f"{args.examples:,} conversations ({args.family}), {stats.examples:,} examples, "
        f"{stats.tokens:,} tokens, {stats.signal_checked_turns:,} turns checked, "
        f"{stats.split_conversations:,} split (+{stats.split_extra_tokens:,} tokens), "
        f"{stats.signal_boundary_merges:,} boundary merges"
    )
    print(
        f"masking + packing alone: {best[False]:.2f} s ({1e3 * best[False] / len(rows):.2f} ms/conv)"
    )
    print(
        f"with the signal check:   {best[True]:.2f} s ({1e3 * best[True] / len(rows):.2f} ms/conv)"
    )
    print(f"ratio: {best[True] / best[False]:.2f}x")


if __name__ == "__main__":
    main()
