"""The filter report's survival tables, kept samples, thresholds and rates with n and
intervals; the run index's headline numbers; and, in headless Chromium, that no page clips a
label or runs off the side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from distillery.filter.config import FilterConfig
from distillery.filter.report import render_report, survival, thresholds
from distillery.jsonl import read_jsonl
from distillery.records import Record
from distillery.run_index import write_index
from distillery.stats import describe, mean, proportion
from distillery.view import write_view

from tests.helpers.chromium import CHROMIUM, Chromium, ink
from tests.helpers.runs import CHILD, GRANDCHILD, LEAK, ROOT, SIBLING, write_demo_like_run

LONG_CATEGORY = "professional_writing_with_a_rather_long_category_name_for_clipping_checks"


def _filter_run(tmp_path: Path) -> tuple[list[Record], list[Record], dict[str, Any]]:
    run = write_demo_like_run(tmp_path / "run")
    kept = list(read_jsonl(run / "filter" / "kept.jsonl", Record))
    dropped = list(read_jsonl(run / "filter" / "dropped.jsonl", Record))
    rows = [r for r in read_jsonl(run / "generate" / "generated.jsonl", Record)]
    summary = {
        "input": str(run / "generate" / "generated.jsonl"),
        "steps": ["heuristics", "near", "decontam", "judge"],
        "rows_in": 5,
        "rows_kept": 3,
        "rows_dropped": 2,
        "wall_time_s": 0.5,
        "funnel": [
            {"step": "input", "in": 5, "dropped": 0, "remaining": 5, "seconds": 0},
            {"step": "near", "in": 5, "dropped": 1, "remaining": 4, "seconds": 0.1},
            {"step": "decontam", "in": 4, "dropped": 1, "remaining": 3, "seconds": 0.1},
        ],
        "dropped_by_rule": {"near_duplicate": 1, "decontam_ngram_with_a_long_rule_name": 1},
        "lengths": {
            "response_tokens_before": [5, 8, 9, 12, 30],
            "response_tokens_after": [5, 8, 9],
        },
        "categories_before": {LONG_CATEGORY: 4, "creative_writing": 1},
        "categories_after": {LONG_CATEGORY: 3},
        "judge": {
            "model": "fake",
            "generator_models": ["fake"],
            "same_family": True,
            "judged": 4,
            "parse_failures": 1,
            "parse_failure_rate": 0.25,
            "reasked": 1,
            "scores": [8.0, 7.0, 5.0],
            "max_parse_failure_rate": 0.5,
            "parse_failure_exceeded": False,
        },
    }
    config = FilterConfig.model_validate(
        {
            "input": summary["input"],
            "steps": summary["steps"],
            "against": ["configs/demo/ifeval_demo.jsonl"],
            "judge": {"teacher": {"spec": "fake"}, "min_score": 6},
        }
    ).model_dump(mode="json")
    del dropped  # the report reads the input rows and the kept ones
    return rows, kept, {"summary": summary, "config": config}


def test_survival_by_origin_operation_and_round(tmp_path: Path) -> None:
    rows, kept, _ = _filter_run(tmp_path)
    tables = survival(rows, kept)
    by = {key: {g["name"]: (g["in"], g["kept"]) for g in table} for key, table in tables.items()}
    # ROOT, LEAK: self_instruct (LEAK dropped); CHILD, SIBLING, GRANDCHILD evolved
    assert by["origin"] == {"evolved (all operations)": (3, 2), "self_instruct": (2, 1)}
    assert by["operation"] == {"deepen": (1, 1), "breadth": (1, 0), "add_constraints": (1, 1)}
    assert by["round"] == {"0": (2, 1), "1": (2, 2), "2": (1, 0)}
    evolved = tables["origin"][0]
    assert evolved["rate"] == proportion(2, 3).as_dict()
    # no evolved row: no operation or round table
    plain = survival([r for r in rows if r.id in (ROOT, LEAK)], kept)
    assert plain["operation"] == [] and plain["round"] == []


def test_filter_report_shows_survival_kept_samples_thresholds_and_intervals(
    tmp_path: Path,
) -> None:
    rows, kept, ctx = _filter_run(tmp_path)
    page = render_report(ctx["summary"], {}, rows=rows, kept=kept, config=ctx["config"])
    # every rate with its n and 95% interval: kept share, each step, each rule, parse failures
    for interval in (
        proportion(3, 5),  # kept
        proportion(1, 5),  # near step, and each rule's share of the input
        proportion(1, 4),  # decontam step, and the judge's parse failures
        proportion(2, 3),  # evolved rows kept
    ):
        assert describe(interval) in page
    assert "n=5" in page and "By evolution operation" in page and "breadth" in page
    # kept samples: the kept rows' instructions and judge scores, not the dropped ones
    section = page.split("Sample of kept rows")[1].split("Sample of dropped rows")[0]
    kept_text = {r.id: r.instruction for r in kept}
    for rid in (ROOT, CHILD, SIBLING):
        assert rid in section and kept_text[rid] in section
    assert GRANDCHILD not in section and LEAK not in section
    # the thresholds of the steps that ran (and only those)
    table = {(t["step"], t["key"]): t["value"] for t in thresholds(ctx["config"])}
    assert table[("judge", "min_score")] == 6.0 and table[("judge", "teacher.spec")] == "fake"
    assert table[("near", "threshold")] == 0.8
    assert table[("decontam", "against")] == "configs/demo/ifeval_demo.jsonl"
    assert not any(step == "semantic" for step, _ in table)
    assert "Thresholds in force" in page and "min_score" in page and "teacher.spec" in page
    # without rows or config (an old caller) the page still renders and says so
    bare = render_report(ctx["summary"], {})
    assert "No kept rows" in bare and "no survival tables" in bare


def _stage_files(out: Path) -> None:
    files: dict[str, Any] = {
        "generate/manifest.json": {
            "demo": True,
            "rows": 30,
            "target": 30,
            "rejected": 8,
            "rows_by_origin": {"self_instruct": 12, "evol:deepen": 18},
            "requests_sent": 104,
            "input_tokens": 35315,
            "output_tokens": 3689,
            "spent_usd": 0.0123,
        },
        "filter/summary.json": {
            "demo": True,
            "rows_in": 30,
            "rows_kept": 28,
            "rows_dropped": 2,
            "dropped_by_rule": {"near_duplicate": 1, "judge_below_threshold": 1},
            "judge": {"model": "fake", "scores": [7.0, 8.0, 9.0, 4.0]},
        },
        "train/metrics.json": {
            "steps": 30,
            "train_loss": 3.77,
            "eval_loss": 1.625,
            "supervised_tokens": 72990,
            "supervised_tokens_per_s": 2208.1,
            "loss_curve": {"train": [[5, 5.913], [30, 1.924]], "eval": []},
        },
        "eval/summary.json": {
            "is_demo": True,
            "ifeval": {
                "model": "hf:student",
                "intervals": {
                    "prompt_level_strict": proportion(1, 6).as_dict(),
                    "instruction_level_strict": proportion(2, 7).as_dict(),
                },
            },
            "winrate": {"judge": "fake", "intervals": {"win_rate": proportion(0.5, 11).as_dict()}},
            "heldout": {"loss": 1.6248, "perplexity": 5.077, "supervised_tokens": 374},
            "harness": {
                "rows": [
                    {
                        "task": "arc_easy_local",
                        "metric": "acc",
                        "student": proportion(3, 8).as_dict(),
                        "base": proportion(5, 8).as_dict(),
                        "difference": {"value": -0.25, "n": 8, "low": -0.6, "high": 0.1},
                    }
                ]
            },
        },
    }
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(data))
    (out / "filter" / "report.html").write_text("<html></html>")


def test_run_index_shows_each_stage_headline_numbers(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    _stage_files(out)
    page = write_index(out, 96.0).read_text()
    assert "Demo data" in page and "Whole pipeline in 96 s" in page
    assert "30</b><span>rows generated (target 30)" in page
    assert describe(proportion(8, 38)) in page  # rejected share of the candidates
    assert "$0.0123" in page and "39,004" in page  # spend, tokens in + out
    assert "28 of 30" in page and describe(proportion(2, 30)) in page  # kept, drop rate
    judge = mean([7.0, 8.0, 9.0, 4.0])
    assert f"{judge.value:.2f} [{judge.low:.2f}–{judge.high:.2f}] n=4" in page
    assert "5.913 → 1.924" in page and "1.625</b><span>held-out loss" in page
    assert describe(proportion(1, 6)) in page and describe(proportion(0.5, 11)) in page
    assert "arc_easy_local" in page and describe(proportion(5, 8)) in page and "-25.0%" in page
    # links only to what exists
    assert "href='filter/report.html'" in page and "href='eval/report.html'" not in page
    assert "href='view.html'" not in page
    # a stage that has not run says so; a damaged file is not called "not run"
    (out / "train" / "metrics.json").unlink()
    assert "Not run (no train/metrics.json)" in write_index(out).read_text()
    (out / "train" / "metrics.json").write_text('{"steps": 3,')
    page = write_index(out).read_text()
    assert "<code>train/metrics.json</code> is there but unreadable" in page
    assert "Not run (no train/metrics.json)" not in page


@pytest.mark.parametrize("scores", [[9.0], [8.0, 8.0, 8.0]])
def test_run_index_shows_a_judge_mean_without_an_interval(
    scores: list[float], tmp_path: Path
) -> None:
    """One judged row, or every row given the same score: the mean and n, no interval (the
    page used to fail on one score and show "8.00 [8.00–8.00]" for equal ones)."""
    out = tmp_path / "demo"
    _stage_files(out)
    summary = json.loads((out / "filter" / "summary.json").read_text())
    summary["judge"]["scores"] = scores
    (out / "filter" / "summary.json").write_text(json.dumps(summary))
    page = write_index(out).read_text()
    assert f"<b>{scores[0]:.2f} n={len(scores)}</b><span>mean judge score" in page


def test_run_index_sums_every_generate_run_that_feeds_the_filter(tmp_path: Path) -> None:
    """The demo's Magpie pass (passes/magpie) feeds the same filter as generate/: the index's
    rows generated must add up to the filter's rows in, with each run's rows shown."""
    out = tmp_path / "demo"
    _stage_files(out)
    magpie = {"rows": 4, "target": 4, "rejected": 26, "rows_by_origin": {"magpie": 4}}
    magpie |= {"requests_sent": 39, "input_tokens": 1231, "output_tokens": 4126, "spent_usd": 0.5}
    (out / "passes" / "magpie").mkdir(parents=True)
    (out / "passes" / "magpie" / "manifest.json").write_text(json.dumps(magpie))
    page = write_index(out).read_text()
    assert "34</b><span>rows generated (target 34)" in page
    assert describe(proportion(8 + 26, 30 + 8 + 4 + 26)) in page
    assert "143</b><span>teacher requests" in page and "44,361</b>" in page  # 39,004 + 5,357
    assert "$0.5123" in page and "magpie 4" in page
    assert "<code>generate</code> 30 rows (target 30)" in page
    assert "<code>passes/magpie</code> 4 rows (target 4)" in page


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent (apt-get install -y --no-install-recommends chromium)",
)

CLIPPED = """[...document.querySelectorAll('svg text')].filter(t => {
  const b = t.getBBox(), w = t.ownerSVGElement.viewBox.baseVal.width;
  return b.x < -0.5 || b.x + b.width > w + 0.5; }).map(t => t.textContent)"""


@needs_chromium
def test_pages_in_chromium_clip_no_label(tmp_path: Path) -> None:
    rows, kept, ctx = _filter_run(tmp_path)
    report = tmp_path / "report.html"
    report.write_text(render_report(ctx["summary"], {}, rows=rows, kept=kept, config=ctx["config"]))
    out = tmp_path / "demo"
    _stage_files(out)
    write_view(tmp_path / "run", out / "view.html")
    index = write_index(out, 96.0)
    with Chromium(width=1280, height=900) as browser:
        for page_path in (report, index):
            page = browser.open(page_path.as_uri())
            assert page.evaluate(CLIPPED) == []
            width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], f"{page_path.name} is wider than the window: {width}"
            labels = page.evaluate("[...document.querySelectorAll('svg text')].length")
            assert page_path == index or labels > 10  # the report's charts were drawn
            assert ink(page.screenshot(tmp_path / f"{page_path.stem}.png")) > 0.01
        # the index links the row explorer, which opens
        page = browser.open(index.as_uri())
        page.evaluate("document.querySelector(\"a[href='view.html']\").click()")
        page.wait_for(
            "location.pathname.endsWith('view.html') && document.body.dataset.firstRenderMs"
        )
        assert page.evaluate("document.getElementById('count').textContent") == "6 of 6 rows"
