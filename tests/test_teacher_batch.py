"""`teacher.mode: batch` end to end through `distillery complete`, the real `openai` and
`anthropic` SDKs and a loopback server speaking both batch protocols (tests/helpers/
batchserver.py): exactly-once answers and cost across faults, detach, cancel, kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from distillery.cli import main
from distillery.teacher.batch_ledger import Ledger, in_run_dir, ledger_dir
from distillery.teacher.config import Price, TeacherConfig
from distillery.teacher.pricing import cost, price_for

from tests.helpers.batchserver import BatchAPIs
from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import chat_requests

PRICE = Price(input_per_mtok=1.0, output_per_mtok=3.0)  # batch column: 0.5 / 1.5
FAST = (
    "teacher.mode=batch",
    "teacher.batch.collect_s=0.02",
    "teacher.batch.poll_initial_s=0.01",
    "teacher.batch.poll_max_s=0.03",
    "teacher.batch.progress_every_s=0",
    "teacher.backoff_initial_s=0.01",
    "teacher.backoff_max_s=0.02",
    "teacher.timeout_s=5",
)


@pytest.fixture
def batch_server() -> Iterator[tuple[MockLLMServer, BatchAPIs]]:
    srv = MockLLMServer()
    apis = BatchAPIs(srv)
    srv.start_in_thread()
    yield srv, apis
    srv.stop_thread()


def write_input(path: Path, n: int, marks: dict[int, str] | None = None) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            text = f"question {i}" + (f" {marks[i]}" if marks and i in marks else "")
            fh.write(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": text}]}))
            fh.write("\n")
    return path


def command(srv: MockLLMServer, tmp: Path, protocol: str, n: int = 10, *extra: str) -> list[str]:
    inp = tmp / "in.jsonl"
    if not inp.exists():
        write_input(inp, n)
    base = f"{srv.base_url}/v1" if protocol == "openai" else srv.base_url
    return [
        "complete", "--input", str(inp), "--output", str(tmp / "out.jsonl"),
        "--teacher", f"{protocol}:mock-model", "--quiet",
        f"teacher.base_urls=[{base}]", f"teacher.cache_path={tmp / 'cache.sqlite'}",
        "teacher.prices={mock-model: {input_per_mtok: 1.0, output_per_mtok: 3.0}}",
        *FAST, *extra,
    ]  # fmt: skip


def rows(tmp: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp / "out.jsonl").read_text().splitlines()]


def manifest(tmp: Path) -> dict:
    return json.loads((tmp / "out.jsonl.run" / "manifest.json").read_text())


def check_exactly_once(tmp: Path, n: int, failed: frozenset[int] = frozenset()) -> None:
    """Every item answered once with its own answer; the spend is the sum of the priced
    answers at batch prices, and the manifest says the same."""
    out = rows(tmp)
    assert [r["id"] for r in out] == [f"q{i}" for i in range(n)]
    for i, row in enumerate(out):
        if i in failed:
            assert row["response"] is None and row["error"]
        else:
            assert row["response"] == f"echo: question {i}", row
    batch_price = Price(input_per_mtok=0.5, output_per_mtok=1.5)
    priced = sum(
        cost(batch_price, r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in out
    )
    assert sum(r["usage"]["cost_usd"] for r in out) == pytest.approx(priced)
    assert manifest(tmp)["spent_usd"] == pytest.approx(priced, abs=1e-6)
    records = ledger(tmp).load()
    assert all(r.phase in ("collected", "not_submitted") for r in records)
    assert sum(r.cost_usd for r in records) == pytest.approx(priced, abs=1e-6)  # `batches status`


def ledger(tmp: Path) -> Ledger:
    return Ledger(tmp / "out.jsonl.run" / "batches")


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_batch_mode_completes_every_item_once_at_half_price(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, protocol: str
) -> None:
    srv, apis = batch_server
    assert main(command(srv, tmp_path, protocol, 12)) == 0
    check_exactly_once(tmp_path, 12)
    assert chat_requests(srv) == 0  # nothing went to the online routes
    assert len(apis.batches) == 1 and set(apis.submitted.values()) == {1}
    assert len(apis.submitted) == 12
    assert main(command(srv, tmp_path, protocol, 12)) == 0  # finished: nothing sent again
    assert sum(apis.submitted.values()) == 12


@pytest.mark.parametrize("spec", ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"])
def test_real_model_names_cost_half_their_list_price(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, spec: str
) -> None:
    """`distillery complete --teacher openai:gpt-4o-mini teacher.mode=batch` (and Anthropic's)
    end to end, priced from the price table's batch column."""
    srv, apis = batch_server
    protocol, model = spec.split(":")
    srv.configure(models=[model])
    args = command(srv, tmp_path, protocol, 5)
    args = [a for a in args if not a.startswith("teacher.prices=")]
    args[args.index(f"{protocol}:mock-model")] = spec
    assert main(args) == 0
    out = rows(tmp_path)
    assert [r["response"] for r in out] == [f"echo: question {i}" for i in range(5)]
    online = price_for(TeacherConfig(spec=spec))
    assert online is not None
    half = Price(
        input_per_mtok=online.input_per_mtok / 2, output_per_mtok=online.output_per_mtok / 2
    )
    for r in out:
        want = cost(half, r["usage"]["input_tokens"], r["usage"]["output_tokens"])
        assert r["usage"]["cost_usd"] == pytest.approx(want) and want > 0
    assert set(apis.submitted.values()) == {1} and len(apis.submitted) == 5


def test_batches_respect_the_request_and_byte_limits(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, apis = batch_server
    args = command(srv, tmp_path, "openai", 25, "teacher.batch.max_requests=10")
    assert main(args) == 0
    assert sorted(len(b.items) for b in apis.batches.values()) == [5, 10, 10]
    check_exactly_once(tmp_path, 25)
    tmp2 = tmp_path / "bytes"
    tmp2.mkdir()
    one_line = 400  # bytes of one OpenAI input line here, about
    assert main(command(srv, tmp2, "openai", 6, f"teacher.batch.max_bytes={2 * one_line}")) == 0
    sizes = [len(b.items) for b in list(apis.batches.values())[3:]]
    assert sum(sizes) == 6 and max(sizes) <= 2


# fault -> (protocols, which of the batch's items must be submitted a second time)
FAULTS = {
    "validation": (["openai"], "all"),
    "expire_half": (["openai", "anthropic"], "second_half"),
    "error_lines:3": (["openai", "anthropic"], "first_3"),
    "shuffle": (["openai", "anthropic"], "none"),
    "duplicate": (["openai", "anthropic"], "none"),
    "create_lost": (["openai", "anthropic"], "none"),
    "unknown_id": (["openai", "anthropic"], "none"),
    "torn_last": (["openai", "anthropic"], "last"),
}
CASES = [(f, p) for f, (protocols, _) in FAULTS.items() for p in protocols]


@pytest.mark.parametrize(("fault", "protocol"), CASES)
def test_fault_matrix_answers_each_item_once_and_resubmits_only_the_unfinished(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, fault: str, protocol: str
) -> None:
    srv, apis = batch_server
    apis.script = [fault]
    n = 10
    assert main(command(srv, tmp_path, protocol, n)) == 0
    check_exactly_once(tmp_path, n)
    first = [custom_id for custom_id, _ in next(iter(apis.batches.values())).items]
    again = {
        "all": set(first),
        "second_half": set(first[n // 2 :]),
        "first_3": set(first[:3]),
        "last": set(first[-1:]),
        "none": set(),
    }[FAULTS[fault][1]]
    assert {k for k, c in apis.submitted.items() if c == 2} == again
    assert set(apis.submitted.values()) <= {1, 2} and len(apis.submitted) == n


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_5xx_and_dropped_connections_while_polling_only_delay(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, protocol: str
) -> None:
    srv, apis = batch_server
    apis.poll_faults = ["500", "drop", "500", "drop"]
    assert main(command(srv, tmp_path, protocol, 8)) == 0
    check_exactly_once(tmp_path, 8)
    assert not apis.poll_faults and set(apis.submitted.values()) == {1}


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_an_invalid_request_is_recorded_failed_with_the_raw_error_and_not_retried(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, protocol: str
) -> None:
    srv, apis = batch_server
    write_input(tmp_path / "in.jsonl", 6, {4: "[[batch-invalid]]"})
    assert main(command(srv, tmp_path, protocol, 6)) == 1
    out = rows(tmp_path)
    assert "invalid_request_error" in out[4]["error"] and out[4]["response"] is None
    assert [r["response"] for r in out[:4]] == [f"echo: question {i}" for i in range(4)]
    assert set(apis.submitted.values()) == {1}  # permanent: never resubmitted


def test_max_cost_usd_holds_every_batch_within_the_cap(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, apis = batch_server
    # worst case per item: ~3 input tokens + 100 output tokens at 1.5 $/M = ~0.00015 $
    extra = ("teacher.max_tokens=100", "--max-cost-usd", "0.0006")
    assert main(command(srv, tmp_path, "openai", 10, *extra)) == 4
    sent = sum(apis.submitted.values())
    assert 0 < sent < 10  # only what the cap could pay for was ever submitted
    assert manifest(tmp_path)["spent_usd"] <= 0.0006
    assert main(command(srv, tmp_path, "openai", 10, "teacher.max_tokens=100")) == 0
    check_exactly_once(tmp_path, 10)
    assert set(apis.submitted.values()) == {1}


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_detach_then_status_cancel_and_resume(
    batch_server: tuple[MockLLMServer, BatchAPIs],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    protocol: str,
) -> None:
    srv, apis = batch_server
    apis.polls_to_end = 10**6  # the batch stays open until the test lets it end
    assert main([*command(srv, tmp_path, protocol, 6), "--detach"]) == 0
    said = capsys.readouterr().out
    assert "detached: 6 items wait in 1 submitted batches" in said and "batches status" in said
    assert not (tmp_path / "out.jsonl").exists()
    run_dir = str(tmp_path / "out.jsonl.run")
    assert main(["batches", "status", run_dir]) == 0
    assert "1 open" in capsys.readouterr().out
    assert main([*command(srv, tmp_path, protocol, 6), "--detach"]) == 0  # still open
    assert set(apis.submitted.values()) == {1}  # re-attached, not resubmitted
    assert main(["batches", "cancel", run_dir]) == 0
    apis.polls_to_end = 1
    assert main(command(srv, tmp_path, protocol, 6)) == 0
    check_exactly_once(tmp_path, 6)
    assert set(apis.submitted.values()) == {2}  # the cancelled batch answered nothing


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_kill_9_after_submission_then_resume_submits_nothing_twice(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, stop: signal.Signals
) -> None:
    """`kill -9`, or Ctrl-C (SIGINT: exit 130), while the batch is open; the re-run
    re-attaches to it."""
    srv, apis = batch_server
    apis.polls_to_end = 10**6
    n = 40
    cmd = [sys.executable, "-m", "distillery.cli", *command(srv, tmp_path, "openai", n)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(r.phase == "open" for r in ledger(tmp_path).load()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(stop)
    assert proc.wait() == (-9 if stop == signal.SIGKILL else 130)
    assert sum(apis.submitted.values()) == n and not (tmp_path / "out.jsonl").exists()
    apis.polls_to_end = 1
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    check_exactly_once(tmp_path, n)
    assert set(apis.submitted.values()) == {1} and len(apis.submitted) == n


def test_a_submission_killed_before_its_create_answer_is_found_not_resubmitted(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    """The ledger says `submitting` with the uploaded file (the kill came before the create
    call answered) and the provider holds the batch: the re-run finds it by its file."""
    srv, apis = batch_server
    apis.script = ["create_lost"]
    apis.polls_to_end = 10**6
    args = [*command(srv, tmp_path, "openai", 5), "--detach"]
    assert main(args) == 0  # found after the lost answer, then detached
    (record,) = ledger(tmp_path).load()
    record.phase, record.remote_id = "submitting", None  # as a kill would have left it
    ledger(tmp_path).save(record)
    apis.polls_to_end = 1
    assert main(command(srv, tmp_path, "openai", 5)) == 0
    check_exactly_once(tmp_path, 5)
    assert set(apis.submitted.values()) == {1}


def test_batch_prices_are_half_the_online_column_unless_set() -> None:
    online = TeacherConfig(spec="openai:gpt-4o-mini")
    batch = TeacherConfig(spec="openai:gpt-4o-mini", mode="batch")
    assert price_for(online) == Price(input_per_mtok=0.15, output_per_mtok=0.60)
    assert price_for(batch) == Price(input_per_mtok=0.075, output_per_mtok=0.30)
    own = Price(input_per_mtok=1, output_per_mtok=2, batch_input_per_mtok=0.2)
    custom = TeacherConfig(spec="openai:m", mode="batch", prices={"m": own})
    assert price_for(custom) == Price(input_per_mtok=0.2, output_per_mtok=1.0)
    with pytest.raises(ValueError, match="mode: batch needs an openai: or anthropic: teacher"):
        TeacherConfig(spec="vllm:m", mode="batch")


def test_progress_lines_show_batches_items_spend_and_the_oldest_open_batch(
    batch_server: tuple[MockLLMServer, BatchAPIs],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv, apis = batch_server
    apis.polls_to_end = 3
    args = [a for a in command(srv, tmp_path, "openai", 4) if a != "--quiet"]
    assert main([*args, "teacher.batch.progress_every_s=0.001"]) == 0
    err = capsys.readouterr().err
    assert "batches: 1 submitted, 1 in progress, 0 done; items 0 done, 4 waiting; $0.0000 so far; oldest open batch waiting 0m00s" in err  # fmt: skip
    assert "batches: 1 submitted, 0 in progress, 1 done; items 4 done, 0 waiting" in err


@pytest.mark.slow  # generate's start-up: ~25 s on the 2-core machine
def test_detach_from_another_stage_exits_cleanly_with_the_resume_line(
    batch_server: tuple[MockLLMServer, BatchAPIs],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`generate` has no --detach flag; the setting detaches it at its first batch and the
    CLI says how to go on (exit 0, no traceback)."""
    srv, apis = batch_server
    apis.polls_to_end = 10**6
    url = f"{srv.base_url}/v1"
    args = [
        "generate", "--teacher", "openai:mock-model", "--output-dir", str(tmp_path), "--quiet",
        "num_instructions=20", f"teacher.base_urls=[{url}]",
        f"teacher.cache_path={tmp_path / 'c.sqlite'}", *FAST[:4], "teacher.batch.detach=true",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "items wait in 1 submitted batches; re-run the same command to collect" in out
    assert len(apis.batches) == 1 and set(apis.submitted.values()) == {1}
    # the ledger is the run's own, where `distillery batches status RUN_DIR` finds it
    (ledger_dir,) = tmp_path.glob("*/batches")
    assert len(list(ledger_dir.glob("*.json"))) == 1
    assert main(["batches", "status", str(ledger_dir.parent)]) == 0
    assert "1 batch" in capsys.readouterr().out


def test_a_batch_the_provider_no_longer_has_is_resubmitted(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, apis = batch_server
    apis.polls_to_end = 10**6
    assert main([*command(srv, tmp_path, "openai", 4), "--detach"]) == 0
    (record,) = ledger(tmp_path).load()
    record.remote_id = "batch_gone"  # a 404 on retrieve: it can never answer
    ledger(tmp_path).save(record)
    apis.polls_to_end = 1
    assert main(command(srv, tmp_path, "openai", 4)) == 0
    check_exactly_once(tmp_path, 4)
    assert set(apis.submitted.values()) == {2}
    assert "cannot be read" in (ledger(tmp_path).load()[0].error or "")


def test_an_item_larger_than_a_whole_batch_fails_alone_with_one_line(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    """An item over `max_bytes` can never be in a batch: it is recorded failed, not sent."""
    srv, apis = batch_server
    write_input(tmp_path / "in.jsonl", 4, {2: "word " * 400})
    assert main(command(srv, tmp_path, "openai", 4, "teacher.batch.max_bytes=1000")) == 1
    out = rows(tmp_path)
    assert out[2]["response"] is None and "teacher.batch.max_bytes=1000" in out[2]["error"]
    assert "\n" not in out[2]["error"]
    assert [r["response"] for r in out[:2]] == ["echo: question 0", "echo: question 1"]
    assert len(apis.submitted) == 3 and set(apis.submitted.values()) == {1}


def test_a_record_killed_before_create_never_adopts_another_records_batch(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    """Anthropic keeps no metadata, so a `submitting` record is matched by size and time: a
    batch another ledger record already holds is never taken (two records, one batch)."""
    srv, apis = batch_server
    apis.polls_to_end = 10**6
    args = command(srv, tmp_path, "anthropic", 10, "teacher.batch.max_requests=5")
    assert main([*args, "--detach"]) == 0
    _, second = ledger(tmp_path).load()
    lost = apis.batches.pop(str(second.remote_id))  # its create never reached the provider
    for custom_id, _ in lost.items:
        del apis.submitted[custom_id]
    second.phase, second.remote_id = "submitting", None
    ledger(tmp_path).save(second)
    apis.polls_to_end = 1
    assert main(args) == 0
    check_exactly_once(tmp_path, 10)
    assert set(apis.submitted.values()) == {1}
    records = ledger(tmp_path).load()
    remote_ids = [r.remote_id for r in records if r.remote_id]
    assert len(remote_ids) == len(set(remote_ids)) == 2  # the first batch and the resubmission
    assert [r.phase for r in records if r.local_id == second.local_id] == ["not_submitted"]


def test_an_edited_request_or_setting_is_never_answered_by_an_open_batch(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    """Detached with 4 items open; then q2's text and (second re-run) the temperature change:
    the open batch answers only the requests it holds, the changed ones go in new batches."""
    srv, apis = batch_server
    apis.polls_to_end = 10**6
    assert main([*command(srv, tmp_path, "openai", 4), "--detach"]) == 0
    write_input(tmp_path / "in.jsonl", 4, {2: "edited"})
    apis.polls_to_end = 1
    assert main(command(srv, tmp_path, "openai", 4)) == 0
    out = rows(tmp_path)
    assert out[2]["response"] == "echo: question 2 edited"
    assert [out[i]["response"] for i in (0, 1, 3)] == [f"echo: question {i}" for i in (0, 1, 3)]
    assert len(apis.batches) == 2 and sum(apis.submitted.values()) == 5
    hotter = command(srv, tmp_path, "openai", 4, "teacher.temperature=0.3", "--restart")
    assert main(hotter) == 0
    assert sum(apis.submitted.values()) == 9 and set(apis.submitted.values()) == {1}
    assert all(r["response"].startswith("echo: question") for r in rows(tmp_path))


def test_a_cap_exactly_the_worst_case_of_every_item_sends_them_all(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    """10 items of worst case $0.000151 each (3 input + 100 output tokens at 0.5 / 1.5 $/M):
    a cap of $0.00151 pays for all of them (float sums must not refuse the last)."""
    srv, apis = batch_server
    extra = ("teacher.max_tokens=100", "--max-cost-usd", "0.00151")
    assert main(command(srv, tmp_path, "openai", 10, *extra)) == 0
    check_exactly_once(tmp_path, 10)
    assert sum(apis.submitted.values()) == 10 and len(apis.batches) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("protocol", "point"),
    [
        ("openai", "upload"),
        ("openai", "create"),
        ("openai", "results"),
        ("anthropic", "create"),
        ("anthropic", "results"),
    ],
)
def test_kill_9_while_a_batch_call_is_unanswered_then_resume(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, protocol: str, point: str
) -> None:
    """`kill -9` while the upload, the create call or the results download is done at the
    provider but not answered: the re-run submits nothing the provider already holds (an
    upload without a batch is submitted once, the batch found by its file or its time) and
    answers every item once."""
    srv, apis = batch_server
    apis.hang = {point}
    n = 6
    cmd = [sys.executable, "-m", "distillery.cli", *command(srv, tmp_path, protocol, n)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not apis.reached[point]:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    apis.hang = set()
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_exactly_once(tmp_path, n)
    assert set(apis.submitted.values()) == {1} and len(apis.submitted) == n
    assert len(apis.batches) == 1


def test_answers_of_a_batch_no_one_waits_for_are_kept_not_bought_again(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    """Detached with q0-q3 in one batch; the re-run asks only q0-q1 (the input shrank), so q2
    and q3 end with no call waiting: their paid answers go to the cache, and a later run
    that asks for them again submits nothing."""
    srv, apis = batch_server
    apis.polls_to_end = 10**6
    assert main([*command(srv, tmp_path, "openai", 4), "--detach"]) == 0
    write_input(tmp_path / "in.jsonl", 2)
    apis.polls_to_end = 1
    assert main(command(srv, tmp_path, "openai", 2)) == 0
    write_input(tmp_path / "in.jsonl", 4)
    assert main(command(srv, tmp_path, "openai", 4)) == 0
    assert [r["response"] for r in rows(tmp_path)] == [f"echo: question {i}" for i in range(4)]
    assert sum(apis.submitted.values()) == 4 and len(apis.batches) == 1


def test_in_run_dir_puts_a_batch_ledger_in_the_run_directory(tmp_path: Path) -> None:

    batch = TeacherConfig(spec="openai:m", mode="batch", cache_path=str(tmp_path / "c.sqlite"))
    assert ledger_dir(batch) == tmp_path / "batches"  # no run directory: beside the cache
    assert ledger_dir(in_run_dir(batch, tmp_path / "run")) == tmp_path / "run" / "batches"
    assert batch.batch.ledger_dir is None  # a copy: the caller's config is unchanged
    online = TeacherConfig(spec="openai:m")
    assert in_run_dir(online, tmp_path / "run") is online
    own = batch.model_copy(update={"batch": batch.batch.model_copy(update={"ledger_dir": "L"})})
    assert ledger_dir(in_run_dir(own, tmp_path / "run")) == Path("L")


def test_restart_re_attaches_to_the_batches_still_open_instead_of_buying_them_again(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    """`--restart` moves the old run directory aside; its open batches still answer the
    same requests (as the cache would), so they travel with the ledger, not resubmitted."""
    srv, apis = batch_server
    apis.polls_to_end = 10**6
    assert main([*command(srv, tmp_path, "openai", 4), "--detach"]) == 0
    apis.polls_to_end = 1
    assert main([*command(srv, tmp_path, "openai", 4), "--restart"]) == 0
    check_exactly_once(tmp_path, 4)
    assert sum(apis.submitted.values()) == 4 and len(apis.batches) == 1


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_the_api_key_is_never_written_to_the_run_directory_or_printed(
    batch_server: tuple[MockLLMServer, BatchAPIs],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
) -> None:
    srv, apis = batch_server
    secret = "sk-batch-test-SECRET-0123456789"
    monkeypatch.setenv(f"{protocol.upper()}_API_KEY", secret)
    apis.script = ["error_lines:2"]  # errors travel into the ledger and the rows too
    args = [a for a in command(srv, tmp_path, protocol, 4) if a != "--quiet"]
    assert main([*args, "teacher.batch.progress_every_s=0.001"]) == 0
    assert main(["batches", "status", str(tmp_path / "out.jsonl.run")]) == 0
    said = capsys.readouterr()
    assert secret not in said.out + said.err
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".sqlite"]
    assert any(p.parent.name == "batches" for p in written)
    assert not [p for p in written if secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_lost_create_answer_and_a_failed_lookup_wait_instead_of_resubmitting(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, protocol: str
) -> None:
    """The create call answers 500 (the batch exists) and the list call that would find it
    fails too: the record waits and looks again; the items are not sent a second time."""
    srv, apis = batch_server
    apis.script = ["create_lost"]
    apis.list_faults = ["500", "500"]
    assert main(command(srv, tmp_path, protocol, 5)) == 0
    check_exactly_once(tmp_path, 5)
    assert set(apis.submitted.values()) == {1} and len(apis.batches) == 1
    assert not apis.list_faults


def test_an_online_re_run_of_a_run_with_open_batches_warns_it_pays_twice(
    batch_server: tuple[MockLLMServer, BatchAPIs],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv, apis = batch_server
    apis.polls_to_end = 10**6
    assert main([*command(srv, tmp_path, "openai", 3), "--detach"]) == 0
    online = [a for a in command(srv, tmp_path, "openai", 3) if a != "teacher.mode=batch"]
    assert main(online) == 0
    err = capsys.readouterr().err
    assert "warning: 3 items of this run wait in open batches" in err
    assert "teacher.mode=batch" in err


KILL_AT_SAVE = """
import os, sys
from distillery.teacher import batch_ledger
from distillery.cli import main
save, phase = batch_ledger.Ledger.save, sys.argv[1]
def save_then_die(self, record):
    save(self, record)
    if record.phase == phase:
        os._exit(9)  # as kill -9 right after this ledger write
batch_ledger.Ledger.save = save_then_die
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["ended", "collected"])
def test_killed_right_after_the_results_are_in_the_ledger_nothing_is_bought_again(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path, phase: str
) -> None:
    """Killed right after the batch is recorded `ended` (results downloaded, not yet given
    to the calls) or `collected` (given to them): the re-run answers every item once from
    the journal, the cache or the batch, and submits nothing."""
    srv, apis = batch_server
    args = command(srv, tmp_path, "anthropic", 6)
    killed = subprocess.run([sys.executable, "-c", KILL_AT_SAVE, phase, *args])
    assert killed.returncode == 9 and sum(apis.submitted.values()) == 6
    assert [r.phase for r in ledger(tmp_path).load()] == [phase]
    again = subprocess.run([sys.executable, "-m", "distillery.cli", *args], capture_output=True)
    assert again.returncode == 0, again.stderr
    check_exactly_once(tmp_path, 6)
    assert set(apis.submitted.values()) == {1} and len(apis.batches) == 1


def test_per_minute_limits_do_not_hold_back_batch_resubmissions(
    batch_server: tuple[MockLLMServer, BatchAPIs], tmp_path: Path
) -> None:
    """Online token-per-minute limits (from a shared config) do not apply to batches: the
    first batch's 30 output tokens against a limit of 6/min must not stall the retries."""
    srv, apis = batch_server
    apis.script = ["error_lines:2"]
    started = time.monotonic()
    limits = ("teacher.output_tokens_per_minute=6", "teacher.requests_per_minute=1")
    assert main(command(srv, tmp_path, "openai", 10, *limits)) == 0
    assert time.monotonic() - started < 20
    check_exactly_once(tmp_path, 10)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_lost_create_is_found_beyond_the_first_page_of_the_batch_list(
    batch_server: tuple[MockLLMServer, BatchAPIs],
    tmp_path: Path,
    protocol: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Other batches created since (other runs of the account) push the lost one off the
    first page: the lookup pages on (here 2 per page) instead of resubmitting."""
    from distillery.teacher import batch_api

    monkeypatch.setattr(batch_api, "LIST_PAGE", 2)
    srv, apis = batch_server
    apis.script = ["create_lost"]
    apis.polls_to_end = 10**6
    assert main([*command(srv, tmp_path, protocol, 3), "--detach"]) == 0
    (record,) = ledger(tmp_path).load()
    record.phase, record.remote_id = "submitting", None  # as a kill before the answer
    ledger(tmp_path).save(record)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(4):  # 4 newer single-item batches of another run
        write_input(other / "in.jsonl", 1, {0: f"elsewhere {i}"})
        assert main([*command(srv, other, protocol, 1), "--detach"]) == 0
    assert len(apis.batches) == 5
    apis.polls_to_end = 1
    assert main(command(srv, tmp_path, protocol, 3)) == 0
    check_exactly_once(tmp_path, 3)
    assert [apis.submitted[k] for k in record.keys] == [1, 1, 1]


def test_a_completion_window_openai_does_not_offer_is_a_config_error_before_anything_is_sent(
    batch_server: tuple[MockLLMServer, BatchAPIs],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    srv, apis = batch_server
    assert main(command(srv, tmp_path, "openai", 2, "teacher.batch.completion_window=48h")) == 2
    err = capsys.readouterr().err.strip()
    assert "completion_window" in err and len(err.splitlines()) == 1
    assert not apis.files and not apis.batches


def test_a_stage_restarted_carries_its_open_batches_into_the_new_run_directory(
    tmp_path: Path,
) -> None:
    """generate/filter/eval after `--restart`: the batches that may still answer move to the
    new run's ledger (re-attached, not bought again); collected ones stay with the old run."""
    from distillery.teacher.batch_ledger import BatchRecord

    old, new = tmp_path / "run.old-1", tmp_path / "run"
    common = {"provider": "openai", "spec": "openai:m", "url": "http://127.0.0.1:1/v1"}
    Ledger(old / "batches").save(BatchRecord(keys=["a"], phase="open", **common))
    Ledger(old / "batches").save(BatchRecord(keys=["b"], phase="collected", **common))
    config = TeacherConfig(spec="openai:m", mode="batch")
    moved = in_run_dir(config, new, moved_to=old)
    assert moved.batch.ledger_dir == str(new / "batches")
    assert [r.keys for r in Ledger(new / "batches").load()] == [["a"]]
    assert [r.keys for r in Ledger(old / "batches").load()] == [["b"]]
    assert in_run_dir(TeacherConfig(spec="openai:m"), new).batch.ledger_dir is None
