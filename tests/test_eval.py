"""Eval: pairwise win rate with position swap, held-out loss with the training masking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from distillery.cli import main
from distillery.eval.winrate import PairResult, length_controlled, parse_winner, summarise
from distillery.parsing import ParseFailure

from tests.tiny_models import build_tiny_lm


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ('{"winner": "A"}', "A"),
        ('x {"explanation": "e", "winner": "tie"} y', "tie"),
        ('{"winner": "b"}', "B"),
    ],
)
def test_parse_winner(text: str, winner: str) -> None:
    assert parse_winner(text) == winner
    with pytest.raises(ParseFailure):
        parse_winner('{"winner": "both"}')


def test_disagreement_is_a_tie_and_counts_as_a_flip() -> None:
    results = [
        PairResult("1", "student", "student", 10, 10),
        PairResult("2", "student", "baseline", 10, 10),
        PairResult("3", "baseline", "baseline", 10, 10),
        PairResult("4", None, "student", 10, 10),
    ]
    s = summarise(results, "judge")
    assert (s["student_wins"], s["baseline_wins"], s["ties"], s["judged"]) == (1, 1, 1, 3)
    assert (
        s["win_rate"] == 0.5
        and abs(s["flip_rate"] - 1 / 3) < 1e-9
        and s["parse_failure_rate"] == 0.25
    )


def test_length_control_removes_a_pure_length_effect() -> None:
    # the student wins exactly when it is longer: at equal length it would win about half the time
    results = []
    for i in range(40):
        longer = i % 2 == 0
        results.append(
            PairResult(
                str(i),
                *(["student"] * 2 if longer else ["baseline"] * 2),
                student_len=120 if longer else 80,
                baseline_len=80 if longer else 120,
            )
        )
    lc = length_controlled(results)
    assert lc is not None and abs(lc - 0.5) < 0.05
    assert summarise(results, "j")["win_rate"] == 0.5


def simulated(
    n: int, rate_at_equal_length: float, bias: float, ties: float, student_longer: bool
) -> list[PairResult]:
    """Pairs whose expected score (win 1, tie 1/2) is sigmoid(logit(rate) + bias * d); a
    share `ties` of verdicts are ties, independent of length."""
    rng = np.random.default_rng(0)
    logit = np.log(rate_at_equal_length / (1 - rate_at_equal_length))
    out = []
    for i in range(n):
        student_len = int(rng.integers(60, 200) if student_longer else rng.integers(40, 160))
        baseline_len = int(rng.integers(40, 120) if student_longer else rng.integers(40, 160))
        d = (student_len - baseline_len) / (student_len + baseline_len)
        expected = 1 / (1 + np.exp(-(logit + bias * d)))
        p_win = (expected - ties / 2) / (1 - ties)  # wins + ties/2 average to `expected`
        assert 0 <= p_win <= 1
        u = rng.random()
        outcome = "tie" if u < ties else ("student" if rng.random() < p_win else "baseline")
        out.append(PairResult(str(i), outcome, outcome, student_len, baseline_len))
    return out


@pytest.mark.parametrize(("rate", "ties"), [(0.65, 0.3), (0.4, 0.5), (0.5, 0.0)])
def test_length_control_with_no_length_effect_equals_the_win_rate(rate: float, ties: float) -> None:
    results = simulated(3000, rate, bias=0.0, ties=ties, student_longer=False)
    raw = summarise(results, "j")["win_rate"]
    lc = length_controlled(results)
    assert lc is not None and abs(lc - raw) < 0.01, (lc, raw)
    assert abs(raw - rate) < 0.03
    # no length difference at all: the fit has nothing to remove, LC is the win rate exactly
    same = [PairResult(r.id, r.first, r.second, 50, 50) for r in results]
    assert length_controlled(same) == pytest.approx(summarise(same, "j")["win_rate"], abs=1e-9)


def test_length_control_corrects_a_length_bias_toward_the_equal_length_rate() -> None:
    results = simulated(6000, 0.6, bias=2.5, ties=0.2, student_longer=True)
    raw = summarise(results, "j")["win_rate"]
    lc = length_controlled(results)
    assert raw - 0.6 > 0.08  # the judge's length bias inflates the raw rate
    assert lc is not None and abs(lc - 0.6) < 0.02, (lc, raw)


def test_winrate_cli_with_the_fake_judge(tmp_path: Path) -> None:
    ins = write(
        tmp_path / "ins.jsonl",
        [{"id": f"q{i}", "instruction": f"Explain topic number {i} briefly."} for i in range(30)],
    )
    student = write(
        tmp_path / "s.jsonl",
        [
            {"id": f"q{i}", "response": "A long and careful answer " * (1 + i % 3)}
            for i in range(30)
        ],
    )
    baseline = write(
        tmp_path / "b.jsonl", [{"id": f"q{i}", "response": "Short answer."} for i in range(30)]
    )
    code = main(
        [
            "eval",
            "winrate",
            "--instructions",
            str(ins),
            "--student-responses",
            str(student),
            "--baseline-responses",
            str(baseline),
            "--judge",
            "fake",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "out" / "winrate_summary.json").read_text())
    assert summary["pairs"] == 30 and summary["judge"] == "fake"
    assert summary["win_rate"] > 0.5  # the demo judge prefers longer answers
    assert (
        0 < summary["flip_rate"] < 1
    )  # and sometimes just prefers A: position bias shows up as flips
    pairs = [
        json.loads(x) for x in (tmp_path / "out" / "winrate_pairs.jsonl").read_text().splitlines()
    ]
    assert all(p["outcome"] in ("student", "baseline", "tie", None) for p in pairs)


def test_winrate_needs_all_responses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ins = write(
        tmp_path / "ins.jsonl",
        [{"id": "a", "instruction": "x y z"}, {"id": "b", "instruction": "p q r"}],
    )
    one = write(tmp_path / "one.jsonl", [{"id": "a", "response": "r"}])
    code = main(
        [
            "eval",
            "winrate",
            "--instructions",
            str(ins),
            "--student-responses",
            str(one),
            "--baseline-responses",
            str(one),
            "--judge",
            "fake",
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "lack 1 instruction id(s), e.g. 'b'" in capsys.readouterr().err


def test_heldout_loss_is_a_token_mean_independent_of_batching(tmp_path: Path) -> None:
    from distillery.training.heldout import heldout_loss

    lm = build_tiny_lm(tmp_path / "lm")
    data = write(
        tmp_path / "d.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"Say {w} please"},
                    {"role": "assistant", "content": f"{w} " * (i + 1)},
                ]
            }
            for i, w in enumerate(["sea", "sky", "fox", "dog", "blue"])
        ],
    )
    one = heldout_loss(str(lm), str(data), batch_size=1)
    many = heldout_loss(str(lm), str(data), batch_size=4)
    assert (
        abs(one["loss"] - many["loss"]) < 1e-5
        and one["supervised_tokens"] == many["supervised_tokens"]
    )
    assert one["perplexity"] > 1


def test_a_judge_that_always_prefers_position_a_gives_all_flips_and_half_wins(
    tmp_path: Path,
) -> None:
    import asyncio

    from distillery.eval.winrate import judge_pairs

    from tests.helpers.teacher import ScriptedTeacher

    def always_a(request, params):  # type: ignore[no-untyped-def]
        return '{"explanation": "first one", "winner": "A"}'

    rows = [
        (f"q{i}", f"Question {i}?", f"student answer {i}", f"baseline answer {i}")
        for i in range(12)
    ]

    async def go():  # type: ignore[no-untyped-def]
        judge = await ScriptedTeacher(always_a).start()
        try:
            return await judge_pairs(judge, rows, tmp_path / "j.jsonl")
        finally:
            await judge.aclose()

    summary = summarise(asyncio.run(go()), "fake")
    assert summary["flip_rate"] == 1.0 and summary["win_rate"] == 0.5 and summary["ties"] == 12
    assert summary["parse_failure_rate"] == 0.0


def test_report_and_comparison(tmp_path: Path) -> None:
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    for run, acc in ((run_a, [True, False]), (run_b, [True, True])):
        (run / "ifeval").mkdir(parents=True)
        (run / "ifeval" / "ifeval_summary.json").write_text(
            json.dumps(
                {
                    "prompt_level_strict": 0.5,
                    "instruction_level_strict": sum(acc) / 2,
                    "prompt_level_loose": 0.5,
                    "instruction_level_loose": sum(acc) / 2,
                    "prompts": 1,
                    "instructions": 2,
                }
            )
        )
        write(
            run / "ifeval" / "eval_results_strict.jsonl",
            [
                {
                    "prompt": "p",
                    "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
                    "follow_all_instructions": all(acc),
                    "follow_instruction_list": acc,
                }
            ],
        )
        (run / "heldout_loss.json").write_text(
            json.dumps({"loss": 2.0, "perplexity": 7.39, "supervised_tokens": 10})
        )
    assert main(["eval", "report", str(run_a)]) == 0
    summary = json.loads((run_a / "summary.json").read_text())
    assert summary["ifeval"]["per_type_strict"] == {
        "punctuation:no_comma": 1.0,
        "startend:quotation": 0.0,
    }
    page = (run_a / "report.html").read_text()
    assert "<svg" in page and "startend:quotation" in page and "perplexity 7.39" in page
    assert (
        main(["eval", "compare", str(run_a), str(run_b), "--output", str(tmp_path / "cmp.html")])
        == 0
    )
    cmp_page = (tmp_path / "cmp.html").read_text()
    assert "ifeval.instruction_level_strict" in cmp_page and "+0.5" in cmp_page
    assert main(["eval", "report", str(tmp_path / "empty")]) == 2


def test_eval_loss_cli_stop_token_defaults_to_the_templates_end_of_turn(tmp_path: Path) -> None:
    """Phi-3 ends turns with <|end|> while its eos is <|endoftext|>: the end of turn derived
    from the template and an explicit --stop-token agree (7 tokens: both answers + <|end|>)."""
    lm = build_tiny_lm(tmp_path / "lm", family="phi3")
    data = write(
        tmp_path / "d.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Say sea"},
                    {"role": "assistant", "content": "sea sea"},
                    {"role": "user", "content": "Say sky"},
                    {"role": "assistant", "content": "sky"},
                ]
            }
        ],
    )
    base = ["eval", "loss", "--model", str(lm), "--data", str(data)]
    assert main([*base, "--output-dir", str(tmp_path / "a")]) == 0
    assert main([*base, "--output-dir", str(tmp_path / "b"), "--stop-token", "<|end|>"]) == 0
    derived = json.loads((tmp_path / "a" / "heldout_loss.json").read_text())
    explicit = json.loads((tmp_path / "b" / "heldout_loss.json").read_text())
    assert derived["end_of_turn"] == explicit["end_of_turn"] == "<|end|>"
    assert derived["supervised_tokens"] == explicit["supervised_tokens"]
    assert derived["loss"] == pytest.approx(explicit["loss"])
