"""Re-running `distillery filter` into one output directory, the judge's loud failures, a
judge budget stop, and eval sets named by Hugging Face dataset id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.records import Record

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import server
from tests.test_filter import alpaca_rows, data, run

__all__ = ["data", "server"]


def rows_of(path: Path) -> list[Record]:
    return [Record.model_validate_json(x) for x in path.read_text().splitlines()]


def mock_judge(srv: MockLLMServer, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--steps", "heuristics,judge", "--judge", "openai:mock-model",
        f"judge.teacher.base_urls=[{srv.base_url}/v1]",
        f"judge.teacher.cache_path={tmp_path / 'c.sqlite'}", "judge.teacher.api_key_env=MOCK_KEY",
        "judge.max_parse_retries=0", *extra,
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def _mock_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_KEY", "test")


def test_another_judge_into_the_same_directory_is_refused_then_restarted(
    tmp_path: Path,
    data: tuple[Path, Path],
    server: MockLLMServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inp, _ = data
    fake = ["--steps", "heuristics,judge", "--judge", "fake"]
    assert run(tmp_path, inp, *fake, f"judge.teacher.cache_path={tmp_path / 'c.sqlite'}") == 0
    out = tmp_path / "out"
    kept_before = (out / "kept.jsonl").read_bytes()
    capsys.readouterr()
    other = mock_judge(server, tmp_path, "judge.max_parse_failure_rate=1")
    assert run(tmp_path, inp, *other) == 2
    err = capsys.readouterr().err
    assert "judge.teacher.spec: fake -> openai:mock-model" in err and "--restart" in err
    assert (out / "kept.jsonl").read_bytes() == kept_before  # nothing touched
    assert "spec: fake" in (out / "config.yaml").read_text()
    assert run(tmp_path, inp, *other, "--restart") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"]["model"] == "openai:mock-model"
    judged = [r for r in rows_of(out / "dropped.jsonl") if r.meta["filter_step"] == "judge"]
    assert judged and all(
        {c.model for c in r.trace if c.purpose == "judge:quality"} == {"openai:mock-model"}
        for r in judged
    )
    assert any(p.name.startswith("out.old-") for p in tmp_path.iterdir())


def test_a_finished_filter_run_does_nothing(
    tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inp, _ = data
    assert run(tmp_path, inp) == 0
    before = (tmp_path / "out" / "summary.json").read_bytes()
    capsys.readouterr()
    assert run(tmp_path, inp) == 0
    assert "already finished" in capsys.readouterr().out
    assert (tmp_path / "out" / "summary.json").read_bytes() == before
    inp.write_text(json.dumps(alpaca_rows()[:-1]))  # other input: not the same work
    assert run(tmp_path, inp) == 2
    assert "inputs.input: sha256:" in capsys.readouterr().err


def test_unparsable_verdicts_above_the_bound_fail_loudly(
    tmp_path: Path,
    data: tuple[Path, Path],
    server: MockLLMServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inp, _ = data
    assert run(tmp_path, inp, *mock_judge(server, tmp_path)) == 3  # echo answers: no verdicts
    out_text = capsys.readouterr().out
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())["judge"]
    failed = summary["parse_failures"]
    assert failed > 0 and summary["parse_failure_rate"] > 0.1 and summary["parse_failure_exceeded"]
    line = next(x for x in out_text.splitlines() if x.startswith("judge failed:"))
    assert f"{failed} of {summary['judged']} verdicts could not be parsed" in line
    assert f"{out}/dropped.jsonl" in line and "judge_attempt" in line
    raw = [r for r in rows_of(out / "dropped.jsonl") if r.dropped_by.rule == "judge_parse_error"]  # type: ignore[union-attr]
    assert len(raw) == failed and all(r.dropped_by.evidence["raw"] for r in raw)  # type: ignore[union-attr]


def test_the_summary_always_shows_the_parse_failure_rate(
    tmp_path: Path, data: tuple[Path, Path]
) -> None:
    inp, _ = data
    args = ["--steps", "judge", "--judge", "fake", f"judge.teacher.cache_path={tmp_path / 'c'}"]
    assert run(tmp_path, inp, *args) == 0
    judge = json.loads((tmp_path / "out" / "summary.json").read_text())["judge"]
    assert judge["max_parse_failure_rate"] == 0.1 and not judge["parse_failure_exceeded"]
    assert 0 <= judge["parse_failure_rate"] <= 0.1


def test_judge_budget_stop_exits_4_and_resumes(
    tmp_path: Path,
    data: tuple[Path, Path],
    server: MockLLMServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inp, _ = data
    args = mock_judge(
        server,
        tmp_path,
        "judge.max_parse_failure_rate=1",
        "judge.teacher.prices={mock-model: {input_per_mtok: 1000, output_per_mtok: 1000}}",
        "judge.teacher.max_tokens=20",
        "judge.teacher.concurrency=1",
    )
    assert run(tmp_path, inp, *args, "judge.teacher.max_cost_usd=2") == 4
    captured = capsys.readouterr()
    assert "distillery: stopped:" in captured.err and "Traceback" not in captured.err
    assert "judge.teacher.max_cost_usd" in captured.out
    out = tmp_path / "out"
    journal = out / "journal" / "judge_attempt0.jsonl"
    done_first = len(journal.read_text().splitlines())
    assert 0 < done_first < len(alpaca_rows())
    assert not (out / "config.yaml").exists() and not (out / "kept.jsonl").exists()
    assert run(tmp_path, inp, *args, "judge.teacher.max_cost_usd=1000") == 0  # same run resumes
    entries = [json.loads(x) for x in journal.read_text().splitlines()]
    ok = [e["id"] for e in entries if e["trace"]["status"] == "ok"]
    assert len(set(ok)) == len(ok)  # nothing judged twice (a failed request is re-sent)
    assert (out / "config.yaml").exists()


def test_messages_name_the_real_flags(
    tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inp, _ = data
    assert run(tmp_path, inp, "--steps", "judge") == 2
    err = capsys.readouterr().err
    assert "--judge" in err and "--teacher" not in err


def test_eval_sets_by_hugging_face_id(
    tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inp, _ = data
    hub = tmp_path / "hub" / "IFEval"  # a local dataset directory stands in for the hub id
    hub.mkdir(parents=True)
    (hub / "train.jsonl").write_text(
        json.dumps({"key": 1, "question": "What is the boiling point of water at sea level?"})
        + "\n"
    )
    args = ["--steps", "decontam", "decontam.embedding_threshold=null"]
    assert run(tmp_path, inp, *args, "--against", f"hf:{hub}:train:question") == 0
    dropped = rows_of(tmp_path / "out" / "dropped.jsonl")
    assert [d.dropped_by.evidence["eval_source"] for d in dropped] == [f"{hub}:train"]  # type: ignore[union-attr]
    assert run(tmp_path, inp, *args, "--against", f"hf:{hub}", "--restart") == 0  # text_fields
    assert run(tmp_path, inp, *args, "--against", f"hf:{hub}:train:nope", "--restart") == 2
    assert "no rows with a text field (nope)" in capsys.readouterr().err


def test_a_judge_call_that_fails_is_dropped_as_such_and_not_asked_again(
    tmp_path: Path, server: MockLLMServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A judge call the engine gave up on (here: the server fails it every time) is
    `judge_failed`, with its error; it is not re-asked as if its verdict were unparsable,
    and it is not counted as a parse failure."""
    rows = alpaca_rows()[:4]
    rows[0]["output"] += " [[fault:500:99]]"  # every send of this row's judge request fails
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps(rows))
    args = mock_judge(server, tmp_path, "judge.max_parse_retries=2")
    args += ["judge.teacher.max_retries=1", "judge.teacher.backoff_initial_s=0.01"]
    run(tmp_path, inp, *args)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["judge"]
    assert summary["call_failures"] == 1 and summary["judged"] == 4
    assert summary["parse_failures"] == summary["judged"] - 1  # the echo server's "verdicts"
    failed = [
        r
        for r in rows_of(tmp_path / "out" / "dropped.jsonl")
        if r.dropped_by.rule == "judge_failed"
    ]  # type: ignore[union-attr]
    assert len(failed) == 1 and "500" in (failed[0].dropped_by.reason or "")  # type: ignore[union-attr]
    assert server.stats.faults["500"] == 2  # one send and one engine retry; never re-asked
    assert (
        "judge calls that failed (rule <code>judge_failed</code>): 1"
        in (tmp_path / "out" / "report.html").read_text()
    )
