"""Cost of a training run's identity (checked on every `distillery train` invocation).

Builds, in a temp dir, a model directory shaped like a 2-shard checkpoint (config, tokenizer,
index, two weight files of --weights-mib each, random bytes) and a `messages` JSONL of
--examples conversations; then times, median of --repeats:
- `model_identity(dir)` as used (small files by content, weight files by size + mtime),
- the same directory fully hashed (`runstate.file_digest`), the alternative rejected,
- `input_identity(data.jsonl)` (the training data, always hashed in full).

    .venv/bin/python bench/train_identity.py [--weights-mib 512] [--examples 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillery.runstate import file_digest, input_identity  # noqa: E402
from distillery.training.runinfo import model_identity  # noqa: E402


def _median_s(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights-mib", type=int, default=512)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "llama", "n": 1}))
        (model / "tokenizer.json").write_bytes(os.urandom(9 << 20))  # ~ a 150k-vocab tokenizer
        (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {}}))
        for shard in (1, 2):
            with (model / f"model-0000{shard}-of-00002.safetensors").open("wb") as fh:
                for _ in range(args.weights_mib):
                    fh.write(os.urandom(1 << 20))
        rng = random.Random(0)
        data = Path(tmp) / "data.jsonl"
        with data.open("w") as fh:
            for i in range(args.examples):
                answer = " ".join(str(rng.random()) for _ in range(60))
                msgs = [
                    {"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": answer},
                ]
                fh.write(json.dumps({"messages": msgs}) + "\n")
        gib = 2 * args.weights_mib / 1024
        rows = [
            (
                "model_identity (stat for weights)",
                _median_s(lambda: model_identity(str(model)), args.repeats),
            ),
            ("full sha256 of the model dir", _median_s(lambda: file_digest(model), args.repeats)),
            (
                f"input_identity(data, {data.stat().st_size / 2**20:.0f} MiB)",
                _median_s(lambda: input_identity(data), args.repeats),
            ),
        ]
        print(f"weights: {gib:.1f} GiB in 2 files; data: {args.examples:,} conversations")
        for name, seconds in rows:
            print(f"{name:45s} {seconds * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
