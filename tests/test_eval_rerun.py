"""`eval winrate` / `eval ifeval` re-runs: same settings resume, other settings stop with one
line naming the difference, `--restart` moves that kind's results aside (never deleted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.cli import main

from tests.test_eval import write


def _winrate(tmp_path: Path, *extra: str) -> int:
    ins = write(
        tmp_path / "ins.jsonl",
        [{"id": f"q{i}", "instruction": f"Explain topic {i} briefly."} for i in range(6)],
    )
    student = write(
        tmp_path / "s.jsonl", [{"id": f"q{i}", "response": "Long " * 9} for i in range(6)]
    )
    base = write(tmp_path / "b.jsonl", [{"id": f"q{i}", "response": "Short."} for i in range(6)])
    args = ["eval", "winrate", "--instructions", str(ins), "--judge", "fake"]
    args += ["--student-responses", str(student), "--baseline-responses", str(base)]
    return main([*args, "--output-dir", str(tmp_path / "out"), *extra])


def test_winrate_refuses_other_settings_and_restart_moves_the_results_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _winrate(tmp_path) == 0
    first = (out / "winrate_summary.json").read_text()
    (out / "heldout_loss.json").write_text("{}")  # another kind's result in the same directory
    assert _winrate(tmp_path, "judge.concurrency=3") == 0  # runtime setting: same work
    capsys.readouterr()
    assert _winrate(tmp_path, "judge.max_tokens=64") == 2
    err = capsys.readouterr().err
    assert "judge.max_tokens: 1024 -> 64" in err and "--restart" in err and err.count("\n") == 1
    assert (out / "winrate_summary.json").read_text() == first  # untouched
    assert _winrate(tmp_path, "judge.max_tokens=64", "--restart") == 0
    (aside,) = out.glob("winrate.old-*")
    assert (aside / "winrate_summary.json").read_text() == first
    assert (out / "heldout_loss.json").exists()  # other kinds are left alone
    saved = json.loads((out / "winrate_identity.json").read_text())
    assert saved["config"]["judge.max_tokens"] == 64


def test_results_without_recorded_settings_are_not_adopted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "winrate_summary.json").write_text("{}")  # made by something else
    assert _winrate(tmp_path) == 2
    assert "settings not recorded" in capsys.readouterr().err
