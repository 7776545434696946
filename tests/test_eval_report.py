"""`distillery eval report`: every rate with n and a 95% interval, IFEval of the student and
its base side by side, sample answers, and the demo banner (and `is_demo` in summary.json)
whenever an input is demo data. The page is looked at in headless Chromium when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from distillery import stats
from distillery.cli import main
from distillery.eval.ifeval import evaluate
from distillery.resources import shipped

IFEVAL = shipped("demo") / "ifeval_demo.jsonl"


def _ifeval_run(folder: Path, spec: str, answer: str) -> dict:
    """An `eval ifeval` output folder: scored responses and the config naming the model."""
    folder.mkdir(parents=True)
    prompts = [json.loads(x)["prompt"] for x in IFEVAL.read_text().splitlines()]
    responses = folder / "responses.jsonl"
    responses.write_text(
        "".join(
            json.dumps({"prompt": p, "response": f"{answer} {i}"}) + "\n"
            for i, p in enumerate(prompts)
        )
    )
    (folder / "ifeval_config.yaml").write_text(yaml.safe_dump({"student": {"spec": spec}}))
    return evaluate(IFEVAL, responses, folder)


def _eval_dir(tmp_path: Path, judge: str, demo_training: bool) -> Path:
    train = tmp_path / "train"
    (train / "model").mkdir(parents=True)
    (train / "metrics.json").write_text(json.dumps({"is_demo": demo_training, "steps": 3}))
    ev = tmp_path / "eval"
    student, base = f"hf:{train / 'model'}", "hf:base-model"
    _ifeval_run(ev / "ifeval-base", base, "a, b, c LOWER")
    _ifeval_run(ev / "ifeval", student, "plain lowercase words without any punctuation at all")
    pairs = [
        {
            "id": str(i),
            "outcome": o,
            "instruction": f"Question {i}",
            "student": "s",
            "baseline": "b",
        }
        for i, o in enumerate(["student", "student", "tie", "baseline", "student"])
    ]
    (ev / "winrate_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (ev / "winrate_summary.json").write_text(
        json.dumps(
            {
                "judge": judge,
                "pairs": 5,
                "judged": 5,
                "student_wins": 3,
                "baseline_wins": 1,
                "ties": 1,
                "win_rate": 0.7,
                "flip_rate": 0.2,
                "parse_failure_rate": 0.0,
                "length_controlled_win_rate": 0.66,
            }
        )
    )
    config = {"student": {"spec": student}, "baseline": {"spec": base}, "judge": {"spec": judge}}
    (ev / "winrate_config.yaml").write_text(yaml.safe_dump(config))
    return ev


def test_report_shows_intervals_both_models_samples_and_the_demo_banner(tmp_path: Path) -> None:
    ev = _eval_dir(tmp_path, judge="fake", demo_training=True)
    assert main(["eval", "report", str(ev)]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["is_demo"] is True
    reasons = " | ".join(summary["demo_reasons"])
    assert "judge is the scripted fake teacher" in reasons and "trained on demo data" in reasons
    # the student's IFEval first (the winrate config names it), the base's beside it
    assert summary["ifeval"]["model"].endswith("train/model")
    assert [r["model"] for r in summary["ifeval_others"]] == ["hf:base-model"]
    strict = summary["ifeval"]["intervals"]["prompt_level_strict"]
    k = round(summary["ifeval"]["prompt_level_strict"] * 6)
    assert strict == stats.proportion(k, 6).as_dict()
    page = (ev / "report.html").read_text()
    assert "Demo data" in page and "hf:base-model" in page
    assert stats.describe(strict) in page  # e.g. 50.0% [18.8%–81.2%] n=6
    # the win rate over 5 pairs with a tie as half: 3.5 / 5 and its interval
    assert stats.describe(stats.win_rate(3, 1, 1)) in page and "Question 0" in page
    assert stats.describe(stats.proportion(1, 5)) in page  # the flip rate, 0.2 of 5
    assert "plain lowercase words" in page and "a, b, c LOWER" in page  # sample answers


def test_the_per_type_chart_gives_each_bar_its_n(tmp_path: Path) -> None:
    """A per-instruction-type accuracy over one instruction is not a rate to show bare."""
    ev = _eval_dir(tmp_path, judge="fake", demo_training=False)
    assert main(["eval", "report", str(ev)]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    sizes = summary["ifeval"]["per_type_strict_n"]
    rows = [json.loads(x) for x in (ev / "ifeval" / "eval_results_strict.jsonl").open()]
    assert sum(sizes.values()) == sum(len(r["instruction_id_list"]) for r in rows)
    page = (ev / "report.html").read_text()
    for kind, n in sizes.items():
        assert f">{kind} (n={n})</text>" in page


def test_a_blank_answer_is_not_called_empty(tmp_path: Path) -> None:
    """The demo's random student answers with newlines only: say so, not "(empty)"."""
    ev = _eval_dir(tmp_path, judge="fake", demo_training=False)
    pairs = ev / "winrate_pairs.jsonl"
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    rows[0]["student"], rows[0]["baseline"] = "\n" * 48, ""
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "report", str(ev)]) == 0
    page = (ev / "report.html").read_text()
    assert "(only whitespace: 48 characters)" in page and "(empty)" in page


def test_no_banner_without_demo_inputs(tmp_path: Path) -> None:
    ev = _eval_dir(tmp_path, judge="openai:gpt-4o-mini", demo_training=False)
    assert main(["eval", "report", str(ev)]) == 0
    assert json.loads((ev / "summary.json").read_text())["is_demo"] is False
    assert "Demo data" not in (ev / "report.html").read_text()


def test_no_label_is_clipped_in_chromium(tmp_path: Path) -> None:
    """Every SVG label lies inside its chart and nothing overflows the page's width."""
    try:
        from tests.helpers.chromium import CHROMIUM, Chromium
    except ImportError:
        pytest.skip("tests/helpers/chromium.py is absent")
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed")
    ev = _eval_dir(tmp_path, judge="fake", demo_training=True)
    assert main(["eval", "report", str(ev)]) == 0
    with Chromium() as browser:
        page = browser.open((ev / "report.html").as_uri())
        outside = page.evaluate(
            "[...document.querySelectorAll('svg text')].filter(t => { const b = t.getBBox();"
            " const w = t.ownerSVGElement.viewBox.baseVal.width;"
            " return b.x < 0 || b.x + b.width > w; }).map(t => t.textContent)"
        )
        labels = page.evaluate("document.querySelectorAll('svg text').length")
        overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    assert labels > 10 and outside == [] and overflow is False


def test_comparison_shows_each_runs_interval_and_n(tmp_path: Path) -> None:
    a = _eval_dir(tmp_path / "a", judge="fake", demo_training=False)
    b = _eval_dir(tmp_path / "b", judge="openai:gpt-4o-mini", demo_training=False)
    out = tmp_path / "cmp.html"
    assert main(["eval", "compare", str(a), str(b), "--output", str(out)]) == 0
    page = out.read_text()
    assert page.count(stats.describe(stats.win_rate(3, 1, 1))) == 2 and "Demo data" in page


def test_held_out_losses_of_several_models_stand_side_by_side(tmp_path: Path) -> None:
    ev = tmp_path / "eval"
    (ev / "base").mkdir(parents=True)
    for folder, loss in ((ev, 1.5), (ev / "base", 2.25)):
        (folder / "heldout_loss.json").write_text(
            json.dumps({"loss": loss, "perplexity": 2.718**loss, "supervised_tokens": 4321})
        )
    assert main(["eval", "report", str(ev)]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["heldout"]["loss"] == 1.5 and summary["heldout"]["folder"] == "."
    assert [h["folder"] for h in summary["heldout_others"]] == ["base"]
    page = (ev / "report.html").read_text()
    assert "1.5000" in page and "2.2500" in page and page.count("4,321") == 2


@pytest.mark.parametrize(
    "name", ["ifeval/ifeval_summary.json", "winrate_summary.json", "winrate_config.yaml"]
)
def test_a_damaged_results_file_is_one_line_naming_it(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = _eval_dir(tmp_path, judge="fake", demo_training=False)
    (ev / name).write_text("{broken: [" if name.endswith(".yaml") else '{"pairs": 5,')
    assert main(["eval", "report", str(ev)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{ev / name}: malformed" in err and len(err.splitlines()) == 1
    assert not (ev / "report.html").exists()


def test_the_report_shows_the_mix_the_student_was_trained_on(tmp_path: Path) -> None:
    """The training run's data_mix (metrics.json beside the student's folder): rows and
    supervised tokens per source and the held-out loss of each, with its n."""
    ev = _eval_dir(tmp_path, judge="fake", demo_training=False)
    mix = [
        {"name": "kept", "path": "kept.jsonl", "available": 48, "conversations": 44},
        {"name": "replay", "path": "hf:general", "available": 900, "conversations": 20},
    ]
    for source, tokens, share, loss in zip(
        mix, (13622, 3400), (0.8, 0.2), (1.92, 2.5), strict=True
    ):
        source |= {"supervised_tokens": tokens, "share_supervised_tokens": share}
        source |= {"eval_loss": loss, "eval_supervised_tokens": 1318}
    metrics = tmp_path / "train" / "metrics.json"
    metrics.write_text(json.dumps({"steps": 3, "data_mix": mix}))
    assert main(["eval", "report", str(ev)]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["training_mix"] == {"metrics": str(metrics), "sources": mix}
    page = (ev / "report.html").read_text()
    assert "Training data mix" in page and "20 of 900" in page and "13,622 (80.0%)" in page
    assert "2.5000 (n=1,318)" in page


def test_a_damaged_eval_config_is_one_line_naming_it(tmp_path: Path) -> None:
    from distillery.errors import UserError
    from distillery.eval.demo_data import demo_reasons

    (tmp_path / "harness_config.yaml").write_text("harness: [unclosed\n")
    with pytest.raises(UserError, match=r"harness_config\.yaml: not a readable config"):
        demo_reasons(tmp_path)
