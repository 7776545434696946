"""`distillery demo` end to end, offline: every stage's real code path, fake teacher, tiny student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage_and_links_the_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--rows", "30"]) == 0
    index = (out / "index.html").read_text()
    for link in (
        "generate/manifest.json",
        "filter/report.html",
        "train/metrics.json",
        "eval/report.html",
    ):
        assert f"href='{link}'" in index and (out / link).exists()
    assert "Demo data" in index
    manifest = json.loads((out / "generate" / "manifest.json").read_text())
    assert manifest["demo"] is True and manifest["rows"] == 30
    filtered = json.loads((out / "filter" / "summary.json").read_text())
    assert filtered["demo"] is True and filtered["rows_kept"] > 0
    # conversations of 1-3 turns, and a Magpie pass drawn by the random student, both filtered
    assert set(manifest["rows_by_turns"]) > {"1"}
    magpie = json.loads((out / "passes" / "magpie" / "manifest.json").read_text())
    assert magpie["rows_by_origin"].get("magpie", 0) > 0 and magpie["rejected"] > 0
    assert filtered["rows_in"] == manifest["rows"] + magpie["rows"]
    assert "Demo data" in (out / "filter" / "report.html").read_text()
    metrics = json.loads((out / "train" / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["supervised_tokens_per_s"] > 0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert {"ifeval", "winrate", "heldout"} <= set(summary)
    assert summary["ifeval"]["prompts"] == 6 and summary["winrate"]["pairs"] == 12
    # the untrained student's IFEval beside the trained one's; held-out points on the curve
    assert (out / "eval" / "ifeval-base" / "ifeval_summary.json").exists()
    assert f"hf:{out / 'student'}" in (out / "eval" / "report.html").read_text()
    assert [s for s, _ in metrics["loss_curve"]["eval"]] == [10, 20, 30]
    assert (out / "train" / "report.html").exists()
