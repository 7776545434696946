from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import STAGES, main


def test_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True, check=True
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


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "seeds"])
def test_unbuilt_stage_says_so_and_fails(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline import cli

    if cli.build_parser().parse_args([stage]).func is not cli._not_built:
        pytest.skip(f"{stage} is built")
    assert main([stage]) != 0
    err = capsys.readouterr().err
    assert "not built yet" in err and len(err.strip().splitlines()) == 1
