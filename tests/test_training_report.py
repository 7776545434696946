"""The training run's own report: loss curve (train and held-out, per source of a mix) from
metrics.json, with n beside the held-out losses and the demo banner for demo rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from distillery.cli import main
from distillery.training.metrics import demo_sources, loss_curve
from distillery.training.report import render_train_report

from tests.test_training import conversations, write_data
from tests.tiny_models import build_tiny_lm


def test_loss_curve_reads_train_eval_and_per_source_points() -> None:
    history = [
        {"step": 2, "loss": 3.0},
        {"step": 1, "loss": 4.0},
        {"step": 2, "eval_kept_loss": 2.5, "eval_kept_supervised_tokens": 40},
        {"step": 2, "eval_replay_loss": 2.7},
        {"step": 2, "eval_loss": 2.6},
        {"train_runtime": 1.0},
    ]
    assert loss_curve(history) == {
        "train": [[1, 4.0], [2, 3.0]],
        "eval": [[2, 2.6]],
        "eval_by_source": {"kept": [[2, 2.5]], "replay": [[2, 2.7]]},
    }


def test_demo_sources_from_records_and_run_dirs(tmp_path: Path) -> None:
    real = write_data(tmp_path / "real.jsonl", conversations(3))
    demo = tmp_path / "demo.jsonl"
    demo.write_text(json.dumps({"messages": [], "demo": True}) + "\n")
    run = tmp_path / "filter_run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"demo": True}))
    mix = [{"name": "a", "path": str(real)}, {"name": "b", "path": str(demo)}]
    assert demo_sources([*mix, {"name": "c", "path": str(run)}]) == ["b", "c"]
    assert demo_sources(mix[:1]) == []


def _metrics(**extra: object) -> dict:
    return {
        "steps": 4,
        "train_loss": 3.2,
        "tokens": 1000,
        "supervised_tokens": 400,
        "packing_fill": 0.9,
        "masked_fraction": 0.6,
        "wall_s": 1.5,
        "processes": 1,
        "supervised_tokens_per_s": 266.0,
        "eval_loss": 2.9,
        "eval_supervised_tokens": 120,
        "loss_curve": {"train": [[1, 4.0], [2, 3.5], [3, 3.0], [4, 2.8]], "eval": [[2, 3.1]]},
        "data_mix": [],
        **extra,
    }


def test_page_has_the_curve_with_the_final_held_out_point_and_no_demo_banner() -> None:
    page = render_train_report(_metrics(), "runs/x/train")
    assert page.count("<polyline") == 2  # train, and held-out at step 2 plus the final one
    assert "held-out loss" in page and "n = 120 supervised tokens" in page
    assert "Demo data" not in page


@pytest.mark.slow
def test_a_two_source_run_gets_its_report_with_held_out_loss_per_source(tmp_path: Path) -> None:
    lm = build_tiny_lm(tmp_path / "lm")
    kept = write_data(tmp_path / "kept.jsonl", conversations(30, seed=1))
    replay = tmp_path / "replay.jsonl"  # records from the fake teacher: demo rows
    replay.write_text(
        "".join(
            json.dumps({"messages": m, "demo": True}) + "\n" for _, m in conversations(20, seed=2)
        )
    )
    config = tmp_path / "mix.yaml"
    config.write_text(
        yaml.safe_dump({"data": [{"path": str(kept)}, {"path": str(replay), "name": "replay"}]})
    )
    out = tmp_path / "run"
    common = ["--config", str(config), "--output-dir", str(out)]
    argv = ["train", *common, "--model", str(lm), "--max-length", "256", "mode=lora"]
    argv += ["max_steps=4", "batch_size=2", "grad_accum=1", "eval_fraction=0.1"]
    assert main([*argv, "logging_steps=1", "eval_steps=2"]) == 0
    assert (out / "report.html").exists()  # a finished run writes its report
    (out / "report.html").unlink()
    metrics = json.loads((out / "metrics.json").read_text())
    curve = metrics["loss_curve"]
    assert [s for s, _ in curve["train"]] == [1, 2, 3, 4]
    assert set(curve["eval_by_source"]) == {m["eval_key"] for m in metrics["data_mix"]}
    assert metrics["is_demo"] is True and metrics["demo_sources"] == ["replay"]

    assert main(["train", *common, "--report-only"]) == 0
    page = (out / "report.html").read_text()
    assert "<polyline" in page and "Demo data" in page
    for entry in metrics["data_mix"]:
        assert f"held-out loss: {entry['name']}" in page
        assert f"(n={entry['eval_supervised_tokens']:,})" in page


def test_the_mix_table_and_the_totals_say_which_tokens_they_count() -> None:
    """The demo's mix row said 13,622 supervised tokens beside a total of 68,110: the first
    counts a source's rows once, the second every step of every epoch; each label says so."""
    entry = {"name": "kept", "path": "kept.jsonl", "available": 48, "conversations": 44}
    entry |= {"supervised_tokens": 80, "share_supervised_tokens": 1.0, "held_out": 4}
    entry |= {"eval_key": "kept"}
    page = render_train_report(_metrics(data_mix=[entry]), "runs/x/train")
    assert 'supervised (over every step, all epochs)</td><td class="num">1,000 / 400' in page
    assert "supervised tokens in its rows, once (share)" in page and "80 (100.0%)" in page


def test_a_damaged_metrics_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "metrics.json").write_text('{"steps": 4,')
    assert main(["train", "--output-dir", str(tmp_path), "--report-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path / 'metrics.json'}: malformed JSON" in err and len(err.splitlines()) == 1
