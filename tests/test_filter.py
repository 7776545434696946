"""`distillery filter` end to end on Alpaca-format input, with the fake judge offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.cli import main
from distillery.records import Record

TOPICS = [
    "volcanoes",
    "tides",
    "bread yeast",
    "rainbows",
    "bees",
    "glaciers",
    "magnets",
    "comets",
    "coral reefs",
    "thunder",
    "fungi",
    "deserts",
    "owls",
    "batteries",
    "vaccines",
    "earthquakes",
    "clouds",
    "tea",
    "salt",
    "wind",
]


def alpaca_rows() -> list[dict]:
    rows = []
    for i, topic in enumerate(TOPICS):
        rows.append(
            {
                "instruction": f"Explain how {topic} work to a curious twelve year old student.",
                "input": "",
                "output": f"Here is how {topic} work, step by step, with a clear example number {i}.",
            }
        )
    rows.append(dict(rows[0]))  # exact duplicate
    rows.append(
        {**rows[1], "instruction": rows[1]["instruction"].upper()}
    )  # exact after normalising
    rows.append(
        {
            "instruction": "Say hi to me please now.",
            "input": "",
            "output": "As an AI language model, hi.",
        }
    )
    rows.append(
        {
            "instruction": "What is the boiling point of water at sea level?",
            "input": "",
            "output": "100 degrees Celsius, or 212 degrees Fahrenheit, at standard pressure.",
        }
    )  # contaminated
    return rows


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    inp = tmp_path / "in.json"
    inp.write_text(json.dumps(alpaca_rows()))
    bench = tmp_path / "ifeval.jsonl"
    bench.write_text(
        json.dumps(
            {
                "key": 1,
                "prompt": "What is the boiling point of water at sea level?",
                "instruction_id_list": [],
                "kwargs": [],
            }
        )
        + "\n"
    )
    return inp, bench


def run(tmp_path: Path, inp: Path, *extra: str) -> int:
    return main(["filter", "--input", str(inp), "--output-dir", str(tmp_path / "out"), *extra])


def test_filter_end_to_end(tmp_path: Path, data: tuple[Path, Path]) -> None:
    inp, bench = data
    code = run(
        tmp_path,
        inp,
        "--steps",
        "heuristics,exact,near,decontam,judge",
        "--against",
        str(bench),
        "--judge",
        "fake",
        "decontam.embedding_threshold=null",
        "judge.min_score=7",
        f"judge.teacher.cache_path={tmp_path / 'c.sqlite'}",
    )
    assert code == 0
    out = tmp_path / "out"
    kept = [Record.model_validate_json(x) for x in (out / "kept.jsonl").read_text().splitlines()]
    dropped = [
        Record.model_validate_json(x) for x in (out / "dropped.jsonl").read_text().splitlines()
    ]
    assert len(kept) + len(dropped) == len(alpaca_rows())
    rules = {d.dropped_by.rule for d in dropped if d.dropped_by}
    assert {"refusal", "exact_duplicate", "decontam_ngram"} <= rules
    contaminated = next(
        d for d in dropped if d.dropped_by and d.dropped_by.rule == "decontam_ngram"
    )
    assert contaminated.dropped_by.evidence["eval_source"] == "ifeval.jsonl"
    assert all(d.meta["filter_step"] for d in dropped)
    # threshold boundary: a score equal to the threshold is kept
    assert kept and all(r.scores["judge"] >= 7 for r in kept)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_in"] == len(alpaca_rows()) and summary["rows_kept"] == len(kept)
    assert [f["step"] for f in summary["funnel"]] == [
        "input",
        "heuristics",
        "exact",
        "near",
        "decontam",
        "judge",
    ]
    assert summary["judge"]["model"] == "fake" and summary["judge"]["judged"] > 0
    report = (out / "report.html").read_text()
    assert report.count("<svg") >= 4 and "Drop funnel" in report and "Judge scores" in report
    assert f"{summary['rows_kept']:,} kept" in report and "decontam_ngram" in report
    # a real run passes its rows and config: survival, kept samples and thresholds show
    assert "<h3>By origin</h3>" in report and "min_score" in report
    assert "not passed to the report" not in report and "No kept rows" not in report
    import datasets

    assert datasets.load_from_disk(str(out / "kept_dataset")).num_rows == len(kept)


def test_semantic_dedup_and_embedding_decontam(tmp_path: Path, data: tuple[Path, Path]) -> None:
    inp, bench = data
    rows = alpaca_rows()
    rows.append(
        {
            "instruction": "Could you explain to a curious 12-year-old how volcanoes work?",
            "input": "",
            "output": "Volcanoes form where magma rises through the crust, and pressure pushes it out.",
        }
    )
    inp.write_text(json.dumps(rows))
    code = run(
        tmp_path,
        inp,
        "--steps",
        "semantic,decontam",
        "--against",
        str(bench),
        "semantic.threshold=0.85",
    )
    assert code == 0
    dropped = [
        Record.model_validate_json(x)
        for x in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()
    ]
    sem = [d for d in dropped if d.dropped_by and d.dropped_by.rule == "semantic_duplicate"]
    assert any("12-year-old" in d.instruction for d in sem) or any(
        d.dropped_by and "12-year-old" in d.dropped_by.evidence["survivor_instruction"] for d in sem
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["nearest_neighbour_similarity"]) == len(rows)
    assert "Nearest-neighbour similarity" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "heuristics,magic"], "unknown step(s) magic"),
        (["--steps", "decontam"], "the decontam step needs --against"),
        (["--steps", "decontam", "--against", "/nonexistent/ifeval.jsonl"], "no such file"),
        (["--steps", "judge"], "the judge step has no judge"),
    ],
)
def test_bad_arguments_fail_before_work(
    tmp_path: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    inp, _ = data
    assert run(tmp_path, inp, *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rows_without_text_are_reported_by_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        '{"instruction": "a b c", "output": "x y"}\n{"title": "no text here"}\n{"prompt": 1}\n'
    )
    assert run(tmp_path, inp) == 2
    err = capsys.readouterr().err
    assert f"{inp}:2: no text field" in err and "(and 1 more bad rows)" in err
    assert not (tmp_path / "out").exists()


def test_judge_without_a_key_fails_before_anything_is_written(
    tmp_path: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inp, _ = data
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    assert (
        run(tmp_path, inp, "--steps", "heuristics,judge", "--judge", "anthropic:claude-haiku-4-5")
        == 2
    )
    assert "no API key: set ANTHROPIC_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["join", "minhash"])
def test_near_method_is_the_configured_one(
    tmp_path: Path, data: tuple[Path, Path], method: str
) -> None:
    inp, _ = data
    assert run(tmp_path, inp, "--steps", "near", f"near.method={method}") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["near"]["method"] == method
