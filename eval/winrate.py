"""Judge win rate: the student against a baseline, judged pairwise by a teacher.

Every pair is judged twice (`distillery.judging.judge_pairs`), once with the student as A and
once as B. The two verdicts are
mapped to the student's view; when they disagree the pair is a tie (position bias must not
decide it), and the share of such pairs is the flip rate. A verdict that cannot be parsed is
a recorded failure, never a default; pairs with a failed verdict are excluded and counted.
A verdict naming two different winners is such a failure (`distillery.verdicts`).
The length-controlled win rate fits E[score] = sigmoid(b0 + b1 * d), d being the normalised
length difference and the score 1 for a student win, 1/2 for a tie and 0 for a loss (the
win rate's own scale), on every judged pair, and reports sigmoid(b0): the win rate the
student would have at equal length (in the spirit of AlpacaEval's length control). With no
length effect (b1 = 0) it equals the win rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from distillery import stats
from distillery.errors import UserError
from distillery.jsonl import iter_json_lines
from distillery.judging import PairResult, judge_pairs
from distillery.prompts import render
from distillery.verdicts import parse_winner

__all__ = ["PairResult", "judge_pairs", "length_controlled", "parse_winner", "summarise"]


def load_instructions(path: str | Path, field: str = "instruction") -> list[tuple[str, str]]:
    """(id, user turn) pairs; the instruction plus the first instance's input when there is one."""
    out = []
    for lineno, obj in iter_json_lines(path):
        text = obj.get(field)
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{path}:{lineno}: no {field!r} text")
        instances = obj.get("instances") or []
        inp = (
            instances[0].get("input", "")
            if instances and isinstance(instances[0], dict)
            else obj.get("input", "")
        )
        user = render("user_turn", instruction=text, input=inp or "").text
        out.append((str(obj.get("id", lineno)), user))
    if not out:
        raise UserError(f"{path}: no instructions")
    return out


def load_responses(path: str | Path) -> dict[str, str]:
    """id -> response text, from `complete`-style output (`id`, `response`)."""
    out = {}
    for lineno, obj in iter_json_lines(path):
        if "id" not in obj or not isinstance(obj.get("response"), str):
            raise UserError(f"{path}:{lineno}: expected 'id' and a string 'response'")
        out[str(obj["id"])] = obj["response"]
    return out


_SCORE = {"student": 1.0, "tie": 0.5, "baseline": 0.0}


def length_controlled(results: list[PairResult]) -> float | None:
    """sigmoid(b0) of a logistic fit of the student's score (win 1, tie 1/2, loss 0) on the
    normalised length difference, over the judged pairs; None for fewer than 5 of them.

    A tie is half a win and half a loss in the likelihood (a fractional target), as it is in
    the win rate. The slope has a small ridge so that a perfect length split stays finite."""
    judged = [r for r in results if r.outcome is not None]
    if len(judged) < 5:
        return None
    y = np.array([_SCORE[str(r.outcome)] for r in judged])
    if np.all(y == y[0]):  # no contrast to fit: the rate is the same at every length
        return float(y[0])
    d = np.array(
        [(r.student_len - r.baseline_len) / max(1, r.student_len + r.baseline_len) for r in judged]
    )
    x = np.stack([np.ones_like(d), d], axis=1)
    ridge = np.diag([0.0, 1e-3])  # the intercept is not shrunk: b1 = 0 gives the win rate
    w = np.zeros(2)
    for _ in range(100):  # Newton's method
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (y - p) - ridge @ w
        hess = -(x.T * (p * (1 - p))) @ x - ridge
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(1 / (1 + math.exp(-w[0])))


def summarise(results: list[PairResult], judge_spec: str) -> dict[str, Any]:
    judged = [r for r in results if r.outcome is not None]
    n = len(judged)
    wins = sum(r.outcome == "student" for r in judged)
    losses = sum(r.outcome == "baseline" for r in judged)
    ties = n - wins - losses
    failed = len(results) - n
    flips = sum(r.flipped for r in judged)
    return {
        "judge": judge_spec,
        "pairs": len(results),
        "judged": n,
        "student_wins": wins,
        "baseline_wins": losses,
        "ties": ties,
        "win_rate": (wins + 0.5 * ties) / n if n else None,
        "flip_rate": flips / n if n else None,
        "parse_failure_rate": failed / len(results) if results else None,
        "length_controlled_win_rate": length_controlled(results),
        "mean_length_words": {
            "student": float(np.mean([r.student_len for r in results])) if results else None,
            "baseline": float(np.mean([r.baseline_len for r in results])) if results else None,
        },
        # n and 95% intervals: the win rate over the judged pairs (a tie is half a win),
        # flips over the judged pairs, parse failures over every pair
        "intervals": {
            "win_rate": stats.win_rate(wins, ties, losses).as_dict(),
            "flip_rate": stats.proportion(flips, n).as_dict(),
            "parse_failure_rate": stats.proportion(failed, len(results)).as_dict(),
        },
    }
