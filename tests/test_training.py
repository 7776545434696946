"""Training on CPU with a tiny random Llama: packing isolation, loss normalisation across
gradient accumulation, learning, every parameter changing, resume, prepare-only, bad input."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from distillery.cli import main
from distillery.errors import UserError
from distillery.training.config import TrainConfig
from distillery.training.data import load_tokenizer, prepare
from distillery.training.packing import best_fit_decreasing, pack_examples

from tests.tiny_models import build_tiny_lm

ROOT = Path(__file__).resolve().parent.parent

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
    "recursion",
]


def conversations(n: int, seed: int = 0) -> list[tuple[str, list[dict[str, str]]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 20)))
        out.append(
            (f"row{i}", [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
        )
    return out


def write_data(path: Path, convs: list[tuple[str, list[dict[str, str]]]]) -> Path:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for _, m in convs))
    return path


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "chatml")


def test_best_fit_decreasing_places_everything_once_and_fills() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(20, 400) for _ in range(2000)]
    packed = best_fit_decreasing(lengths, 1024)
    placed = sorted(i for row in packed.rows for i in row)
    assert placed == list(range(2000))
    assert all(sum(lengths[i] for i in row) <= 1024 for row in packed.rows)
    assert packed.fill >= 0.97
    with pytest.raises(ValueError):
        best_fit_decreasing([2000], 1024)


@pytest.mark.parametrize("collator", ["flat", "rows"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_packed_examples_do_not_see_each_other(lm: Path, impl: str, collator: str) -> None:
    """Both ways packed rows reach the model - TRL's flat padding-free sequence (used with
    flash-attention) and one batch row per packed row (SDPA/eager) - give every example
    exactly the logits it gets alone, and changing one example changes no other's."""
    from distillery.training.train import PackedRowsCollator
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    config = TrainConfig(model=str(lm), max_length=512)
    tokenizer, template, stop = load_tokenizer(config)
    examples, _ = prepare(
        config.model_copy(update={"packing": False}), conversations(7), tokenizer, template, stop
    )
    model = AutoModelForCausalLM.from_pretrained(str(lm), attn_implementation=impl).eval()
    collate = (
        DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
        if collator == "flat"
        else PackedRowsCollator(tokenizer.pad_token_id)
    )
    capacity = max(len(e["input_ids"]) for e in examples) * 2

    def logits_of(rows: list[dict[str, Any]]) -> list[list[torch.Tensor]]:
        """Per packed row, the logits of each of its examples."""
        batch = collate(rows)  # everything the trainer hands the model, as it hands it
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "doc_lengths")}
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits
        out, flat_at = [], 0
        for r, row in enumerate(rows):
            lengths = row.get("seq_lengths", [len(row["input_ids"])])
            at = flat_at if collator == "flat" else 0
            line = logits[0] if collator == "flat" else logits[r]
            docs = []
            for n in lengths:
                docs.append(line[at : at + n])
                at += n
            flat_at += sum(lengths)
            out.append(docs)
        return out

    packed, _ = pack_examples(examples, capacity)
    assert len(packed) >= 2 and any(len(r["seq_lengths"]) >= 2 for r in packed)
    assert len({len(r["input_ids"]) for r in packed}) > 1  # rows of different lengths: padding
    members = best_fit_decreasing([len(e["input_ids"]) for e in examples], capacity).rows
    together = logits_of(packed)
    for r, row_members in enumerate(members):
        for k, i in enumerate(row_members):
            alone = logits_of([{**examples[i], "seq_lengths": [len(examples[i]["input_ids"])]}])
            assert torch.allclose(together[r][k], alone[0][0], atol=1e-5), (r, k)
    # changing one packed example leaves the others' logits unchanged
    victim = next(m for m in members if len(m) >= 2)[0]
    changed = [dict(e) for e in examples]
    changed[victim] = {
        "input_ids": [tokenizer.eos_token_id] * len(examples[victim]["input_ids"]),
        "labels": examples[victim]["labels"],
    }
    other = logits_of(pack_examples(changed, capacity)[0])
    for r, row_members in enumerate(members):
        for k, i in enumerate(row_members):
            if i != victim:
                assert torch.allclose(other[r][k], together[r][k], atol=1e-5), (r, k)
    batch = collate(packed)
    labels = batch["labels"]
    for r, row in enumerate(packed):
        starts = [0]
        for n in row["seq_lengths"][:-1]:
            starts.append(starts[-1] + n)
        base = sum(len(p["input_ids"]) for p in packed[:r]) if collator == "flat" else 0
        line = labels[0] if collator == "flat" else labels[r]
        for start in starts:
            assert line[base + start] == -100  # nothing predicts an example's first token


def _grads_after_one_step(
    lm: Path, tmp: Path, batch: int, accum: int, packing: bool
) -> tuple[dict[str, torch.Tensor], float]:
    from distillery.training.train import build_trainer
    from transformers import TrainerCallback

    config = TrainConfig(
        model=str(lm),
        mode="full",
        batch_size=batch,
        grad_accum=accum,
        max_steps=1,
        learning_rate=1e-9,
        warmup_ratio=0.0,
        packing=packing,
        max_length=64 if packing else 512,
        output_dir=str(tmp),
        save_steps=1000,
        logging_steps=1,
    )
    tokenizer, template, stop = load_tokenizer(config)
    rows, _ = prepare(config, conversations(24, seed=5), tokenizer, template, stop)
    rows = rows[:4]  # one global batch of 4 examples (or 4 packed rows)
    grads: dict[str, torch.Tensor] = {}

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            for name, p in kw["model"].named_parameters():
                if p.grad is not None:
                    grads[name] = p.grad.detach().clone()

    trainer = build_trainer(config, rows, None, tokenizer, max_grad_norm=0.0)
    trainer.add_callback(Capture())
    trainer.train()
    return grads, trainer.state.log_history[0]["loss"]


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_micro_batch_times_accumulation_gives_the_same_loss_and_gradients(
    lm: Path, tmp_path: Path, packing: bool
) -> None:
    g1, l1 = _grads_after_one_step(lm, tmp_path / "a", batch=4, accum=1, packing=packing)
    g2, l2 = _grads_after_one_step(lm, tmp_path / "b", batch=1, accum=4, packing=packing)
    g3, l3 = _grads_after_one_step(lm, tmp_path / "c", batch=2, accum=2, packing=packing)
    assert g1 and set(g1) == set(g2) == set(g3)
    for name in g1:
        assert torch.allclose(g1[name], g2[name], atol=1e-6, rtol=1e-4), name
        assert torch.allclose(g1[name], g3[name], atol=1e-6, rtol=1e-4), name
    assert abs(l1 - l2) < 1e-4 and abs(l1 - l3) < 1e-4


def train_args(lm: Path, data: Path, out: Path, max_length: int, *extra: str) -> list[str]:
    """`distillery train` arguments for the tiny model (later key=value overrides win)."""
    paths = ["--model", str(lm), "--data", str(data), "--output-dir", str(out)]
    return ["train", *paths, "--max-length", str(max_length), *extra]


def run_cli(lm: Path, data: Path, out: Path, *extra: str) -> int:
    return main(
        train_args(lm, data, out, 256, "logging_steps=1", "save_steps=4", "eval_fraction=0", *extra)
    )


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_training_learns_and_changes_every_trainable_parameter(
    lm: Path, tmp_path: Path, mode: str
) -> None:
    from transformers import AutoModelForCausalLM

    data = write_data(tmp_path / "d.jsonl", conversations(8))
    out = tmp_path / mode
    assert (
        run_cli(
            lm,
            data,
            out,
            f"mode={mode}",
            "max_steps=12",
            "batch_size=2",
            "grad_accum=1",
            "learning_rate=5e-3",
            "lr_scheduler=constant",
            "warmup_ratio=0",
        )
        == 0
    )
    history = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0] - 0.1
    before = AutoModelForCausalLM.from_pretrained(str(lm)).state_dict()
    if mode == "full":
        after = AutoModelForCausalLM.from_pretrained(str(out / "model")).state_dict()
        for name, tensor in before.items():
            assert not torch.equal(tensor, after[name]), f"{name} did not change"
    else:
        from safetensors.torch import load_file

        adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
        lora_b = [k for k in adapter if "lora_B" in k]
        assert lora_b and all(adapter[k].abs().sum() > 0 for k in lora_b)  # B starts at zero
        merged = AutoModelForCausalLM.from_pretrained(str(out / "merged")).state_dict()
        assert any(not torch.equal(before[k], merged[k]) for k in before)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["supervised_tokens_per_s"] > 0 and 0 < metrics["masked_fraction"] < 1
    # the counts logged with every training window (public log history) agree with metrics.json
    assert history[-1]["tokens"] == metrics["tokens"] > 0
    assert history[-1]["supervised_tokens"] == metrics["supervised_tokens"] > 0
    assert metrics["packing_fill"] > 0.5


def test_resume_continues_the_same_trajectory(lm: Path, tmp_path: Path) -> None:
    """A run that stopped after checkpoint-4 of 8 (its later files gone, as after a kill)
    resumes there and ends exactly where the uninterrupted run does, and metrics.json covers
    all 8 steps: the loss over every step and every token, not only the resumed ones."""
    data = write_data(tmp_path / "d.jsonl", conversations(16))
    common = (
        "mode=full",
        "batch_size=2",
        "grad_accum=1",
        "learning_rate=1e-3",
        "lr_scheduler=constant",
        "warmup_ratio=0",
        "max_steps=8",
    )
    assert run_cli(lm, data, tmp_path / "straight", *common) == 0
    assert run_cli(lm, data, tmp_path / "resumed", *common) == 0
    resumed = tmp_path / "resumed"
    for later in ("checkpoint-8", "model"):
        shutil.rmtree(resumed / later)
    for name in ("finished.json", "metrics.json"):
        (resumed / name).unlink()
    assert run_cli(lm, data, resumed, *common) == 0  # resumes from checkpoint-4

    def losses(run: str) -> list[float]:
        hist = json.loads((tmp_path / run / "checkpoint-8" / "trainer_state.json").read_text())[
            "log_history"
        ]
        return [round(h["loss"], 4) for h in hist if "loss" in h]

    assert losses("resumed") == losses("straight")
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    again = json.loads((resumed / "metrics.json").read_text())
    assert again["steps"] == straight["steps"] == 8
    assert again["train_loss"] == pytest.approx(straight["train_loss"], abs=1e-4)
    for key in ("tokens", "supervised_tokens"):
        assert again[key] == straight[key]
    this = again["invocations"][-1]
    assert this["resumed_from"] == "checkpoint-4" and this["first_step"] == 4
    assert 0 < this["tokens"] < again["tokens"]  # this invocation trained only steps 5-8


def test_prepare_only_writes_inspectable_rows(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datasets

    data = write_data(tmp_path / "d.jsonl", conversations(20))
    assert (
        main(
            [
                "train",
                "--prepare-only",
                "--model",
                str(lm),
                "--data",
                str(data),
                "--output-dir",
                str(tmp_path / "p"),
                "--max-length",
                "256",
            ]
        )
        == 0
    )
    ds = datasets.load_from_disk(str(tmp_path / "p" / "prepared"))
    assert set(ds.column_names) == {"input_ids", "labels", "seq_lengths"}
    row = ds[0]
    assert len(row["input_ids"]) == len(row["labels"]) == sum(row["seq_lengths"]) <= 256
    assert all(lab in (-100, tok) for tok, lab in zip(row["input_ids"], row["labels"], strict=True))
    stats = json.loads((tmp_path / "p" / "prepared_stats.json").read_text())
    assert stats["examples"] == 20 and stats["packing_fill"] > 0.5
    # the label preview: HTML of the first examples, and its summary on the terminal
    page = (tmp_path / "p" / "label_preview.html").read_text()
    assert page.count('class="sup"') >= 8 and "d.jsonl:1<" in page
    printed = capsys.readouterr().out
    assert "supervised text of 8 examples" in printed and "  learns '" in printed
    assert (
        main(
            [
                "train",
                "--prepare-only",
                "--no-packing",
                "--model",
                str(lm),
                "--data",
                str(data),
                "--output-dir",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    assert (
        "seq_lengths" not in datasets.load_from_disk(str(tmp_path / "q" / "prepared")).column_names
    )


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"text": "no messages"}], (), "no 'messages' list"),
        ([{"messages": [{"role": "robot", "content": "x"}]}], (), "unknown role"),
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": "x"},
                        {"role": "assistant", "content": "y"},
                    ]
                }
            ],
            ("stop_token=<|nope|>",),
            "has no token '<|nope|>'",
        ),
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": "x " * 50},
                        {"role": "assistant", "content": "y"},
                    ]
                }
            ],
            ("max_length=16",),
            "shorter than every example",
        ),
    ],
)
def test_bad_training_input_fails_before_training(
    lm: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rows: list[dict],
    extra: tuple[str, ...],
    message: str,
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(
        [
            "train",
            "--model",
            str(lm),
            "--data",
            str(data),
            "--output-dir",
            str(tmp_path / "o"),
            *extra,
        ]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the error


def test_broken_chat_template_is_reported(lm: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jinja"
    bad.write_text("{{ raise_exception('unsupported conversation') }}")
    config = TrainConfig(model=str(lm), chat_template=str(bad))
    tokenizer, template, stop = load_tokenizer(config)
    with pytest.raises(UserError, match="row0: the chat template does not render"):
        prepare(config, conversations(1), tokenizer, template, stop)


def test_newcomer_errors_say_how_to_fix_them(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "d.jsonl", conversations(4))
    assert (
        main(
            [
                "train",
                "--model",
                str(tmp_path / "missing-model"),
                "--data",
                str(data),
                "--output-dir",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "cannot load its tokenizer" in err
        and "--model DIR" in err
        and len(err.strip().splitlines()) == 1
    )
    if not torch.cuda.is_available():
        assert (
            main(
                [
                    "train",
                    "--model",
                    str(lm),
                    "--data",
                    str(data),
                    "--output-dir",
                    str(tmp_path / "q"),
                    "mode=qlora",
                    "eval_fraction=0",
                ]
            )
            == 2
        )
        assert "mode=qlora needs a CUDA GPU" in capsys.readouterr().err
        assert not (tmp_path / "q").exists()
    import importlib.util

    if not importlib.util.find_spec("flash_attn"):
        code = main(
            train_args(lm, data, tmp_path / "f", 256, "attn_implementation=flash_attention_2")
        )
        assert code == 2 and "needs the flash-attn package" in capsys.readouterr().err
        assert not (tmp_path / "f").exists()


def test_data_loads_from_jsonl_parquet_saved_and_hub_style_datasets(tmp_path: Path) -> None:
    from datasets import Dataset
    from distillery.training.data import load_conversations

    convs = conversations(5)
    rows = [{"messages": m, "id": i} for i, (_, m) in enumerate(convs)]
    expected = [m for _, m in convs]
    jsonl = write_data(tmp_path / "d.jsonl", convs)
    Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "hub" / "data").mkdir(parents=True)  # a hub dataset's layout, read offline
    Dataset.from_list(rows).to_parquet(str(tmp_path / "hub" / "data" / "train-0.parquet"))
    for source in (jsonl, tmp_path / "d.parquet", tmp_path / "saved", f"hf:{tmp_path / 'hub'}"):
        loaded = load_conversations(str(source))
        assert [m for _, m in loaded] == expected, source
    assert load_conversations(f"hf:{tmp_path / 'hub'}:train")[2][0].endswith(":train[2]")
    Dataset.from_list([{"text": "x"}]).save_to_disk(str(tmp_path / "nomsg"))
    with pytest.raises(UserError, match="nomsg: the dataset has no 'messages' column"):
        load_conversations(str(tmp_path / "nomsg"))
    with pytest.raises(UserError, match=r"hf:.*missing.*cannot load dataset"):
        load_conversations(f"hf:{tmp_path / 'missing'}")


def _torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """A CPU multi-process launch (gloo DDP), as `accelerate launch` does on GPUs."""
    exe = Path(sys.executable).parent / "torchrun"
    cmd = [str(exe), "--standalone", f"--nproc_per_node={processes}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize(
    ("packing", "batch", "accum"), [(False, 2, 1), (True, 1, 2)], ids=["padded", "packed"]
)
def test_two_processes_give_the_same_loss_and_gradients_as_one(
    lm: Path, tmp_path: Path, packing: bool, batch: int, accum: int
) -> None:
    worker = str(ROOT / "tests" / "train_worker.py")
    flags = ["--model", str(lm), "--rows", "4"] + (["--packing"] if packing else [])
    one = subprocess.run(
        [sys.executable, worker, *flags, "--batch", "4", "--out", str(tmp_path / "one.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    _torchrun(
        worker,
        *flags,
        "--batch",
        str(batch),
        "--accum",
        str(accum),
        "--out",
        str(tmp_path / "two.pt"),
    )
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert abs(a["loss"] - b["loss"]) < 1e-4
    assert a["grads"] and set(a["grads"]) == set(b["grads"])
    for name, grad in a["grads"].items():
        assert torch.allclose(grad, b["grads"][name], atol=1e-6, rtol=1e-4), name


@pytest.mark.slow
def test_multi_process_run_writes_every_output_once(lm: Path, tmp_path: Path) -> None:
    data = write_data(tmp_path / "d.jsonl", conversations(32))
    out = tmp_path / "ddp"
    command = (
        "-m",
        "distillery.cli",
        *train_args(lm, data, out, 128),
        "mode=lora",
        "max_steps=4",
        "batch_size=2",
        "grad_accum=1",
        "eval_fraction=0.1",
    )
    done = _torchrun(*command)
    assert done.stdout.count('"supervised_tokens_per_s"') == 1  # rank 0 reports once
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    # 4 steps x 2 processes x 2 rows of <= 128 tokens = 16 rows: more than the 13-row epoch, so
    # every prepared token was seen at least once, counted over both processes
    prep = metrics["prep"]
    assert prep["rows"] < 16 and prep["tokens"] <= metrics["tokens"] <= 16 * 128
    assert prep["supervised_tokens"] <= metrics["supervised_tokens"] < metrics["tokens"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "README.md",
        "adapter",
        "checkpoint-4",
        "config.yaml",
        "eval_split.jsonl",
        "finished.json",
        "identity.json",
        "invocations.jsonl",
        "merged",
        "metrics.json",
        "report.html",
    ]
    (line,) = (out / "invocations.jsonl").read_text().splitlines()  # rank 0 keeps the books
    assert json.loads(line)["counters"]["last_step"] == 4
    again = _torchrun(*command)  # finished: every rank learns it from rank 0 and exits 0
    assert again.stdout.count("nothing to do") == 1 and "resuming" not in again.stdout
    assert len((out / "invocations.jsonl").read_text().splitlines()) == 2
    assert (out / "merged" / "model.safetensors").is_file()
    assert len((out / "eval_split.jsonl").read_text().splitlines()) == 3
    # eval over 2 processes (accelerate repeats rows to even out the last batch): every
    # supervised token counted once, the same loss as `distillery eval loss` on one process
    from distillery.training.heldout import heldout_loss

    heldout = heldout_loss(str(out / "merged"), str(out / "eval_split.jsonl"), max_length=128)
    assert metrics["eval_supervised_tokens"] == heldout["supervised_tokens"]
    assert metrics["eval_loss"] == pytest.approx(heldout["loss"], abs=1e-4)


def test_fsdp_final_save_gathers_a_full_state_dict(tmp_path: Path) -> None:
    """Under FSDP with sharded checkpoints, transformers' save_model writes no weights unless
    the state dict type is FULL_STATE_DICT; the final save must switch it (no GPU needed)."""
    from types import SimpleNamespace

    from accelerate.utils import FullyShardedDataParallelPlugin
    from distillery.training.train import _save_models

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="SHARDED_STATE_DICT")
    seen: list[str] = []
    trainer = SimpleNamespace(
        is_fsdp_enabled=True,
        accelerator=SimpleNamespace(
            state=SimpleNamespace(fsdp_plugin=plugin), wait_for_everyone=lambda: None
        ),
        save_model=lambda path: seen.append(str(plugin.state_dict_type)),
    )
    tokenizer = SimpleNamespace(save_pretrained=lambda path: None)
    _save_models(TrainConfig(mode="full"), trainer, tokenizer, tmp_path, bf16=False)
    assert seen == ["StateDictType.FULL_STATE_DICT"]


def test_training_flops_counts_matmul_weights_and_causal_attention(lm: Path) -> None:
    from distillery.training.train import training_flops
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(lm))
    cfg = model.config
    embed = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    matmul = sum(p.numel() for p in model.parameters()) - (0 if tied else embed)
    width = cfg.num_attention_heads * (cfg.hidden_size // cfg.num_attention_heads)
    attention = 6 * cfg.num_hidden_layers * width * (100**2 + 50**2)
    flops, params = training_flops(model, 150, 100**2 + 50**2)
    assert params == {"trainable_params": matmul, "frozen_matmul_params": 0}
    assert flops == 6 * matmul * 150 + attention
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    adapters = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    flops, params = training_flops(lora, 150, 100**2 + 50**2)
    assert params == {"trainable_params": adapters, "frozen_matmul_params": matmul}
    assert flops == (6 * adapters + 4 * matmul) * 150 + attention


@pytest.mark.slow
def test_kill_mid_training_then_rerun_resumes_from_the_last_complete_checkpoint(
    lm: Path, tmp_path: Path
) -> None:
    import signal
    import time

    data = write_data(tmp_path / "d.jsonl", conversations(16))
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "distillery.cli",
        *train_args(lm, data, out, 128),
        "mode=full",
        "batch_size=2",
        "grad_accum=1",
        "max_steps=120",
        "save_steps=5",
        "logging_steps=1",
        "eval_fraction=0",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint-10" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended too early"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    # a checkpoint torn mid-save: weights started, trainer state never written
    torn = out / "checkpoint-115"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0" * 10)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipping incomplete checkpoint {torn}" in done.stdout
    resumed_from = int(done.stdout.split("resuming from ")[1].split("checkpoint-")[1].split()[0])
    assert 10 <= resumed_from < 115
    state = json.loads((out / "checkpoint-120" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "loss" in h]
    assert [h["step"] for h in logged] == list(range(1, 121))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 120
    # accounting covers all 120 steps, not only the resumed invocation's
    assert metrics["train_loss"] == pytest.approx(sum(h["loss"] for h in logged) / 120)
    before = json.loads((out / f"checkpoint-{resumed_from}" / "trainer_state.json").read_text())[
        "log_history"
    ][-1]
    this = metrics["invocations"][-1]
    assert this["resumed_from"] == f"checkpoint-{resumed_from}"
    assert metrics["tokens"] == before["tokens"] + this["tokens"] == logged[-1]["tokens"]
    assert metrics["supervised_tokens"] == before["supervised_tokens"] + this["supervised_tokens"]
    # the killed invocation recorded nothing; the resume shows it reached the checkpoint
    assert metrics["invocations"][0] == {
        "started": None,
        "exit_code": None,
        "saved_step": resumed_from,
        "recorded": False,
    }


def test_base_model_without_a_chat_template_is_told_which_template_to_use(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    base = tmp_path / "base"
    shutil.copytree(lm, base)
    (base / "chat_template.jinja").unlink()
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    data = write_data(tmp_path / "d.jsonl", conversations(4))
    args = ["train", "--prepare-only", "--model", str(base), "--data", str(data)]
    assert main([*args, "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has no chat template" in err and "training/chat_templates/base.jinja" in err
    template = ROOT / "training" / "chat_templates" / "base.jinja"
    out = tmp_path / "ok"
    assert main([*args, "--output-dir", str(out), "--chat-template", str(template)]) == 0
    assert json.loads((out / "prepared_stats.json").read_text())["supervised_tokens"] > 0
