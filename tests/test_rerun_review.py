"""Re-runs as a user breaks them: kill -9, Ctrl-C, then the same command again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from distillery.complete import journal_path, run_dir_for
from distillery.runstate import RunDir

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import server, stats
from tests.test_complete import args, read, wait_for_lines, write_input

__all__ = ["server"]


def test_a_killed_invocation_still_counts(tmp_path: Path) -> None:
    """An invocation that never closes (kill -9) keeps its counters: the next one adds them."""
    run = tmp_path / "run"
    killed = RunDir(run, "complete", {"config": {}, "inputs": {}}).__enter__()
    killed.record(requests_sent=5, spent_usd=0.25)
    killed.record(requests_sent=7, spent_usd=0.5)  # the latest counters count
    assert killed._lock_fh is not None
    killed._lock_fh.close()  # the process dies: its lock goes, nothing else runs
    with RunDir(run, "complete", {"config": {}, "inputs": {}}) as again:
        earlier = list(again.previous())
        assert [r["exit_code"] for r in earlier] == ["killed"]
        again.record(requests_sent=3, spent_usd=0.25)
        assert again.totals("requests_sent", "spent_usd") == {
            "requests_sent": 10,
            "spent_usd": 0.75,
        }
    assert not (run / "running.json").exists()
    lines = (run / "invocations.jsonl").read_text().splitlines()
    assert [json.loads(x)["exit_code"] for x in lines] == ["killed", 0]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_complete_manifest_adds_up_over_a_killed_invocation(
    server: MockLLMServer, tmp_path: Path, sig: signal.Signals
) -> None:
    server.configure(latency_s=0.05)
    n = 200
    inp, out = write_input(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "distillery.cli", *args(server, tmp_path, inp, out)]
    cmd += ["teacher.concurrency=4", "--no-cache"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lines(journal_path(out), 40)
    proc.send_signal(sig)
    proc.wait()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert [r["response"] for r in read(out)] == [f"echo: question {i}" for i in range(n)]
    manifest = json.loads((run_dir_for(out) / "manifest.json").read_text())
    sent = sum(stats(server)["per_item"].values())
    # every request made over both invocations, but for those a kill -9 caught in flight
    # after the last answer (at most `concurrency`); the old manifest had only the second's
    assert sent - 4 <= manifest["requests_sent"] <= sent
    assert manifest["requests_sent"] >= n  # each row was answered by a request it counts
    teacher = manifest["teachers"]["openai:mock-model"]
    assert teacher["input_tokens"] == sum(r["usage"]["input_tokens"] for r in read(out))
    assert len(manifest["invocations"]) == 2
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("running.json"))


def test_overrides_after_a_flag_are_overrides(tmp_path: Path) -> None:
    """`... --quiet key=value` (an override appended to a copied command) is not refused."""
    from distillery.cli import main

    inp, out = write_input(tmp_path / "in.jsonl", 2), tmp_path / "out.jsonl"
    cache = f"teacher.cache_path={tmp_path / 'c.sqlite'}"
    argv = ["complete", "--input", str(inp), "--output", str(out), "--teacher", "fake"]
    assert main([*argv, cache, "--quiet", "teacher.temperature=0.1"]) == 0
    assert "temperature: 0.1" in (tmp_path / "out.config.yaml").read_text()
    with pytest.raises(SystemExit) as exc:  # anything else after a flag is still refused
        main([*argv, "--quiet", "a=1", "--no-cache", "stray"])
    assert exc.value.code == 2


def _filter_rows(path: Path, n: int = 4) -> Path:
    rows = [
        {
            "instruction": f"Explain topic number {i} in two sentences.",
            "output": f"Topic {i} is"
            " a subject that people study. It has a long history and many uses.",
        }
        for i in range(n)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_filter_refuses_an_input_inside_its_output_dir(tmp_path: Path) -> None:
    """Else `--restart` moves the input aside with the old outputs and the new run's
    config names, as its input, a file it then overwrites."""
    from distillery.cli import main

    out = tmp_path / "out"
    inp = _filter_rows(out / "kept.jsonl")
    before = inp.read_bytes()
    for extra in ([], ["--restart"]):
        argv = ["filter", "--input", str(inp), "--output-dir", str(out), "--steps", "heuristics"]
        assert main([*argv, *extra]) == 2
        assert inp.read_bytes() == before and sorted(p.name for p in out.iterdir()) == [
            "kept.jsonl"
        ]


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    from distillery.cli import main

    inp = _filter_rows(tmp_path / "in.jsonl")
    for out in (inp, inp / "sub"):
        argv = ["filter", "--input", str(inp), "--output-dir", str(out), "--steps", "heuristics"]
        assert main(argv) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_train_refuses_inputs_inside_its_output_dir(tmp_path: Path) -> None:
    """`--output-dir` = the base model with `--restart` moved the model aside and crashed; a
    `--data` inside it was moved aside and then named as the data of the new run."""
    from distillery.cli import main

    from tests.tiny_models import build_tiny_lm

    model = build_tiny_lm(tmp_path / "student")
    data = tmp_path / "out" / "eval_split.jsonl"
    data.parent.mkdir()
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    data.write_text(json.dumps({"messages": turns}) + "\n")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    common = ["--model", str(model), "--data", str(data), "max_steps=1", "--restart"]
    for out in (model, data.parent):
        assert main(["train", *common, "--output-dir", str(out)]) == 2
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def _winrate_argv(tmp_path: Path, student: Path) -> list[str]:
    questions, baseline = tmp_path / "q.jsonl", tmp_path / "base.jsonl"
    questions.write_text("".join(json.dumps({"id": f"e{i}", "instruction": f"Name {i} fruits."})
                                 + "\n" for i in range(3)))  # fmt: skip
    baseline.write_text("".join(json.dumps({"id": f"e{i}", "response": "apple"}) + "\n"
                                for i in range(3)))  # fmt: skip
    return [
        "eval", "winrate", "--instructions", str(questions), "--judge", "fake",
        "--student-responses", str(student), "--baseline-responses", str(baseline),
        "--output-dir", str(tmp_path / "ev"), f"judge.cache_path={tmp_path / 'c.sqlite'}",
    ]  # fmt: skip


def test_a_failed_winrate_rerun_leaves_the_old_config_beside_the_old_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distillery.cli import main

    student = tmp_path / "student.jsonl"
    student.write_text("".join(json.dumps({"id": f"e{i}", "response": f"{i} pears"}) + "\n"
                               for i in range(3)))  # fmt: skip
    assert main(_winrate_argv(tmp_path, student)) == 0
    config = (tmp_path / "ev" / "winrate_config.yaml").read_text()
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"id": "e0", "response": "pears"}) + "\n")
    assert main(_winrate_argv(tmp_path, partial)) == 2
    assert (tmp_path / "ev" / "winrate_config.yaml").read_text() == config


def test_a_second_eval_on_one_output_dir_fails_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distillery.cli import main
    from distillery.runstate import acquire_lock

    student = tmp_path / "student.jsonl"
    student.write_text("".join(json.dumps({"id": f"e{i}", "response": "pear"}) + "\n"
                               for i in range(3)))  # fmt: skip
    (tmp_path / "ev").mkdir()
    holder = acquire_lock(tmp_path / "ev")  # another run is writing ev/
    try:
        assert main(_winrate_argv(tmp_path, student)) == 2
        assert "in use by pid" in capsys.readouterr().err
        assert not (tmp_path / "ev" / "winrate_summary.json").exists()
    finally:
        holder.close()
    assert main(_winrate_argv(tmp_path, student)) == 0


def test_generate_refuses_seeds_inside_its_run_dir(tmp_path: Path) -> None:
    """With `--restart` the seeds went aside with the old outputs and the new run's
    config.yaml named seeds that were no longer there."""
    import shutil

    from distillery.cli import main
    from distillery.resources import shipped

    seeds = tmp_path / "runs" / "r1" / "seeds"
    shutil.copytree(shipped("seeds"), seeds)
    before = sorted(p.name for p in (tmp_path / "runs" / "r1").iterdir())
    argv = ["generate", "--teacher", "fake", "--quiet", f"seeds={seeds}", "run_id=r1"]
    argv += [f"output_dir={tmp_path / 'runs'}", "num_instructions=2", "--restart"]
    assert main(argv) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r1"]
    assert sorted(p.name for p in (tmp_path / "runs" / "r1").iterdir()) == before


def test_complete_does_not_overwrite_a_file_it_did_not_write(tmp_path: Path) -> None:
    from distillery.cli import main

    inp, out = write_input(tmp_path / "in.jsonl", 2), tmp_path / "mine.jsonl"
    out.write_text('{"precious": 1}\n')
    argv = ["complete", "--input", str(inp), "--output", str(out), "--teacher", "fake"]
    argv += ["--quiet", f"teacher.cache_path={tmp_path / 'c.sqlite'}"]
    assert main(argv) == 2
    assert out.read_text() == '{"precious": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "mine.jsonl"]
    out.unlink()
    assert main(argv) == 0 and main(argv) == 0  # its own output: resumed, not refused


def test_ctrl_c_inside_asyncio_run_is_recorded_as_130(tmp_path: Path) -> None:
    """generate opens its run directory inside `asyncio.run`, where Ctrl-C arrives as the
    main task's cancellation: the invocation said exit code null."""
    import asyncio

    async def interrupted() -> None:
        with RunDir(tmp_path / "run", "generate", {"config": {}, "inputs": {}}) as run:
            run.record(requests_sent=1)
            (run.path / "journal.jsonl").write_text("{}\n")  # work done before Ctrl-C
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted())
    lines = (tmp_path / "run" / "invocations.jsonl").read_text().splitlines()
    assert [json.loads(x)["exit_code"] for x in lines] == [130]


def test_filter_summary_counts_the_judges_requests(tmp_path: Path) -> None:
    """The judge's requests, tokens and spend are in summary.json (they were nowhere), summed
    over invocations, recorded after every verdict so a killed invocation counts too."""
    from distillery.cli import main

    inp = _filter_rows(tmp_path / "in.jsonl", 5)
    out = tmp_path / "out"
    argv = ["filter", "--input", str(inp), "--output-dir", str(out), "--steps", "judge"]
    argv += ["--judge", "fake", f"judge.teacher.cache_path={tmp_path / 'c.sqlite'}"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    usage = summary["judge_usage"]
    assert usage["requests_sent"] == 5 and usage["input_tokens"] > 0
    lines = (out / "invocations.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["counters"]["requests_sent"] == 5


def test_a_dataset_save_killed_midway_is_cleaned_up_by_the_next_run(tmp_path: Path) -> None:
    """`save_hf_dataset` stages in a temp directory; a kill left `.kept_dataset.XXXX/` in the
    run directory for good. It is now `.kept_dataset.XXXX.tmp/` and removed on open."""
    from distillery.export import save_hf_dataset

    run, ident = tmp_path / "run", {"config": {}, "inputs": {}}
    with RunDir(run, "filter", ident):
        (run / "kept.jsonl").write_text("")
    with pytest.MonkeyPatch.context() as mp:  # the kill: the staging dir outlives the save
        mp.setattr("shutil.rmtree", lambda *a, **k: None)
        mp.setattr("distillery.export.to_hf_dataset", lambda rows: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            save_hf_dataset([], run / "kept_dataset")
    assert [p.name for p in run.iterdir() if p.name.startswith(".kept_dataset.")]
    with RunDir(run, "filter", ident) as again:  # the same command again: a resume
        assert again.resumed
        assert not [p for p in run.iterdir() if p.name.startswith(".kept_dataset.")]
