"""Re-running `distillery generate`: same work resumes, other work is refused or restarted,
a finished run does nothing, the manifest adds up every invocation, `--teacher` sets every
role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from distillery.cli import main
from distillery.config import load_config
from distillery.generate.config import GenerateConfig
from distillery.generate.context import GenContext
from distillery.generate.roles import teacher_flag_overrides

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import server
from tests.test_generate import gen, records
from tests.test_seeds import SEEDS

__all__ = ["server"]
ROOT = Path(__file__).resolve().parent.parent


def test_changing_a_setting_that_changes_rows_is_refused_then_restarted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, run = gen(tmp_path, "teacher.temperature=0.7", "evol.rounds=1", n=12)
    assert code == 0
    old_ids = [r.id for r in records(run / "generated.jsonl")]
    capsys.readouterr()
    # the same run id with another temperature: stop, naming the difference (one line)
    code, _ = gen(tmp_path, "teacher.temperature=0.1", "evol.rounds=1", n=12)
    err = capsys.readouterr().err
    assert code == 2 and "teacher.temperature: 0.7 -> 0.1" in err and "--restart" in err
    assert len(err.strip().splitlines()) == 1
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["teacher"]["temperature"] == 0.7  # provenance still describes the rows
    # --restart moves the old run aside (never deletes) and makes the rows anew
    code, _ = gen(tmp_path, "teacher.temperature=0.1", "evol.rounds=1", "--restart", n=12)
    assert code == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["teacher"]["temperature"] == 0.1
    aside = [p for p in run.parent.iterdir() if p.name.startswith("r.old-")]
    assert len(aside) == 1 and [r.id for r in records(aside[0] / "generated.jsonl")] == old_ids


def test_settings_that_cannot_change_rows_resume_and_a_finished_run_does_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, run = gen(tmp_path, "evol.rounds=1", n=12)
    assert code == 0
    before = (run / "generated.jsonl").read_bytes()
    (run / ".rejected.jsonl.k9x2.tmp").write_text("x" * 1000)  # a kill -9 in the final write
    capsys.readouterr()
    code, _ = gen(tmp_path, "evol.rounds=1", "teacher.concurrency=3", "teacher.timeout_s=9", n=12)
    assert not (run / ".rejected.jsonl.k9x2.tmp").exists()  # the next run removes it
    out = capsys.readouterr().out
    assert code == 0 and "already finished" in out and "nothing to do" in out
    assert (run / "generated.jsonl").read_bytes() == before
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["invocations"]) == 1  # the no-op re-run changed nothing


def test_an_interrupted_run_leaves_no_config_that_describes_no_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = GenContext.call

    async def crash_at_responses(self, stage, items):
        if stage == "responses":
            raise KeyboardInterrupt
        return await original(self, stage, items)

    monkeypatch.setattr(GenContext, "call", crash_at_responses)
    code, run = gen(tmp_path, "evol.rounds=1", n=12)
    assert code == 130
    assert (run / "journal").is_dir()
    assert not (run / "config.yaml").exists() and not (run / "manifest.json").exists()


def test_manifest_counts_shared_teachers_once_and_adds_up_invocations(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "generate", "--seeds", str(SEEDS), "--teacher", "openai:mock-model",
        "--num-instructions", "5", "--output-dir", str(tmp_path / "runs"), "--run-id", "r",
        "--quiet", f"teacher.base_urls=[{server.base_url}/v1]",
        f"teacher.cache_path={tmp_path / 'c.sqlite'}",
        "teacher.prices={mock-model: {input_per_mtok: 1000, output_per_mtok: 1000}}",
        "teacher.max_tokens=50", "self_instruct.max_steps=3", "max_top_ups=0",
    ]  # fmt: skip
    assert main([*args, "teacher.max_cost_usd=1.2"]) == 4
    assert "distillery: stopped:" in capsys.readouterr().err
    first = json.loads((tmp_path / "runs" / "r" / "manifest.json").read_text())
    # raising the budget continues the same run (the cap is not part of its identity)
    assert main([*args, "teacher.max_cost_usd=100"]) == 1  # echo answers: target not met
    manifest = json.loads((tmp_path / "runs" / "r" / "manifest.json").read_text())
    one, two = manifest["invocations"]
    assert (one["exit_code"], two["exit_code"], two["resumed"]) == (4, 1, True)
    assert manifest["spent_usd"] == pytest.approx(one["spent_usd"] + two["spent_usd"], abs=1e-5)
    assert manifest["spent_usd"] > first["spent_usd"] > 0
    assert manifest["requests_sent"] == one["requests_sent"] + two["requests_sent"]
    # three roles share one teacher: each role counts its own calls, their sum is the total
    roles = manifest["teachers"]
    assert set(roles) == {"instructions", "evolution", "responses"}
    assert sum(r["requests_sent"] for r in roles.values()) == manifest["requests_sent"]
    assert roles["responses"]["shares_teacher_with"] == ["instructions", "evolution"]
    (client,) = manifest["teacher_clients"]
    assert client["requests_sent"] == manifest["requests_sent"]


def test_teacher_flag_sets_every_role_not_set_on_the_command_line() -> None:
    shipped = ROOT / "configs" / "generate.yaml"
    config = load_config(GenerateConfig, shipped)
    assert config.response_teacher is not None  # the shipped config sets a response teacher

    def roles(teacher: str | None, flags: dict[str, str | None], overrides: list[str]) -> tuple:
        extra = teacher_flag_overrides(config, teacher, flags, overrides)
        c = load_config(GenerateConfig, shipped, [*overrides, *extra])
        return (c.evol_teacher.spec if c.evol_teacher else None, c.response_teacher)

    evol, resp = roles("anthropic:claude-haiku-4-5", {}, [])
    assert evol is None and resp.spec == "anthropic:claude-haiku-4-5"
    assert resp.temperature == 0.3 and resp.max_tokens == 2048  # its other settings stay
    evol, resp = roles("fake", {"evol_teacher": "openai:a", "response_teacher": "openai:b"}, [])
    assert (evol, resp.spec) == ("openai:a", "openai:b")
    _, resp = roles("fake", {}, ["response_teacher.spec=openai:c"])
    assert resp.spec == "openai:c"  # set on the same command line: --teacher leaves it


def test_readme_anthropic_command_needs_only_an_anthropic_key(
    server: MockLLMServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    code = main([
        "generate", "--config", str(ROOT / "configs" / "generate.yaml"),
        "--teacher", "anthropic:mock-model", "--output-dir", str(tmp_path / "runs"),
        "--quiet", "num_instructions=3", "self_instruct.max_steps=1", "max_top_ups=0",
        "evol.rounds=0", f"teacher.cache_path={tmp_path / 'c.sqlite'}",
        f"response_teacher.cache_path={tmp_path / 'c.sqlite'}",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" not in err and code == 1  # echo answers: target not met, no error
    manifest = json.loads((tmp_path / "runs" / "main" / "manifest.json").read_text())
    assert {r["spec"] for r in manifest["teachers"].values()} == {"anthropic:mock-model"}


def test_readme_local_server_command_serves_every_role(
    server: MockLLMServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.base_url}/v1")  # serves only mock-model
    code = main([
        "generate", "--config", str(ROOT / "configs" / "generate.yaml"),
        "--teacher", "openai:mock-model", "--output-dir", str(tmp_path / "runs"),
        "--quiet", "num_instructions=3", "self_instruct.max_steps=1", "max_top_ups=0",
        "evol.rounds=0", f"teacher.cache_path={tmp_path / 'c.sqlite'}",
        f"response_teacher.cache_path={tmp_path / 'c.sqlite'}",
    ])  # fmt: skip
    assert "not served" not in capsys.readouterr().err and code == 1  # echo: target not met
    manifest = json.loads((tmp_path / "runs" / "main" / "manifest.json").read_text())
    assert {r["spec"] for r in manifest["teachers"].values()} == {"openai:mock-model"}
