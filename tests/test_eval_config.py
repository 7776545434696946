"""`distillery eval` in the config system (YAML + key=value, resolved config saved, the judge a
teacher section) and a judge budget stop: exit 4, nothing half-written, a resumable journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from distillery.cli import main


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pairs(tmp_path: Path, n: int) -> list[str]:
    """--instructions/--student-responses/--baseline-responses flags for n pairs."""
    ins = write(
        tmp_path / "ins.jsonl",
        [{"id": f"q{i}", "instruction": f"Explain topic number {i} briefly."} for i in range(n)],
    )
    student = write(
        tmp_path / "s.jsonl",
        [{"id": f"q{i}", "response": "A long and careful answer " * (1 + i % 3)} for i in range(n)],
    )
    baseline = write(
        tmp_path / "b.jsonl", [{"id": f"q{i}", "response": "Short answer."} for i in range(n)]
    )
    return [
        "--instructions", str(ins), "--student-responses", str(student),
        "--baseline-responses", str(baseline),
    ]  # fmt: skip


def test_winrate_reads_a_config_file_and_overrides_and_saves_the_resolved_config(
    tmp_path: Path,
) -> None:
    flags = pairs(tmp_path, 6)
    out = tmp_path / "out"
    config = tmp_path / "eval.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(out),
                "judge": {"spec": "fake", "concurrency": 2, "cache": False},
                "winrate": {
                    "instructions": flags[1],
                    "student_responses": flags[3],
                    "baseline_responses": flags[5],
                },
            }
        )
    )
    assert main(["eval", "winrate", "--config", str(config), "judge.max_tokens=64"]) == 0
    saved = yaml.safe_load((out / "winrate_config.yaml").read_text())
    assert saved["judge"]["spec"] == "fake" and saved["judge"]["concurrency"] == 2
    assert saved["judge"]["max_tokens"] == 64 and saved["judge"]["temperature"] == 0.0
    assert saved["winrate"]["instructions"] == flags[1]
    assert json.loads((out / "winrate_summary.json").read_text())["pairs"] == 6
    # a flag wins over the file
    other = tmp_path / "other"
    assert main(["eval", "winrate", "--config", str(config), "--output-dir", str(other)]) == 0
    assert (other / "winrate_summary.json").exists()


def test_eval_config_errors_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = pairs(tmp_path, 2)
    common = ["eval", "winrate", *flags, "--judge", "fake", "--output-dir", str(tmp_path / "o")]
    assert main([*common, "judge.concurrence=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "judge.concurrence" in err[0] and "concurrency" in err[0]
    assert not (tmp_path / "o").exists()
    assert main(["eval", "winrate", *flags, "--output-dir", str(tmp_path / "o")]) == 2
    assert "--judge SPEC" in capsys.readouterr().err


def test_config_eval_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "eval"]) == 0
    rows = {
        cells[0].strip("|` "): cells[2].strip("` ")
        for line in capsys.readouterr().out.splitlines()
        if len(cells := line.split(" | ")) >= 4
    }
    expected = {
        "judge.spec": None,
        "judge.max_cost_usd": None,
        "judge.api_key_env": None,
        "judge.temperature": 0.0,
        "judge.max_tokens": 1024,
        "student.temperature": 0.0,
        "student.max_tokens": 1024,
        "winrate.field": "instruction",
    }
    for key, default in expected.items():
        assert yaml.safe_load(rows[key]) == default, key


def test_ifeval_cli_with_a_config_override(tmp_path: Path) -> None:
    prompt = "Write a sentence without commas."
    inputs = write(
        tmp_path / "in.jsonl",
        [
            {
                "key": 1,
                "prompt": prompt,
                "instruction_id_list": ["punctuation:no_comma"],
                "kwargs": [{}],
            }
        ],
    )
    responses = write(tmp_path / "r.jsonl", [{"prompt": prompt, "response": "No commas here."}])
    out = tmp_path / "out"
    code = main(
        ["eval", "ifeval", "--inputs", str(inputs), f"ifeval.responses={responses}",
         "--output-dir", str(out)]
    )  # fmt: skip
    assert code == 0
    assert json.loads((out / "ifeval_summary.json").read_text())["prompt_level_strict"] == 1.0
    assert yaml.safe_load((out / "ifeval_config.yaml").read_text())["ifeval"]["responses"] == str(
        responses
    )


def judge_journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / ".judge.journal").read_text().splitlines()]


def test_winrate_judge_budget_stop_exits_4_and_a_rerun_finishes_reusing_the_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    price = "judge.prices={judge: {input_per_mtok: 1000, output_per_mtok: 1000}}"
    command = [
        "eval", "winrate", *pairs(tmp_path, 20), "--judge", "fake:judge", "--output-dir", str(out),
        price, "judge.max_tokens=40", "judge.concurrency=4", "judge.cache=false",
    ]  # fmt: skip
    assert main([*command, "judge.max_cost_usd=3"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyError" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distillery: stopped:")
    assert "judge.max_cost_usd" in lines[0] and ".judge.journal" in lines[0]
    first = judge_journal(out)
    assert 0 < len(first) < 40 and all(row["trace"]["status"] == "ok" for row in first)
    assert not (out / "winrate_summary.json").exists()  # no partial result to mistake
    assert not (out / "winrate_pairs.jsonl").exists()
    spent_first = sum(row["trace"]["usage"]["cost_usd"] for row in first)
    assert spent_first <= 3

    assert main([*command, "judge.max_cost_usd=100"]) == 0
    every = judge_journal(out)
    ids = [row["id"] for row in every]
    assert len(ids) == 40 and len(set(ids)) == 40  # the first run's verdicts were not re-asked
    assert every[: len(first)] == first
    summary = json.loads((out / "winrate_summary.json").read_text())
    assert summary["pairs"] == 20 and summary["judge"] == "fake:judge"
