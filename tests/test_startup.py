"""Start-up: a `complete` run imports only the SDK of the backend in use (bench/startup.py
measures the time this saves)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import server

__all__ = ["server"]

# runs `distillery complete`, then prints which SDKs the process imported
PROBE = """
import sys
from distillery.cli import main
code = main(sys.argv[1:])
print({"code": code, "sdks": sorted(m for m in ("openai", "anthropic") if m in sys.modules)})
"""


@pytest.mark.parametrize(
    ("spec", "overrides", "sdks"),
    [
        ("fake", [], []),
        ("openai:mock-model", ["teacher.base_urls=[{url}/v1]"], []),  # transport: direct
        (
            "openai:mock-model",
            ["teacher.base_urls=[{url}/v1]", "teacher.transport=sdk"],
            ["openai"],
        ),
        ("anthropic:mock-model", ["teacher.base_urls=[{url}]"], []),  # transport: direct
        (
            "anthropic:mock-model",
            ["teacher.base_urls=[{url}]", "teacher.transport=sdk"],
            ["anthropic"],
        ),
    ],
)
def test_complete_imports_only_the_sdk_it_uses(
    server: MockLLMServer, tmp_path: Path, spec: str, overrides: list[str], sdks: list[str]
) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"id": 1, "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    cmd = [sys.executable, "-c", PROBE, "complete", "--input", str(inp), "--output", str(out)]
    cmd += ["--quiet", "--teacher", spec, f"teacher.cache_path={tmp_path / 'c.sqlite'}"]
    cmd += [o.format(url=server.base_url) for o in overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines()[-1] == str({"code": 0, "sdks": sdks})
    assert len(out.read_text().splitlines()) == 1
