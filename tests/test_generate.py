"""`distillery generate` end to end, offline: the scripted fake teacher and the loopback server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.cli import main
from distillery.generate.config import EVOL_OPERATIONS
from distillery.generate.context import GenContext
from distillery.records import Record

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import server
from tests.test_seeds import SEEDS

__all__ = ["server"]


def gen(tmp_path: Path, *extra: str, n: int = 40, out: str = "runs") -> tuple[int, Path]:
    code = main([
        "generate", "--seeds", str(SEEDS), "--teacher", "fake", "--num-instructions", str(n),
        "--output-dir", str(tmp_path / out), "--run-id", "r", "--quiet",
        f"teacher.cache_path={tmp_path / 'cache.sqlite'}", *extra,
    ])  # fmt: skip
    return code, tmp_path / out / "r"


def records(path: Path) -> list[Record]:
    return [Record.model_validate_json(line) for line in path.read_text().splitlines()]


def test_generate_end_to_end_with_lineage(tmp_path: Path) -> None:
    code, run = gen(tmp_path)
    assert code == 0
    rows = records(run / "generated.jsonl")
    assert len(rows) == 40 and len({r.id for r in rows}) == 40
    ids = {r.id for r in rows}
    origins = {r.origin for r in rows}
    assert "self_instruct" in origins and any(o.startswith("evol:") for o in origins)
    for r in rows:
        assert r.demo and r.teacher == "fake"
        assert [m.role for m in r.messages] == ["user", "assistant"]
        assert r.template is not None and len(r.template.sha256) == 64
        assert r.trace and all(c.model == "fake" for c in r.trace)
        if r.origin.startswith("evol:"):
            assert r.round >= 1 and len(r.parent_ids) == 1 and r.parent_ids[0] in ids
            assert r.trace[0].purpose == r.origin  # the evolution call comes first
        else:
            assert r.round == 0 and r.parent_ids == []
            assert {c.purpose for c in r.trace} >= {
                "self_instruct:generate",
                "self_instruct:classify",
                "response",
            }
    rejected = records(run / "rejected.jsonl")
    rules = {r.dropped_by.rule for r in rejected if r.dropped_by}
    assert {"leaked_scaffold", "no_information_gain"} <= rules
    for r in rejected:
        assert r.dropped_by is not None and r.dropped_by.reason
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["demo"] is True and manifest["rows"] == 40 and manifest["status"] == "complete"
    assert sum(manifest["rejected_by_rule"].values()) == len(rejected)
    assert (run / "config.yaml").exists()
    import datasets

    ds = datasets.load_from_disk(str(run / "dataset"))
    assert ds.num_rows == 40 and ds[0]["messages"][1]["role"] == "assistant"


def test_same_config_same_result(tmp_path: Path) -> None:
    _, a = gen(tmp_path, "teacher.cache=false", out="a")
    _, b = gen(tmp_path, "teacher.cache=false", out="b")

    def key(r: Record) -> tuple:
        return (
            r.id,
            r.origin,
            tuple(r.parent_ids),
            r.round,
            tuple((m.role, m.content) for m in r.messages),
        )

    assert [key(r) for r in records(a / "generated.jsonl")] == [
        key(r) for r in records(b / "generated.jsonl")
    ]
    assert [r.id for r in records(a / "rejected.jsonl")] == [
        r.id for r in records(b / "rejected.jsonl")
    ]
    _, c = gen(tmp_path, "teacher.cache=false", "seed=1", out="c")
    assert [key(r) for r in records(c / "generated.jsonl")] != [
        key(r) for r in records(a / "generated.jsonl")
    ]


def test_interrupted_run_resumes_from_the_journals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, clean = gen(tmp_path, "teacher.cache=false", out="clean")
    clean_sent = json.loads((clean / "manifest.json").read_text())["teachers"]["instructions"][
        "requests_sent"
    ]

    original = GenContext.call

    async def crash_in_round_two(self, stage, items):
        if stage == "equality_r2":
            raise KeyboardInterrupt  # a kill in the middle of the evolution stage
        return await original(self, stage, items)

    monkeypatch.setattr(GenContext, "call", crash_in_round_two)
    assert gen(tmp_path, "teacher.cache=false", out="resumed")[0] == 130  # as after Ctrl-C
    monkeypatch.setattr(GenContext, "call", original)
    run = tmp_path / "resumed" / "r"
    assert not (run / "generated.jsonl").exists()  # nothing that looks finished
    journals = sorted(p.name for p in (run / "journal").iterdir())
    assert "evol_r1.jsonl" in journals and "equality_r2.jsonl" not in journals
    assert gen(tmp_path, "teacher.cache=false", out="resumed")[0] == 0
    manifest = json.loads((run / "manifest.json").read_text())
    first, last = manifest["invocations"]
    assert first["exit_code"] == 130 and last["exit_code"] == 0 and last["resumed"]
    assert 0 < last["requests_sent"] < manifest["requests_sent"]  # only what was left
    # the manifest adds up both invocations: the same requests as the uninterrupted run
    assert manifest["teachers"]["instructions"]["requests_sent"] == clean_sent
    assert [r.id for r in records(run / "generated.jsonl")] == [
        r.id for r in records(clean / "generated.jsonl")
    ]


def test_alpaca_mode(tmp_path: Path) -> None:
    code, run = gen(tmp_path, "method=alpaca", "evol.rounds=1", n=25)
    assert code == 0
    rows = records(run / "generated.jsonl")
    assert len(rows) == 25
    assert {r.origin for r in rows} <= {"alpaca", *(f"evol:{op}" for op in EVOL_OPERATIONS)}


def test_include_seeds_and_step_by_step_system_prompt(tmp_path: Path) -> None:
    code, run = gen(tmp_path, "include_seeds=true", "evol.rounds=1", n=440)
    assert code == 0
    rows = records(run / "generated.jsonl")
    assert sum(r.origin == "seed" for r in rows) == 220
    math_children = [r for r in rows if r.round == 1 and r.category == "math_word_problems"]
    assert math_children  # evolved from math seeds, answered with the step-by-step prompt
    for r in math_children:
        system = r.trace[-1].messages[0]
        assert system.role == "system" and "step by step" in system.content


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "no seed tasks"), ('{"id": "a"\n', "malformed JSON")],
)
def test_bad_seed_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(content)
    code = main(
        [
            "generate",
            "--seeds",
            str(seeds),
            "--teacher",
            "fake",
            "--output-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_too_few_seeds_for_the_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeds = tmp_path / "seeds.jsonl"
    rows = [json.loads(line) for line in (SEEDS / "open_qa.jsonl").read_text().splitlines()[:3]]
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(
        [
            "generate",
            "--seeds",
            str(seeds),
            "--teacher",
            "fake",
            "--output-dir",
            str(tmp_path / "runs"),
            f"teacher.cache_path={tmp_path / 'c.sqlite'}",
            "--quiet",
        ]
    )
    assert code == 2
    assert (
        "3 seed tasks, fewer than self_instruct.seed_tasks_in_prompt=6" in capsys.readouterr().err
    )


def test_teacher_without_a_parsable_list_keeps_everything(
    server: MockLLMServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loopback server echoes the prompt back: no new numbered tasks in it."""
    code = main([
        "generate", "--seeds", str(SEEDS), "--teacher", "openai:mock-model", "--num-instructions", "5",
        "--output-dir", str(tmp_path / "runs"), "--run-id", "r", "--quiet",
        f"teacher.base_urls=[{server.base_url}/v1]", f"teacher.cache_path={tmp_path / 'c.sqlite'}",
        "self_instruct.max_steps=2", "max_top_ups=0",
    ])  # fmt: skip
    assert code == 1
    assert "target not met: 0/5 rows" in capsys.readouterr().out
    run = tmp_path / "runs" / "r"
    rejected = records(run / "rejected.jsonl")
    assert rejected and all(
        r.dropped_by and r.dropped_by.rule == "unparsable_list" for r in rejected
    )
    assert rejected[0].dropped_by.evidence["raw"].startswith("echo:")
    assert json.loads((run / "manifest.json").read_text())["status"].startswith("target not met")


def test_budget_stop_keeps_work_and_resumes(server: MockLLMServer, tmp_path: Path) -> None:
    args = [
        "generate", "--seeds", str(SEEDS), "--teacher", "openai:mock-model", "--num-instructions", "5",
        "--output-dir", str(tmp_path / "runs"), "--run-id", "r", "--quiet",
        f"teacher.base_urls=[{server.base_url}/v1]", f"teacher.cache_path={tmp_path / 'c.sqlite'}",
        "teacher.prices={mock-model: {input_per_mtok: 1000, output_per_mtok: 1000}}",
        "teacher.max_tokens=50", "self_instruct.max_steps=3", "max_top_ups=0",
    ]  # fmt: skip
    assert main([*args, "teacher.max_cost_usd=0.5"]) == 4
    manifest = json.loads((tmp_path / "runs" / "r" / "manifest.json").read_text())
    assert manifest["status"].startswith("stopped") and manifest["spent_usd"] <= 0.5
    assert (tmp_path / "runs" / "r" / "journal").is_dir()


def test_category_system_prompts_and_keeping_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, run = gen(
        tmp_path,
        "include_seeds=true",
        "evol.rounds=1",
        "responses.keep_system_in_rows=true",
        "responses.system_templates={coding_python: response_step_by_step}",
        n=440,
    )
    assert code == 0
    rows = records(run / "generated.jsonl")
    evolved_py = [r for r in rows if r.round == 1 and r.category == "coding_python"]
    assert evolved_py
    for r in evolved_py:
        assert r.messages[0].role == "system" and "step by step" in r.messages[0].content
    code = main(
        [
            "generate",
            "--seeds",
            str(SEEDS),
            "--teacher",
            "fake",
            "--output-dir",
            str(tmp_path / "x"),
            "responses.system_templates={math: no_such_prompt}",
        ]
    )
    assert code == 2 and "no_such_prompt.jinja: no such prompt template" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_api_key_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code = main(
        [
            "generate",
            "--seeds",
            str(SEEDS),
            "--teacher",
            "openai:gpt-4o-mini",
            "--output-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2 and "no API key: set OPENAI_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_estimate_cost_rehearses_offline_and_prices_each_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # nothing is sent, so no key is needed
    code = main(
        [
            "generate",
            "--seeds",
            str(SEEDS),
            "--teacher",
            "openai:gpt-4o-mini",
            "--num-instructions",
            "20",
            "--output-dir",
            str(tmp_path / "runs"),
            "--estimate-cost",
            "evol.rounds=1",
            "response_teacher={spec: 'anthropic:claude-haiku-4-5', max_tokens: 400}",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert (
        "instructions openai:gpt-4o-mini" in out
        and "responses    anthropic:claude-haiku-4-5" in out
    )
    total = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert "$" in total and "calls" in total
    assert not (tmp_path / "runs").exists()  # a rehearsal writes nothing where the real run would


def test_estimate_cost_prints_only_the_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "--seeds", str(SEEDS), "--teacher", "openai:gpt-4o-mini",
            "--num-instructions", "200", "--output-dir", str(tmp_path / "runs"), "--estimate-cost",
            "evol.rounds=0", "self_instruct.max_steps=1", "max_top_ups=0"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    # the rehearsal's temporary directory and its status are not the user's run
    assert "target not met" not in out and "run directory" not in out and "/tmp" not in out
    assert out.startswith("estimated cost of the run (target 200 rows; the rehearsal's")


def test_role_flags_set_the_user_simulator_and_the_tag_teacher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--user-teacher` picks the model playing the user in conversations, like
    `--response-teacher` picks the answering one."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    args = ["generate", "--seeds", str(SEEDS), "--teacher", "openai:gpt-4o-mini",
            "--user-teacher", "anthropic:claude-haiku-4-5", "--num-instructions", "20",
            "--output-dir", str(tmp_path / "runs"), "--estimate-cost", "evol.rounds=0",
            "conversation.turns=2"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "user         anthropic:claude-haiku-4-5" in out, out
    assert "responses    openai:gpt-4o-mini" in out
