"""Training mixes: `data` as several sources taken whole, by count or by weight - seeded
sampling, the mix as used in metrics.json (rows and supervised tokens per source), held-out
loss per source, the mix in the run's identity, and one-line errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from distillery.cli import main
from distillery.config import load_config
from distillery.errors import UserError
from distillery.training.config import TrainConfig
from distillery.training.data import load_tokenizer, prepare
from distillery.training.mix import load_mix

from tests.test_training import conversations, write_data
from tests.tiny_models import build_tiny_lm


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "chatml")


def _config(tmp_path: Path, data: object, *overrides: str) -> TrainConfig:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return load_config(TrainConfig, path, overrides)


def _texts(convs: list[tuple[str, list[dict[str, str]]]]) -> list[str]:
    return [json.dumps(m) for _, m in convs]


def test_counts_and_weights_sample_seeded_and_never_train_a_held_out_row(tmp_path: Path) -> None:
    a = write_data(tmp_path / "a.jsonl", conversations(40, seed=1))
    b = write_data(tmp_path / "b.jsonl", conversations(20, seed=2))
    c = write_data(tmp_path / "c.jsonl", conversations(5, seed=3))
    data = [{"path": str(a), "rows": 15}, {"path": str(b), "weight": 2.5}, {"path": str(c)}]
    mix = load_mix(_config(tmp_path, data, "eval_fraction=0.1"), prepare_only=False)
    first, second, third = mix.sources
    assert [s.name for s in mix.sources] == ["a", "b", "c"]
    # rows: 15 trains exactly 15; 10% of the 15 it contributes is held out first
    assert (len(first.train), first.distinct, len(first.held_out)) == (15, 15, 1)
    # weight 2.5 of the 18 rows left after holding out 2: 45 = every row twice + 9 more
    assert (len(second.held_out), len(second.train), second.distinct) == (2, 45, 18)
    assert all(_texts(second.train).count(t) in (2, 3) for t in set(_texts(second.train)))
    assert (len(third.held_out), len(third.train)) == (0, 5)  # under 10 rows: none held out
    for s in mix.sources:
        assert not set(_texts(s.held_out)) & set(_texts(s.train))
    assert mix.train_names == ["a"] * 15 + ["b"] * 45 + ["c"] * 5
    again = load_mix(_config(tmp_path, data, "eval_fraction=0.1"), prepare_only=False)
    assert _texts(again.train) == _texts(mix.train)  # seeded: the same rows every time
    other = load_mix(_config(tmp_path, data, "eval_fraction=0.1", "seed=7"), prepare_only=False)
    assert _texts(other.sources[0].train) != _texts(first.train)


def test_the_single_path_form_splits_as_before(tmp_path: Path) -> None:
    """The original form: every row once, eval_fraction held out by a shuffle seeded by seed."""
    import random

    rows = conversations(30)
    data = write_data(tmp_path / "d.jsonl", rows)
    mix = load_mix(_config(tmp_path, str(data), "eval_fraction=0.1"), prepare_only=False)
    order = list(range(30))
    random.Random(42).shuffle(order)
    held = sorted(order[:3])
    assert _texts(mix.sources[0].held_out) == _texts([rows[i] for i in held])
    assert _texts(mix.train) == _texts([r for i, r in enumerate(rows) if i not in held])


def _mix_file(tmp_path: Path, data: list[dict[str, object]]) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return path


def _train(lm: Path, config: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "--config",
            str(config),
            "--model",
            str(lm),
            "--output-dir",
            str(out),
            "--max-length",
            "256",
            "mode=lora",
            "max_steps=3",
            "batch_size=2",
            "grad_accum=1",
            "eval_fraction=0.1",
            *extra,
        ]
    )


def test_a_two_source_mix_trains_and_reports_rows_tokens_and_loss_per_source(
    lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distillery.training.heldout import heldout_loss

    main_rows = write_data(tmp_path / "kept.jsonl", conversations(30, seed=1))
    replay = write_data(tmp_path / "replay.jsonl", conversations(40, seed=2))
    spec = [{"path": str(main_rows)}, {"path": str(replay), "rows": 12, "name": "replay"}]
    config, out = _mix_file(tmp_path, spec), tmp_path / "run"
    assert _train(lm, config, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    kept, rep = metrics["data_mix"]
    assert (kept["name"], kept["available"], kept["held_out"], kept["conversations"]) == (
        "kept",
        30,
        3,
        27,
    )
    assert (rep["name"], rep["rows"], rep["held_out"], rep["conversations"]) == (
        "replay",
        12,
        1,
        12,
    )
    assert kept["share_conversations"] == round(27 / 39, 4)
    # per-source supervised tokens: what preparing that source's own rows alone gives
    cfg = load_config(TrainConfig, config, [f"model={lm}", "max_length=256", "eval_fraction=0.1"])
    mix = load_mix(cfg, prepare_only=False)
    tokenizer, template, end = load_tokenizer(cfg)
    for entry, source in zip(metrics["data_mix"], mix.sources, strict=True):
        alone = prepare(cfg, source.train, tokenizer, template, end)[1]
        assert entry["supervised_tokens"] == alone.supervised_tokens > 0
        assert entry["tokens"] == alone.tokens and entry["examples"] == alone.examples
    assert (
        kept["supervised_tokens"] + rep["supervised_tokens"] == metrics["prep"]["supervised_tokens"]
    )
    # held-out loss per source: each source's rows of eval_split.jsonl, scored on their own
    split = [json.loads(x) for x in (out / "eval_split.jsonl").read_text().splitlines()]
    assert [r["source"] for r in split] == ["kept"] * 3 + ["replay"]
    nll = tokens = 0.0
    for entry in metrics["data_mix"]:
        part = tmp_path / f"{entry['name']}.eval.jsonl"
        part.write_text(
            "".join(json.dumps(r) + "\n" for r in split if r["source"] == entry["name"])
        )
        scored = heldout_loss(str(out / "merged"), str(part), max_length=256)
        assert entry["eval_supervised_tokens"] == scored["supervised_tokens"]
        assert entry["eval_loss"] == pytest.approx(scored["loss"], abs=1e-4)
        assert metrics["eval_loss_by_source"][entry["name"]] == entry["eval_loss"]
        nll += entry["eval_loss"] * entry["eval_supervised_tokens"]
        tokens += entry["eval_supervised_tokens"]
    assert metrics["eval_loss"] == pytest.approx(nll / tokens)
    assert metrics["eval_supervised_tokens"] == tokens

    # the mix is part of what the run is: another count is a different run, named by source
    capsys.readouterr()
    spec[1]["rows"] = 13
    assert _train(lm, _mix_file(tmp_path, spec), out) == 2
    err = capsys.readouterr().err.strip()
    assert "inputs.data.replay.rows: 12 -> 13" in err and len(err.splitlines()) == 1


def test_prepare_only_writes_the_mix_as_used(lm: Path, tmp_path: Path) -> None:
    a = write_data(tmp_path / "a.jsonl", conversations(12, seed=1))
    b = write_data(tmp_path / "b.jsonl", conversations(8, seed=2))
    config = _mix_file(tmp_path, [{"path": str(a), "weight": 0.5}, {"path": str(b)}])
    assert _train(lm, config, tmp_path / "p", "--prepare-only") == 0
    stats = json.loads((tmp_path / "p" / "prepared_stats.json").read_text())
    assert [(s["name"], s["conversations"], s["held_out"]) for s in stats["data_mix"]] == [
        ("a", 6, 0),
        ("b", 8, 0),
    ]
    assert sum(s["supervised_tokens"] for s in stats["data_mix"]) == stats["supervised_tokens"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"wieght": 0.3}, "key 'data': data[1].wieght: unknown key (did you mean 'weight'?)"),
        ({"weight": -0.3}, "key 'data': data[1].weight: Input should be greater than 0"),
        ({"rows": 0}, "key 'data': data[1].rows: Input should be greater than or equal to 1"),
        ({"rows": 3, "weight": 1}, "key 'data': data[1]: give rows or weight, not both"),
        ({"path": "missing.jsonl"}, "data[1].path: missing.jsonl: no such file"),
        ({"weight": 0.01}, "data[1].weight: 0.01 x 12 rows of"),
    ],
)
def test_a_bad_source_is_one_line_naming_its_key(
    lm: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    entry: dict[str, object],
    message: str,
) -> None:
    a = write_data(tmp_path / "a.jsonl", conversations(12))
    b = write_data(tmp_path / "b.jsonl", conversations(12, seed=5))
    second = {"path": str(b), **entry}
    config = _mix_file(tmp_path, [{"path": str(a)}, second])
    assert _train(lm, config, tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_two_sources_of_one_name_are_refused(tmp_path: Path) -> None:
    a = write_data(tmp_path / "a.jsonl", conversations(12))
    data = [{"path": str(a), "name": "x"}, {"path": str(a), "name": "x"}]
    with pytest.raises(UserError, match=r"data\[1\]\.name: 'x' names two sources"):
        load_mix(_config(tmp_path, data), prepare_only=False)


def test_a_sampled_dataset_source_reads_the_chosen_rows_and_a_run_dir_its_kept_rows(
    tmp_path: Path,
) -> None:
    """`hf:` / Parquet sources give exactly the sampled rows (named by their index), and a
    filter run directory trains on its kept.jsonl and is identified by that file."""
    from datasets import Dataset
    from distillery.runstate import file_digest
    from distillery.training.runinfo import mix_identity

    convs = conversations(30, seed=4)
    (tmp_path / "hub" / "data").mkdir(parents=True)
    rows = [{"messages": m} for _, m in convs]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "hub" / "data" / "train-0.parquet"))
    run = tmp_path / "filtered"
    run.mkdir()
    write_data(run / "kept.jsonl", conversations(6, seed=5))
    (run / "report.html").write_text("not training data")
    data = [{"path": f"hf:{tmp_path / 'hub'}", "rows": 7}, {"path": str(run)}]
    config = _config(tmp_path, data, "eval_fraction=0")
    hub, kept = load_mix(config, prepare_only=False).sources
    assert hub.name == "hub" and kept.name == "filtered"
    for where, messages in hub.train:
        index = int(where.rsplit("[", 1)[1].rstrip("]"))
        assert messages == convs[index][1]
    assert len({w for w, _ in hub.train}) == 7
    assert _texts(kept.train) == _texts(conversations(6, seed=5))
    assert isinstance(config.data, list)
    identity = mix_identity(config.data)
    assert identity["filtered"]["digest"] == file_digest(run / "kept.jsonl")
    assert identity["hub"] == {
        "path": f"hf:{tmp_path / 'hub'}",
        "digest": f"hf:{tmp_path / 'hub'}",
        "rows": 7,
        "weight": None,
    }
