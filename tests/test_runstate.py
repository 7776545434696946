"""Run directories: lock, identity, --restart, invocations, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from distillery.errors import UserError
from distillery.runstate import (
    RunDir,
    config_identity,
    describe_difference,
    file_digest,
    input_identity,
)
from pydantic import BaseModel


class Teacher(BaseModel):
    spec: str = "openai:gpt-4o-mini"
    temperature: float = 0.7
    concurrency: int = 8


class Config(BaseModel):
    teacher: Teacher = Teacher()
    rows: int = 10


def identity(**teacher: object) -> dict:
    return config_identity(Config(teacher=Teacher(**teacher)), exclude=["teacher.concurrency"])


def test_same_identity_resumes_and_a_different_one_names_what_differs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunDir(run, "generate", identity()) as r:
        assert not r.resumed
        (run / "rows.jsonl").write_text("{}\n")
    with RunDir(run, "generate", identity(concurrency=64)) as r:  # not part of the identity
        assert r.resumed
    with pytest.raises(UserError) as err:
        RunDir(run, "generate", identity(temperature=0.1)).__enter__()
    message = str(err.value)
    assert "(teacher.temperature: 0.7 -> 0.1)" in message and "--restart" in message
    assert "\n" not in message
    assert (run / "rows.jsonl").is_file()  # nothing touched


def test_restart_moves_the_old_outputs_aside_and_never_deletes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunDir(run, "filter", identity()):
        (run / "kept.jsonl").write_text("old\n")
    with RunDir(run, "filter", identity(temperature=0.1), restart=True) as r:
        assert r.moved_to is not None and not r.resumed
        assert not (run / "kept.jsonl").exists()
        (run / "kept.jsonl").write_text("new\n")
    assert (r.moved_to / "kept.jsonl").read_text() == "old\n"
    assert (
        json.loads((r.moved_to / "identity.json").read_text())["config"]["teacher.temperature"]
        == 0.7
    )
    assert json.loads((run / "identity.json").read_text())["config"]["teacher.temperature"] == 0.1


def test_outputs_without_a_recorded_identity_are_not_adopted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_text("someone else's")
    with pytest.raises(UserError, match="did not record"):
        RunDir(run, "train", identity()).__enter__()


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from distillery.runstate import RunDir
                with RunDir({str(run)!r}, "complete", {{"config": {{}}}}):
                    print("locked", flush=True)
                    time.sleep(30)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"in use by pid {holder.pid} "):
            RunDir(run, "complete", {"config": {}}).__enter__()
    finally:
        holder.kill()  # a killed holder leaves no stale lock
        holder.wait()
    with RunDir(run, "complete", {"config": {}}):
        pass


def test_invocations_add_up_and_a_failed_start_leaves_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunDir(run, "complete", identity()) as r:
        (run / "out.jsonl").write_text("")
        r.record(requests=3, spent_usd=0.25)
        r.exit_code = 4
    with RunDir(run, "complete", identity()) as r:
        r.record(requests=2, spent_usd=0.5)
        assert r.totals("requests", "spent_usd") == {"requests": 5, "spent_usd": 0.75}
    lines = [json.loads(x) for x in (run / "invocations.jsonl").read_text().splitlines()]
    assert [x["exit_code"] for x in lines] == [4, 0] and [x["resumed"] for x in lines] == [
        False,
        True,
    ]

    fresh = tmp_path / "runs" / "fresh"
    with pytest.raises(UserError), RunDir(fresh, "filter", identity()):
        raise UserError("judge: bad key")  # preflight failure before any output
    assert not fresh.exists() and not fresh.parent.exists()


def test_finished_marker_belongs_to_one_identity_and_stale_temps_go(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunDir(run, "train", identity()) as r:
        (run / "metrics.json").write_text("{}")
        (run / ".kept.jsonl.abc123.tmp").write_text("x" * 100)  # a killed atomic write
        r.mark_finished({"steps": 10})
    with RunDir(run, "train", identity()) as r:
        assert r.finished and r.finished["steps"] == 10
        assert not (run / ".kept.jsonl.abc123.tmp").exists()


def test_digests_and_differences(tmp_path: Path) -> None:
    d = tmp_path / "seeds"
    d.mkdir()
    (d / "a.jsonl").write_text("1\n")
    before = file_digest(d)
    (d / "a.jsonl").write_text("2\n")
    assert file_digest(d) != before
    assert input_identity("hf:org/data") == "hf:org/data"
    assert input_identity(d) == file_digest(d)
    text = describe_difference({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 4})
    assert text == "b.c: 2 -> 3; d: (unset) -> 4"


def test_ctrl_c_is_recorded_as_130(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), RunDir(run, "generate", identity()):
        (run / "rows.jsonl").write_text("{}\n")
        raise KeyboardInterrupt
    line = json.loads((run / "invocations.jsonl").read_text().splitlines()[-1])
    assert line["exit_code"] == 130


def test_restart_with_the_same_settings_redoes_from_scratch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunDir(run, "train", identity()) as r:
        (run / "metrics.json").write_text("old")
        r.mark_finished({"steps": 10})
    with RunDir(run, "train", identity(), restart=True) as r:
        assert r.moved_to is not None and not r.resumed and r.finished is None
    assert (r.moved_to / "metrics.json").read_text() == "old"


def test_batch_mode_and_its_settings_are_runtime_settings_of_every_stage() -> None:
    """Sending the same requests through a provider's batch API (or detaching) cannot change
    an answer: a run started online resumes in batch mode, for generate, filter and eval."""
    from distillery.eval.config import EvalConfig
    from distillery.filter.config import FilterConfig
    from distillery.generate.config import GenerateConfig
    from distillery.generate.roles import generate_identity
    from distillery.identity import teacher_runtime_keys

    online = GenerateConfig.model_validate({"teacher": {"spec": "openai:gpt-4o-mini"}})
    batch = GenerateConfig.model_validate(
        {"teacher": {"spec": "openai:gpt-4o-mini", "mode": "batch", "batch": {"detach": True}}}
    )
    assert generate_identity(online) == generate_identity(batch)
    from distillery.filter.run import filter_identity

    judge = {"spec": "openai:gpt-4o-mini"}
    plain = FilterConfig.model_validate({"input": "in.jsonl", "judge": {"teacher": judge}})
    batched = FilterConfig.model_validate(
        {"input": "in.jsonl", "judge": {"teacher": {**judge, "mode": "batch"}}}
    )
    assert filter_identity(plain) == filter_identity(batched)
    assert EvalConfig.model_validate({"judge": {**judge, "mode": "batch"}}).judge.mode == "batch"
    assert {"judge.mode", "judge.batch"} <= set(teacher_runtime_keys(["judge"]))
