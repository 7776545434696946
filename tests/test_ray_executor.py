"""`executor: ray` makes the same decisions as `executor: local`, on a local Ray instance.

Ray is an optional extra (`make install EXTRAS=ray`): without it these tests skip, saying
so. Ray takes ~15 s to start, so one instance (2 CPUs, no dashboard) serves the module and
the tests are few and cover much each.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from distillery.cli import main
from distillery.complete import journal_path
from distillery.errors import UserError
from distillery.executors.config import RayConfig
from distillery.executors.session import connect, import_ray

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import chat_requests, server, stats

__all__ = ["server"]


def words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.randrange(400)}" for _ in range(n)]


def filter_rows(n: int = 300) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Random rows with planted cases; `at` names the positions of the interesting ones."""
    rng = random.Random(7)
    rows = [
        {"id": f"r{i}", "instruction": " ".join(words(rng, rng.randint(8, 30))),
         "output": " ".join(words(rng, 12))}
        for i in range(n)
    ]  # fmt: skip
    at = {"exact_a": 3, "exact_b": 250, "chain_a": 10, "chain_b": 150, "chain_c": 290,
          "refusal": 40, "short": 41, "contaminated": 60}  # fmt: skip
    rows[at["exact_b"]]["instruction"] = rows[at["exact_a"]]["instruction"].upper() + " !"
    # 40 words, 38 3-word shingles: A ~ B and B ~ C share 34 (Jaccard 0.81), A and C 30
    # (0.65); with blocks of 100 rows each is in another block
    chain = words(rng, 40)
    b = [*chain[:-4], "b1", "b2", "b3", "b4"]
    c = ["c1", "c2", "c3", "c4", *b[4:]]
    for key, text in (("chain_a", chain), ("chain_b", b), ("chain_c", c)):
        rows[at[key]]["instruction"] = " ".join(text)
    rows[at["refusal"]]["output"] = "As an AI language model I cannot help with that."
    rows[at["short"]]["instruction"] = "hi"
    rows[at["contaminated"]]["output"] += " the eight words of a benchmark item appear here"
    return rows, at


def run_filter(tmp_path: Path, executor: str, *extra: str) -> Path:
    out = tmp_path / executor
    code = main(
        [
            "filter", "--input", str(tmp_path / "in.jsonl"), "--output-dir", str(out),
            "--steps", "heuristics,exact,near,decontam", "--against", str(tmp_path / "ev.jsonl"),
            "decontam.embedding_threshold=null", f"executor={executor}",
            "ray.rows_per_block=100", *extra,
        ]
    )  # fmt: skip
    assert code == 0
    return out


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json less what differs by design: timings and the near step's work counts."""
    out = {k: v for k, v in summary.items() if k not in ("wall_time_s", "near")}
    out["funnel"] = [{k: v for k, v in f.items() if k != "seconds"} for f in summary["funnel"]]
    return out


@pytest.mark.slow
def test_filter_on_ray_keeps_and_drops_the_same_rows_with_the_same_evidence(
    ray_instance: Any, tmp_path: Path
) -> None:
    rows, at = filter_rows()
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    item = {"prompt": "so the eight words of a benchmark item appear"}
    (tmp_path / "ev.jsonl").write_text(json.dumps(item) + "\n")
    local, ray = run_filter(tmp_path, "local"), run_filter(tmp_path, "ray")
    for name in ("kept.jsonl", "dropped.jsonl"):
        assert (ray / name).read_text() == (local / name).read_text(), name
    summaries = [json.loads((d / "summary.json").read_text()) for d in (local, ray)]
    assert comparable(summaries[1]) == comparable(summaries[0])
    assert summaries[1]["near"]["verified"] == summaries[0]["near"]["verified"] == 2
    assert summaries[1]["near"]["executor"] == "ray"

    dropped = {
        json.loads(line)["id"]: json.loads(line)["dropped_by"]
        for line in (ray / "dropped.jsonl").read_text().splitlines()
    }
    assert dropped[f"r{at['refusal']}"]["rule"] == "refusal"
    assert dropped[f"r{at['short']}"]["rule"] == "instruction_too_short"
    assert dropped[f"r{at['exact_b']}"]["evidence"]["survivor_id"] == f"r{at['exact_a']}"
    assert dropped[f"r{at['contaminated']}"]["rule"] == "decontam_ngram"
    # the chain spans three blocks and resolves to one survivor, the earliest row
    b, c = dropped[f"r{at['chain_b']}"], dropped[f"r{at['chain_c']}"]
    assert b["rule"] == c["rule"] == "near_duplicate"
    assert b["evidence"]["survivor_id"] == c["evidence"]["survivor_id"] == f"r{at['chain_a']}"
    assert b["evidence"]["cluster_size"] == 3 and not b["evidence"]["linked_transitively"]
    assert c["evidence"]["linked_transitively"] and c["evidence"]["jaccard"] is None
    assert f"r{at['chain_a']}" not in dropped


def test_unreachable_address_and_missing_ray_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        import_ray()
    except UserError:
        pass  # not installed: the second half still runs
    else:
        monkeypatch.setattr("ray.is_initialized", lambda: False)  # even beside the fixture's
        with pytest.raises(UserError, match=r"ray.address ray://127.0.0.1:1: cannot reach") as e:
            connect(RayConfig(address="ray://127.0.0.1:1"))
        assert "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(UserError, match=r"make install EXTRAS=ray"):
        connect(RayConfig())


def complete_args(srv: MockLLMServer, tmp_path: Path, out: str, *extra: str) -> list[str]:
    return [
        "complete", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / out),
        "--teacher", "openai:mock-model", "--quiet", f"teacher.base_urls=[{srv.base_url}/v1]",
        f"teacher.cache_path={tmp_path / out}.sqlite", "teacher.timeout_s=5", *extra,
    ]  # fmt: skip


def write_requests(path: Path, n: int) -> None:
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": f"question {i}"}]})
            + "\n"
            for i in range(n)
        )
    )


def kill_a_worker_once(ray: Any, journal: Path, killed: list[str]) -> None:
    """When the journal has its first rows, kill one teacher actor (Ray restarts it)."""
    from distillery.executors.ray_complete import WORKER_PREFIX

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().count("\n") >= 4:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            ours = sorted(n for n in names if n.startswith(WORKER_PREFIX))
            if ours:
                ray.kill(ray.get_actor(ours[0]), no_restart=False)
                killed.append(ours[0])
                return
        time.sleep(0.01)


@pytest.mark.slow
def test_complete_on_ray_answers_as_local_under_one_cap_and_survives_a_killed_worker(
    ray_instance: Any, server: MockLLMServer, tmp_path: Path
) -> None:
    n = 48
    write_requests(tmp_path / "in.jsonl", n)
    server.configure(latency_s=0.05)
    assert main(complete_args(server, tmp_path, "local.jsonl")) == 0
    sent_local = chat_requests(server)
    server.stats.max_in_flight = 0  # from here on: the Ray run's
    on_ray = ("executor=ray", "ray.workers=3", "ray.chunk_size=4", "teacher.concurrency=2")
    journal = journal_path(tmp_path / "ray.jsonl")
    killed: list[str] = []
    killer = threading.Thread(target=kill_a_worker_once, args=(ray_instance, journal, killed))
    killer.start()
    assert main(complete_args(server, tmp_path, "ray.jsonl", *on_ray)) == 0
    killer.join()
    assert killed, "no worker was killed mid-run"
    rows = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert [r["response"] for r in rows] == [r["response"] for r in local]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(n)]
    ids = [json.loads(line)["id"] for line in journal.read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n))  # each row journaled once
    assert chat_requests(server) - sent_local >= n  # the killed chunk's requests asked again
    assert stats(server)["max_in_flight"] <= 2  # teacher.concurrency over all three actors
    manifest = json.loads((tmp_path / "ray.jsonl.run" / "manifest.json").read_text())
    assert manifest["requests_sent"] >= n - 4 and manifest["rows"] == n


@pytest.mark.slow
def test_complete_on_ray_stops_at_one_cost_cap_for_all_actors(
    ray_instance: Any, server: MockLLMServer, tmp_path: Path
) -> None:
    write_requests(tmp_path / "in.jsonl", 40)
    price = "teacher.prices={mock-model: {input_per_mtok: 1000, output_per_mtok: 1000}}"
    common = (price, "teacher.max_tokens=20", "executor=ray", "ray.workers=3", "ray.chunk_size=2")
    assert (
        main(complete_args(server, tmp_path, "o.jsonl", *common, "teacher.max_cost_usd=0.1")) == 4
    )
    done = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert 0 < len(done) < 40
    assert sum(r["usage"]["cost_usd"] for r in done) <= 0.1
    assert main(complete_args(server, tmp_path, "o.jsonl", *common, "teacher.max_cost_usd=10")) == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 40


def test_batch_mode_on_ray_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_requests(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out.jsonl"
    command = ["complete", "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
               "--teacher", "openai:m", "--executor", "ray", "teacher.mode=batch"]  # fmt: skip
    assert main(command) == 2
    assert "teacher.mode batch" in capsys.readouterr().err  # before Ray or the teacher is asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def without_latency(text: str) -> list[Any]:
    """JSONL rows with every `latency_s` (the only field that differs by design) removed."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "latency_s"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [strip(json.loads(line)) for line in text.splitlines()]


def count_ray_jobs(monkeypatch: pytest.MonkeyPatch, module: str) -> list[int]:
    """Counts the jobs that `module` sends through `run_job_on_ray` (the real one)."""
    from distillery.executors import ray_complete

    real, calls = ray_complete.run_job_on_ray, []

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[1]))  # the job's items
        return await real(*args, **kwargs)

    monkeypatch.setattr(f"{module}.run_job_on_ray", counted)
    return calls


@pytest.mark.slow
def test_filter_judge_on_ray_gives_the_local_verdicts_and_journals(
    ray_instance: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_ray = count_ray_jobs(monkeypatch, "distillery.executors.ray_filter")
    rows, _ = filter_rows()
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:60]))
    outs = {}
    for executor in ("local", "ray"):
        outs[executor] = tmp_path / executor
        code = main(
            [
                "filter", "--input", str(tmp_path / "in.jsonl"), "--output-dir",
                str(outs[executor]), "--steps", "heuristics,judge", "--judge", "fake",
                "judge.min_score=7", "judge.teacher.cache=false", f"executor={executor}",
                "ray.workers=2", "ray.chunk_size=8",
            ]
        )  # fmt: skip
        assert code == 0
    local, ray = outs["local"], outs["ray"]
    judged = json.loads((ray / "summary.json").read_text())["judge"]["judged"]
    assert on_ray and on_ray[0] == judged  # the first attempt asked every row on Ray
    for name in ("kept.jsonl", "dropped.jsonl"):
        assert without_latency((ray / name).read_text()) == without_latency(
            (local / name).read_text()
        ), name
    summaries = [json.loads((d / "summary.json").read_text()) for d in (local, ray)]
    assert comparable(summaries[1]) == comparable(summaries[0])
    assert judged == 60 - summaries[1]["funnel"][1]["dropped"]
    rules = {json.loads(x)["dropped_by"]["rule"] for x in (ray / "dropped.jsonl").open()}
    assert "judge_below_threshold" in rules
    journals = sorted(p.name for p in (local / "journal").glob("judge_attempt*.jsonl"))
    assert journals and journals == sorted(p.name for p in (ray / "journal").glob("judge_*"))
    for name in journals:  # the same entries, once each (the order is the answers')
        entries = [without_latency((d / "journal" / name).read_text()) for d in (local, ray)]
        assert sorted(entries[1], key=lambda e: e["id"]) == sorted(
            entries[0], key=lambda e: e["id"]
        )


@pytest.mark.slow
def test_generate_on_ray_writes_the_local_rows(
    ray_instance: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_seeds import SEEDS

    on_ray = count_ray_jobs(monkeypatch, "distillery.executors.ray_complete")
    runs = {}
    for executor in ("local", "ray"):
        code = main(
            [
                "generate", "--seeds", str(SEEDS), "--teacher", "fake", "--num-instructions",
                "12", "--output-dir", str(tmp_path / executor), "--run-id", "r", "--quiet",
                "teacher.cache=false", "--executor", executor, "ray.chunk_size=4",
                "evol.rounds=1",  # 8 stages, not 13: each starts its actors
            ]
        )  # fmt: skip
        assert code == 0
        runs[executor] = tmp_path / executor / "r"
        assert bool(on_ray) == (executor == "ray")  # every stage's job, and only on Ray
    local, ray = runs["local"], runs["ray"]
    for name in ("generated.jsonl", "rejected.jsonl"):
        assert without_latency((ray / name).read_text()) == without_latency(
            (local / name).read_text()
        ), name
    assert len((ray / "generated.jsonl").read_text().splitlines()) == 12
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (local, ray)]
    for key in ("rejected_by_rule", "counts", "teachers", "requests_sent", "input_tokens"):
        assert manifests[1][key] == manifests[0][key], key


def test_generate_refuses_batch_mode_on_ray_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["generate", "--teacher", "openai:m", "--output-dir", str(tmp_path / "runs"),
               "--executor", "ray", "response_teacher.mode=batch"]  # fmt: skip
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert "response_teacher.mode batch" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def ingested_ids(ray: Any, path: Path, rows_per_block: int) -> list[str]:
    from distillery.executors.ray_ingest import ingest
    from distillery.records import Record

    blocks = ingest(ray, path, rows_per_block).blocks
    return [
        Record.model_validate_json(raw).id
        for table in ray.get(blocks.refs)
        for raw in table.column("record").to_pylist()
    ]


def outcome(read: Any) -> Any:
    try:
        return read()
    except UserError as exc:
        return f"error: {exc}"


def test_ray_ingest_reads_ids_and_errors_as_read_rows(ray_instance: Any, tmp_path: Path) -> None:
    """Blocks of 7 lines: repeated ids, renames that must step over a given `X-2`, and bad
    rows in several blocks give `read_rows`' ids and one-line errors exactly."""
    from distillery.filter.rows import read_rows
    from distillery.records import content_id

    def row(k: int) -> dict[str, str]:
        return {"instruction": f"task {k}", "output": f"answer {k}"}

    same = {"instruction": "repeated", "output": "again"}
    derived = content_id("external", same["instruction"], "", same["output"])
    lines = [json.dumps(row(k)) for k in range(40)]
    lines[3] = json.dumps(same)
    lines[5] = json.dumps({**row(5), "id": f"{derived}-2"})  # taken before the repeats come
    lines[12] = lines[20] = lines[33] = json.dumps(same)  # -> -3, -4, -5
    lines[8] = ""  # a blank line: skipped, still counted
    cases: dict[str, list[str]] = {"renames": lines}
    bad = list(lines)
    bad[9] = json.dumps({"instruction": "no answer"})
    bad[30] = json.dumps({"instruction": 3, "output": "x"})
    bad[25] = json.dumps({**row(25), "id": "r"})
    bad[27] = json.dumps({**row(27), "id": "r"})  # a given id repeated
    cases["bad rows"] = bad
    fatal = list(bad)
    fatal[35] = "{not json"
    fatal[16] = "[1, 2]"
    cases["fatal"] = fatal
    cases["empty"] = ["", "  "]
    # a carriage return is JSON whitespace, not a line end; a torn line's column as local's
    cases["carriage return"] = [*lines[:4], '{"instruction": "a",\r "output": "b"}', '{"a": ']
    for name, content in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        path.write_text("\n".join(content) + "\n")
        local = outcome(lambda p=path: [r.id for r in read_rows(p)])  # type: ignore[misc]
        on_ray = outcome(lambda p=path: ingested_ids(ray_instance, p, 7))  # type: ignore[misc]
        assert on_ray == local, name
    assert f"{derived}-5" in outcome(
        lambda: ingested_ids(ray_instance, tmp_path / "renames.jsonl", 7)
    )
    assert "(and 2 more bad rows)" in outcome(
        lambda: ingested_ids(ray_instance, tmp_path / "bad_rows.jsonl", 7)
    )
    assert ":17: expected a JSON object" in outcome(
        lambda: ingested_ids(ray_instance, tmp_path / "fatal.jsonl", 7)
    )


def conversation(first: str, later: list[str]) -> dict[str, Any]:
    messages = [{"role": "user", "content": first}, {"role": "assistant", "content": "ok " + first}]
    for text in later:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
    return {"messages": messages}


@pytest.mark.slow
def test_filter_on_ray_embedding_steps_and_conversations_match_local(
    ray_instance: Any, tmp_path: Path
) -> None:
    """Semantic dedup (sharded neighbour search), embedding decontamination and the
    whole-conversation passes of near and semantic dedup, on blocks of 25 rows: the same
    files as local."""
    rows: list[dict[str, Any]] = filter_rows()[0]
    rows[20]["instruction"] = "How do I sort a list of numbers in Python?"
    rows[70]["instruction"] = "What is the way to sort a Python list of numbers?"
    rows[45]["instruction"] = "Name the capital city of France, please."
    later = [" ".join(words(random.Random(k), 40)) for k in range(3)]
    rows += [
        conversation("plan a trip to the mountains in spring", later),
        conversation("help me write a short poem about rivers", later),  # whole: near dup
        conversation("explain photosynthesis to a child", ["now explain it to an adult"]),
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "ev.jsonl").write_text(json.dumps({"prompt": "What is the capital of France?"}))
    outs = []
    for executor in ("local", "ray"):
        out = tmp_path / executor
        code = main(
            [
                "filter", "--input", str(tmp_path / "in.jsonl"), "--output-dir", str(out),
                "--steps", "exact,near,semantic,decontam", "--against", str(tmp_path / "ev.jsonl"),
                "semantic.threshold=0.8", "decontam.embedding_threshold=0.8",
                f"executor={executor}", "ray.rows_per_block=25",
            ]
        )  # fmt: skip
        assert code == 0
        outs.append(out)
    local, ray = outs
    for name in ("kept.jsonl", "dropped.jsonl"):
        assert (ray / name).read_text() == (local / name).read_text(), name
    summaries = [json.loads((d / "summary.json").read_text()) for d in outs]
    assert comparable(summaries[1]) == comparable(summaries[0])
    rules = summaries[1]["dropped_by_rule"]
    assert rules.get("semantic_duplicate") and rules.get("decontam_embedding"), rules
    assert rules.get("near_duplicate_conversation"), rules


def test_filter_on_ray_with_every_row_dropped_before_a_dedup_step(
    ray_instance: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No row left for exact and near: nothing to compare, as local (it crashed on Ray).
    The Ray run prints its progress per step from the cluster (rows, rate, ETA)."""
    rows = [{"instruction": "hi", "output": f"x{k}"} for k in range(3)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for executor in ("local", "ray"):
        out = tmp_path / executor
        args = ["filter", "--input", str(tmp_path / "in.jsonl"), "--output-dir", str(out),
                "--steps", "heuristics,exact,near", f"executor={executor}"]  # fmt: skip
        assert main(args) == 0
        assert (out / "kept.jsonl").read_text() == ""
    assert (tmp_path / "ray" / "dropped.jsonl").read_text() == (
        tmp_path / "local" / "dropped.jsonl"
    ).read_text()
    err = capsys.readouterr().err
    for step in ("read", "heuristics", "outputs"):
        assert f"{step}: " in err and " done, " in err and "ETA" in err, err


def test_nan_in_the_input_is_a_one_line_error_under_both_executors(
    ray_instance: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python's json reads NaN; a record holding it was written back as null and failed to
    load (a traceback after kept.jsonl was in place locally, a Ray task error on Ray)."""
    for name, text in (
        ("rows.jsonl", '{"instruction": "a b c d", "output": "x", "scores": {"judge": NaN}}\n'),
        ("rows.json", '[{"instruction": "a b c d", "output": "x", "scores": {"judge": Infinity}}]'),
    ):
        (tmp_path / name).write_text(text)
        for executor in ("local", "ray"):
            out = tmp_path / f"{executor}-{name}"
            args = ["filter", "--input", str(tmp_path / name), "--output-dir", str(out),
                    "--steps", "heuristics", f"executor={executor}"]  # fmt: skip
            assert main(args) == 2
            err = capsys.readouterr().err
            lines = [line for line in err.splitlines() if not line.startswith("read: ")]
            assert "Traceback" not in err and len(lines) == 1, err  # progress lines aside
            assert "is not valid JSON (a number must be finite)" in lines[0], err
            assert not out.exists()
