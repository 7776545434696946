"""`distillery complete` end to end: resume, failures, budget, bad input, secrets, kill -9, vllm."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distillery.cli import main
from distillery.complete import journal_path

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import chat_requests, server, stats

__all__ = ["server"]


def write_input(path: Path, n: int, fault: dict[int, str] | None = None) -> Path:
    with path.open("w") as handle:
        for i in range(n):
            text = f"question {i}" + (f" [[fault:{fault[i]}]]" if fault and i in fault else "")
            row = {"id": f"q{i}", "messages": [{"role": "user", "content": text}], "topic": i % 3}
            handle.write(json.dumps(row) + "\n")
    return path


def args(srv: MockLLMServer, tmp_path: Path, inp: Path, out: Path, *extra: str) -> list[str]:
    return [
        "complete",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--teacher",
        "openai:mock-model",
        "--quiet",
        f"teacher.base_urls=[{srv.base_url}/v1]",
        f"teacher.cache_path={tmp_path / 'c.sqlite'}",
        "teacher.backoff_initial_s=0.01",
        "teacher.backoff_max_s=0.02",
        "teacher.timeout_s=5",
        *extra,
    ]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_complete_writes_rows_in_order_and_resumes_for_free(
    server: MockLLMServer, tmp_path: Path
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 30), tmp_path / "out.jsonl"
    assert main(args(server, tmp_path, inp, out)) == 0
    rows = read(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(30)]
    assert rows[7]["response"] == "echo: question 7" and rows[7]["error"] is None
    assert rows[7]["topic"] == 1  # extra fields carried through
    assert set(rows[0]) == {
        *("id", "response", "finish_reason", "usage", "model", "error", "raw_response", "topic")
    }
    assert chat_requests(server) == 30
    first = out.read_text()
    assert main(args(server, tmp_path, inp, out)) == 0
    assert chat_requests(server) == 30  # nothing re-sent
    assert out.read_text() == first
    assert (tmp_path / "out.config.yaml").exists()


def test_failed_items_are_recorded_then_retried_on_rerun(
    server: MockLLMServer, tmp_path: Path
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 5, fault={2: "500:3"}), tmp_path / "out.jsonl"
    assert main(args(server, tmp_path, inp, out, "teacher.max_retries=1")) == 1
    rows = {r["id"]: r for r in read(out)}
    assert rows["q2"]["response"] is None and "HTTP 500" in rows["q2"]["error"]
    assert all(rows[f"q{i}"]["error"] is None for i in (0, 1, 3, 4))
    assert main(args(server, tmp_path, inp, out, "teacher.max_retries=1")) == 0
    rows = {r["id"]: r for r in read(out)}
    assert rows["q2"]["response"].startswith("echo: question 2") and rows["q2"]["error"] is None
    assert chat_requests(server) == 5 + 3  # q2 sent 4 times in all, nothing else re-sent


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"id": 1, "messages": [{"role": "user", "content": "a"}]}\n{"id": 2, "mess',
            ":2: malformed JSON",
        ),
        ('{"id": 1, "messages": [{"role": "user", "content": "a"}]}\n' * 2, ":2: duplicate id '1'"),
        ('{"id": 1, "messages": []}\n', ":1: field 'messages' must be a non-empty list"),
        ('{"id": 1, "messages": [{"role": "bot", "content": "a"}]}\n', ":1: messages[0] must be"),
        ('{"messages": [{"role": "user", "content": "a"}]}\n', ":1: field 'id' must be"),
    ],
)
def test_bad_input_fails_before_any_request(
    server: MockLLMServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    expected: str,
) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(content)
    assert main(args(server, tmp_path, inp, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{inp}{expected}" in err[0]
    assert stats(server)["requests"] == {}
    assert not out.exists()


def test_budget_stop_saves_progress_and_resume_finishes(
    server: MockLLMServer, tmp_path: Path
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 40), tmp_path / "out.jsonl"
    price = "teacher.prices={mock-model: {input_per_mtok: 1000, output_per_mtok: 1000}}"
    common = (price, "teacher.max_tokens=20", "teacher.concurrency=4")
    assert main(args(server, tmp_path, inp, out, *common, "teacher.max_cost_usd=0.1")) == 4
    done = read(out)
    assert 0 < len(done) < 40 and all(r["error"] is None for r in done)
    assert sum(r["usage"]["cost_usd"] for r in done) <= 0.1
    sent_first = chat_requests(server)
    assert main(args(server, tmp_path, inp, out, *common, "teacher.max_cost_usd=10")) == 0
    assert [r["id"] for r in read(out)] == [f"q{i}" for i in range(40)]
    assert chat_requests(server) == sent_first + 40 - len(done)


def test_no_secret_reaches_any_file_or_output(
    server: MockLLMServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "sk-test-SECRET-9f8e7d6c5b4a"
    server.configure(api_key=secret)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    inp, out = (
        write_input(tmp_path / "in.jsonl", 10, fault={1: "500:99", 2: "429"}),
        tmp_path / "out.jsonl",
    )
    assert main(args(server, tmp_path, inp, out, "teacher.max_retries=1")) == 1
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".sqlite") for p in files) and journal_path(out).exists()
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def test_missing_teacher_and_fake_teacher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    assert main(["complete", "--input", str(inp), "--output", str(out)]) == 2
    assert "no teacher configured" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # nothing half-written
    cache = f"teacher.cache_path={tmp_path / 'c.sqlite'}"
    assert (
        main(
            [
                "complete",
                "--input",
                str(inp),
                "--output",
                str(out),
                "--teacher",
                "fake",
                "--quiet",
                cache,
            ]
        )
        == 0
    )
    assert read(out)[0]["response"].endswith("question 0")


def wait_for_lines(path: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_with_exactly_the_same_items(
    server: MockLLMServer, tmp_path: Path
) -> None:
    server.configure(latency_s=0.05)
    n, concurrency = 300, 8
    inp, out = write_input(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "distillery.cli",
        *args(server, tmp_path, inp, out, f"teacher.concurrency={concurrency}"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lines(journal_path(out), 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # no half-written output under the final name
    done_before = journal_path(out).read_text().count("\n")
    assert done_before < n
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    rows = read(out)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(n)]
    assert all(r["response"] == f"echo: question {i}" for i, r in enumerate(rows))
    per_item = stats(server)["per_item"].values()
    resent = sum(c - 1 for c in per_item)
    assert len(per_item) == n and resent <= concurrency  # at most the in-flight requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_vllm_backend_starts_the_server_and_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in `vllm` executable that serves the OpenAI protocol, as `vllm serve` does."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "vllm"
    root = Path(__file__).resolve().parent.parent
    exe.write_text(
        f"#!/bin/sh\n# vllm serve MODEL --port P\ncd {root}\n"
        f'exec {sys.executable} -m tests.helpers.mockserver --model "$2" --port "$4"\n'
    )
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    inp, out = write_input(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    cmd = [
        "complete",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--teacher",
        "vllm:mock-model",
        "--quiet",
        f"teacher.vllm.port={free_port()}",
        "teacher.vllm.startup_timeout_s=30",
        f"teacher.cache_path={tmp_path / 'c.sqlite'}",
    ]
    assert main(cmd) == 0
    assert read(out)[3]["response"] == "echo: question 3"


def test_vllm_not_installed_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 1), tmp_path / "out.jsonl"
    cmd = [
        "complete",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--teacher",
        "vllm:some/model",
        "teacher.vllm.executable=/nonexistent/vllm",
        f"teacher.vllm.port={free_port()}",
    ]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert "vllm is not installed" in err and "pip install -e '.[vllm]'" in err


# -- re-runs you can trust (#13) ---------------------------------------------------------------


def edit_messages(path: Path, changes: dict[str, str]) -> None:
    rows = read(path)
    for row in rows:
        if row["id"] in changes:
            row["messages"] = [{"role": "user", "content": changes[row["id"]]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_edited_input_rows_are_redone_and_only_those(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    assert main(args(server, tmp_path, inp, out)) == 0
    edit_messages(inp, {"q1": "new question one", "q3": "new question three"})
    (tmp_path / ".out.jsonl.x1y2.tmp").write_text("left by a kill -9 during the final write")
    capsys.readouterr()
    assert main(args(server, tmp_path, inp, out)) == 0
    rows = {r["id"]: r for r in read(out)}
    assert rows["q1"]["response"] == "echo: new question one"
    assert rows["q3"]["response"] == "echo: new question three"
    assert rows["q0"]["response"] == "echo: question 0"
    assert chat_requests(server) == 7  # 5, then only the 2 changed requests
    assert "3 already done, 2 redone because their request changed" in capsys.readouterr().out
    assert not (tmp_path / ".out.jsonl.x1y2.tmp").exists()


def test_another_teacher_or_temperature_stops_naming_it_and_restart_moves_old_aside(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    assert main(args(server, tmp_path, inp, out)) == 0
    first = out.read_text()
    capsys.readouterr()
    changed = args(server, tmp_path, inp, out, "teacher.temperature=0.1", "teacher.seed=3")
    assert main(changed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "teacher.seed: null -> 3" in err[0] and "teacher.temperature: 0.7 -> 0.1" in err[0]
    assert "--restart" in err[0]
    assert out.read_text() == first and chat_requests(server) == 5  # nothing sent or changed
    assert main([*changed, "--restart"]) == 0
    (old,) = tmp_path.glob("out.jsonl.run.old-*")
    assert (old / "out.jsonl").read_text() == first and (old / "journal.jsonl").exists()
    assert (old / "out.config.yaml").exists()
    assert chat_requests(server) == 10  # other sampling parameters: every request is new
    assert "temperature: 0.1" in (tmp_path / "out.config.yaml").read_text()


def test_output_equal_to_input_is_an_error_and_the_input_survives(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_input(tmp_path / "in.jsonl", 3)
    before = inp.read_text()
    assert main(args(server, tmp_path, inp, tmp_path / "." / "in.jsonl")) == 2
    assert "would write over the input file" in capsys.readouterr().err
    assert inp.read_text() == before and chat_requests(server) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_second_run_on_the_same_output_fails_at_once_naming_the_holder(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.configure(latency_s=0.2)
    inp, out = write_input(tmp_path / "in.jsonl", 40), tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "distillery.cli", *args(server, tmp_path, inp, out)]
    first = subprocess.Popen([*cmd, "teacher.concurrency=1"], stderr=subprocess.DEVNULL)
    try:
        wait_for_lines(journal_path(out), 1)
        started = time.monotonic()
        assert main(args(server, tmp_path, inp, out)) == 2
        assert time.monotonic() - started < 5
        err = capsys.readouterr().err
        assert f"in use by pid {first.pid}" in err and "distillery complete" in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    per_item = stats(server)["per_item"].values()
    assert all(n == 1 for n in per_item)  # the second run sent nothing


def test_manifest_adds_up_every_invocation_and_one_total_is_printed(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 40), tmp_path / "out.jsonl"
    price = "teacher.prices={mock-model: {input_per_mtok: 1000, output_per_mtok: 1000}}"
    common = (price, "teacher.max_tokens=20", "teacher.concurrency=4")
    assert main(args(server, tmp_path, inp, out, *common, "teacher.max_cost_usd=0.1")) == 4
    printed = capsys.readouterr()
    (stop_line,) = printed.err.strip().splitlines()
    assert stop_line.startswith("distillery: stopped: teacher openai:mock-model: max_cost_usd=0.1")
    assert "$" not in stop_line  # the spend is said once, in the summary
    first = json.loads((tmp_path / "out.jsonl.run" / "manifest.json").read_text())
    assert f"spent ${first['spent_usd']:.4f}" in printed.out
    assert main(args(server, tmp_path, inp, out, *common, "teacher.max_cost_usd=10")) == 0
    manifest = json.loads((tmp_path / "out.jsonl.run" / "manifest.json").read_text())
    assert manifest["requests_sent"] == chat_requests(server)
    assert [i["exit_code"] for i in manifest["invocations"]] == [4, 0]
    assert [i["resumed"] for i in manifest["invocations"]] == [False, True]
    assert all(len(i["started"]) == len("2026-01-01T00:00:00") for i in manifest["invocations"])
    spent = sum(i["spent_usd"] for i in manifest["invocations"])
    assert manifest["spent_usd"] == pytest.approx(spent) and spent > first["spent_usd"]
    teacher = manifest["teachers"]["openai:mock-model"]
    assert teacher["requests_sent"] == chat_requests(server)
    assert teacher["spent_usd"] == manifest["spent_usd"]
    assert manifest["rows"] == 40 and manifest["rows_not_done"] == 0
    assert (
        f"${manifest['spent_usd']:.4f} over this output's 2 invocations" in capsys.readouterr().out
    )


def test_a_cut_off_answer_keeps_its_raw_text_in_the_output_row(
    server: MockLLMServer, tmp_path: Path
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 2, fault={1: "length:9"}), tmp_path / "out.jsonl"
    assert main(args(server, tmp_path, inp, out, "teacher.max_length_retries=0")) == 1
    row = read(out)[1]
    assert row["response"] is None and "cut off" in row["error"]
    assert row["raw_response"].startswith("echo: question 1")
    assert read(out)[0]["raw_response"] is None


def test_teacher_without_a_model_name_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 1), tmp_path / "out.jsonl"
    assert (
        main(["complete", "--input", str(inp), "--output", str(out), "--teacher", "openai:"]) == 2
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "the model name is missing in 'openai:'" in line and "openai:MODEL" in line
    assert not out.exists() and not (tmp_path / "out.jsonl.run").exists()


def test_a_finished_job_rerun_does_nothing_until_its_input_changes(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    assert main(args(server, tmp_path, inp, out)) == 0
    before = out.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args(server, tmp_path, inp, out)) == 0
    assert "already finished (4 rows, same input and settings)" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == before  # not rewritten
    write_input(inp, 5)  # one more row: the same run, not finished any more
    assert main(args(server, tmp_path, inp, out)) == 0
    assert [r["id"] for r in read(out)] == [f"q{i}" for i in range(5)]
    assert chat_requests(server) == 5  # only the new row was sent
