"""The README's real-data `generate` commands, each run against a local stand-in.

Each command is taken from README.md as written and run with a teacher that serves only the
model the command names (the loopback server for `openai:` with `OPENAI_BASE_URL` and
`anthropic:` with `ANTHROPIC_BASE_URL`, a stand-in `vllm` executable for `vllm:`), with only
the key of that provider set. A role left on the config's own teacher would ask the
stand-in for a model it does not serve, or need the other provider's key: the preflight
would stop with exit 2. The stand-in echoes, so Self-Instruct parses no new tasks and the
run ends "target not met" (exit 1) after real requests reached the named model.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import sys
from pathlib import Path

import pytest
from distillery.cli import main

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import chat_requests

ROOT = Path(__file__).resolve().parent.parent


def readme_generate_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Real data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if "distillery generate" in line and "--teacher" in line]


COMMANDS = readme_generate_commands()


def test_the_readme_shows_each_kind_of_teacher() -> None:
    specs = " ".join(COMMANDS)
    assert all(f"--teacher {kind}:" in specs for kind in ("anthropic", "vllm", "openai"))


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_generate_command_uses_the_named_teacher_for_every_role(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the checkout
    words = shlex.split(command)
    args = words[next(i for i, w in enumerate(words) if w.endswith("distillery")) + 1 :]
    spec = args[args.index("--teacher") + 1]
    backend, model = spec.split(":", 1)
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DISTILLERY_CACHE_DIR", str(tmp_path / "cache"))
    overrides = [
        f"output_dir={tmp_path}",
        "run_id=readme",
        "num_instructions=4",
        "evol.rounds=0",
        "max_top_ups=0",
        "self_instruct.prompts_per_batch=2",
        "quiet=true",
    ]
    if backend == "vllm":
        _stand_in_vllm(tmp_path, monkeypatch)
        port = _free_port()
        for role in ("teacher", "response_teacher"):
            overrides += [f"{role}.vllm.port={port}", f"{role}.vllm.startup_timeout_s=30"]
        code = main([*args, *overrides])
        assert code == 1, "the run should reach the stand-in and end 'target not met'"
        return
    srv = MockLLMServer(models=[model]).start_in_thread()
    try:
        url = f"{srv.base_url}/v1" if backend == "openai" else srv.base_url
        if backend == "openai":
            monkeypatch.setenv("OPENAI_BASE_URL", url)
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        else:
            monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
            monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        code = main([*args, *overrides])
        sent = chat_requests(srv)
    finally:
        srv.stop_thread()
    assert code == 1, "the run should reach the stand-in and end 'target not met'"
    assert sent > 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stand_in_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "vllm"
    exe.write_text(
        f"#!/bin/sh\n# vllm serve MODEL --port P\ncd {ROOT}\n"
        f'exec {sys.executable} -m tests.helpers.mockserver --model "$2" --port "$4"\n'
    )
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
