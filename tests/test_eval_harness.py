"""`distillery eval harness`: lm-evaluation-harness on a tiny student and its base, offline.

The tasks are written by the test (task YAML + local JSON data, found through lm_eval's
include path); the models are tiny random Llamas. The numbers checked are lm_eval's own,
carried into the forgetting table with n, Wilson intervals and paired differences.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from distillery import stats
from distillery.cli import main
from distillery.eval import forgetting

from tests.tiny_models import build_tiny_lm

MC = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

GEN = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def _tasks(root: Path) -> Path:
    tasks = root / "tasks"
    tasks.mkdir()
    mc = [
        {"question": f"Is {i} even?", "choices": ["yes", "no"], "label": i % 2} for i in range(10)
    ]
    gen = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(4)]
    for name, rows, template in (("tiny_mc", mc, MC), ("tiny_gen", gen, GEN)):
        data = tasks / f"{name}.json"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        text = template.format(data=data, cache=root / "hf_datasets")
        (tasks / f"{name}.yaml").write_text(text)
    return tasks


@pytest.mark.slow
def test_harness_scores_student_and_base_into_a_forgetting_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness (the harness extra) is absent")
    tasks = _tasks(tmp_path)
    base = build_tiny_lm(tmp_path / "base", seed=0)
    student = build_tiny_lm(tmp_path / "student", seed=3)
    out = tmp_path / "eval"
    argv = ["eval", "harness", "--model", str(student), "--base", str(base)]
    argv += ["--tasks", "tiny_mc,tiny_gen", "--include-path", str(tasks), "--device", "cpu"]
    argv += ["--output-dir", str(out)]
    assert main(argv) == 0

    sides = {s: json.loads((out / f"harness_{s}.json").read_text()) for s in ("student", "base")}
    summary = json.loads((out / "harness_summary.json").read_text())
    assert (summary["student"], summary["base"]) == (str(student), str(base))
    rows = {(r["task"], r["metric"]): r for r in summary["rows"]}
    assert set(rows) == {("tiny_mc", "acc,none"), ("tiny_gen", "exact_match,none")}
    mc = rows["tiny_mc", "acc,none"]
    for side in ("student", "base"):
        reported = sides[side]["results"]["tiny_mc"]["acc,none"]  # lm_eval's own number
        items = sides[side]["scores"]["tiny_mc"]["acc,none"]
        assert len(items) == 10 and sum(items.values()) == pytest.approx(10 * reported)
        k = sum(items.values())
        assert mc[side]["value"] == pytest.approx(reported) and mc[side]["n"] == 10
        assert (mc[side]["low"], mc[side]["high"]) == pytest.approx(stats.wilson(k, 10))
    s_items = sides["student"]["scores"]["tiny_mc"]["acc,none"]
    b_items = sides["base"]["scores"]["tiny_mc"]["acc,none"]
    paired = stats.paired_proportions(
        [s_items[d] for d in sorted(s_items)], [b_items[d] for d in sorted(s_items)]
    )
    assert mc["difference"]["value"] == pytest.approx(mc["student"]["value"] - mc["base"]["value"])
    assert mc["difference"]["n"] == 10 and mc["difference"]["low"] == pytest.approx(paired.low)
    # sample generations: both sides' answers to the same prompts, side by side
    gen = summary["examples"]["tiny_gen"]
    assert len(gen) == 3 and gen[0]["prompt"].startswith("Q: What is 0 plus 0?")
    assert gen[0]["target"] == "0" and {"student", "base"} <= set(gen[0])
    first_mc = summary["examples"]["tiny_mc"][0]
    assert first_mc["student"] in ("yes", "no") and first_mc["target"] == "yes"

    # the report shows both sides and the difference
    assert main(["eval", "report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Benchmarks (lm-evaluation-harness)" in page and "tiny_mc" in page
    assert stats.describe(mc["student"]) in page and stats.describe(mc["base"]) in page
    assert "What is 0 plus 0?" in page

    # the same command again scores nothing; other settings are refused in one line
    capsys.readouterr()
    assert main(argv) == 0
    assert "student already scored" in capsys.readouterr().out
    assert main([*argv, "--limit", "2"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_a_base_that_is_the_student_or_an_unknown_task_stops_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness (the harness extra) is absent")
    tasks = _tasks(tmp_path)
    student = build_tiny_lm(tmp_path / "student", seed=3)
    out = tmp_path / "eval"
    common = ["eval", "harness", "--model", str(student), "--include-path", str(tasks)]
    common += ["--output-dir", str(out)]
    assert main([*common, "--base", str(student), "--tasks", "tiny_mc"]) == 2
    assert "is the student itself" in capsys.readouterr().err
    assert main([*common, "--tasks", "tiny_mc,no_such_task"]) == 2
    err = capsys.readouterr().err
    assert "no_such_task" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # no lock, no identity left in a new directory


def test_harness_without_lm_eval_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a)
    )
    argv = ["eval", "harness", "--model", "m", "--tasks", "t", "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs lm_eval" in err and ".[harness]" in err and len(err.strip().splitlines()) == 1


def _result(model: str, acc: dict[str, float], inst: dict[str, list[float]]) -> dict[str, Any]:
    """A harness_SIDE.json as `eval/harness.py` writes it, for a group of one task."""
    prompt = {d: float(all(v)) for d, v in inst.items()}
    flat = [x for v in inst.values() for x in v]
    return {
        "model": model,
        "groups": {"grp": ["t1"], "t1": [], "ife": []},
        "results": {
            "grp": {"acc,none": sum(acc.values()) / len(acc), "acc_stderr,none": 0.1},
            "t1": {"acc,none": sum(acc.values()) / len(acc)},
            "ife": {
                "prompt_level_strict_acc,none": sum(prompt.values()) / len(prompt),
                "inst_level_strict_acc,none": sum(flat) / len(flat),
                "bleu,none": 0.3,
                "bleu_stderr,none": 0.05,
            },
        },
        "higher_is_better": {"grp": {"acc": True}, "ife": {}},
        "scores": {
            "t1": {"acc,none": acc},
            "ife": {"prompt_level_strict_acc,none": prompt, "inst_level_strict_acc,none": inst},
        },
        "examples": {"ife": [{"doc_id": "0", "prompt": "p", "target": "", "answer": "a"}]},
    }


def test_a_group_shows_its_first_subtasks_examples_under_its_own_name() -> None:
    result = _result("s", {"0": 1.0}, {"0": [1]})
    result["examples"]["t1"] = [{"doc_id": "0", "prompt": "q", "target": "t", "answer": "x"}]
    shown = forgetting.side_by_side(result, None)
    assert list(shown) == ["grp (t1)", "ife"]
    assert shown["grp (t1)"] == [{"prompt": "q", "target": "t", "student": "x", "base": ""}]


def test_forgetting_table_intervals_by_hand() -> None:
    """Group rows pool their subtasks' items; IFEval's instruction level counts instructions;
    a corpus metric takes lm_eval's stderr; differences are paired item by item."""
    student = _result(
        "s",
        {str(i): float(i < 6) for i in range(8)},  # 6 of 8
        {"0": [1, 1], "1": [1, 0, 0], "2": [1]},  # prompts 2 of 3, instructions 4 of 6
    )
    base = _result("b", {str(i): 1.0 for i in range(8)}, {"0": [1, 1], "1": [1, 1, 0], "2": [0]})
    rows = {(r["task"], r["metric"]): r for r in forgetting.table(student, base)}
    assert set(rows) == {
        ("grp", "acc,none"),
        ("ife", "prompt_level_strict_acc,none"),
        ("ife", "inst_level_strict_acc,none"),
        ("ife", "bleu,none"),
    }  # t1 is inside grp: not a row of its own
    acc = rows["grp", "acc,none"]
    assert acc["student"]["n"] == 8 and acc["student"]["value"] == 0.75
    assert (acc["student"]["low"], acc["student"]["high"]) == pytest.approx(stats.wilson(6, 8))
    assert (acc["base"]["low"], acc["base"]["high"]) == pytest.approx(stats.wilson(8, 8))
    # 0/1 items paired: 2 of 8 right only for the base; Agresti-Min, cells + 1/2 of n + 2
    centre, half = -2 / 10, stats.Z95 * (3 - 2**2 / 10) ** 0.5 / 10
    assert acc["difference"]["value"] == pytest.approx(-0.25)
    assert acc["difference"]["low"] == pytest.approx(centre - half)
    assert acc["difference"]["method"].startswith("agresti-min")
    inst = rows["ife", "inst_level_strict_acc,none"]
    assert inst["student"]["n"] == 6 and inst["student"]["value"] == pytest.approx(4 / 6)
    assert (inst["student"]["low"], inst["student"]["high"]) == pytest.approx(stats.wilson(4, 6))
    assert inst["difference"]["n"] == 6  # paired instruction by instruction
    prompt = rows["ife", "prompt_level_strict_acc,none"]
    assert prompt["student"]["n"] == 3 and prompt["base"]["value"] == pytest.approx(1 / 3)
    bleu = rows["ife", "bleu,none"]["student"]
    assert (bleu["low"], bleu["high"]) == pytest.approx(
        (0.3 - stats.Z95 * 0.05, 0.3 + stats.Z95 * 0.05)
    )
    assert bleu["method"].startswith("lm_eval stderr")
    assert forgetting.side_by_side(student, base) == {
        "ife": [{"prompt": "p", "target": "", "student": "a", "base": "a"}]
    }  # grp's subtask t1 kept no examples: no table for it
    only = forgetting.table(student, None)
    assert all(r["base"] is None and r["difference"] is None for r in only)


def test_the_documented_harness_commands_parse_into_valid_settings() -> None:
    """Every `distillery eval harness` command in docs/eval.md (continuation lines joined)
    is accepted by the CLI and gives a valid config with the tasks it names."""
    import re
    import shlex

    from distillery.cli import _eval_config, build_parser

    text = (Path(__file__).resolve().parent.parent / "docs" / "eval.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text.replace("\\\n", " "), re.S)
    commands = [
        line.split("  #")[0]
        for block in blocks
        for line in block.splitlines()
        if "distillery eval harness" in line
    ]
    assert len(commands) >= 5
    for command in commands:
        words = shlex.split(re.sub(r"\$(\w+)", r"\1", command))
        args = build_parser().parse_args(words[words.index("eval") :])
        config = _eval_config(args)
        assert config.harness.model and config.harness.tasks
        assert set(config.harness.tasks) <= {
            "mmlu", "arc_challenge", "arc_easy", "hellaswag", "gsm8k", "ifeval"
        }  # fmt: skip


def test_a_base_that_is_the_student_itself_is_flagged(tmp_path: Path) -> None:
    """--base naming the student (the same path, or a copy of the same files): the summary
    says so and the report warns that the zero differences are by construction."""
    import shutil

    from distillery.eval.report import render_report

    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text('{"model_type": "llama"}')
    copy = tmp_path / "copy"
    shutil.copytree(student, copy)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "qwen2"}')
    scores = {str(i): float(i < 3) for i in range(6)}
    for base, same in ((student, True), (copy, True), (other, False)):
        summary = forgetting.summarise(
            _result(str(student), scores, {"0": [1]}), _result(str(base), scores, {"0": [1]})
        )
        assert summary["same_model"] is same
        page = render_report({"run": "r", "harness": summary})
        assert ("The base is the student itself" in page) is same
