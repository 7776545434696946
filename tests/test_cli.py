from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from distillery.cli import STAGES, main


def test_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "distillery.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for stage in [*STAGES, "seeds"]:
        assert stage in out


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "distillery"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("distillery ")


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("teacher: [oops\n", r"c.yaml:\d+:\d+: invalid YAML"),
        (
            "teacher:\n  concurency: 4\n",
            r"c.yaml: key 'teacher.concurency': unknown key \(did you mean 'concurrency'\?\)",
        ),
        (
            "teacher:\n  concurrency: 0\n",
            r"c.yaml: key 'teacher.concurrency': Input should be greater than or equal to 1",
        ),
        (
            "teacher:\n  spec: gpt4\n",
            r"c.yaml: key 'teacher.spec': Value error, unknown backend 'gpt4'",
        ),
    ],
)
def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, expected: str
) -> None:
    import re

    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "out.jsonl"
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": 1, "messages": [{"role": "user", "content": "hi"}]}\n')
    code = main(["complete", "--config", str(config), "--input", str(inp), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(expected, err[0]), err
    assert set(tmp_path.iterdir()) == {config, inp}  # nothing written
