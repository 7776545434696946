"""Judge verdicts: the score of a pointwise judge (1-10) and the winner of a pairwise one.

The judge prompts (`judge_quality`, `judge_pairwise`) ask for one JSON object with an
explanation first and then `score` (or `winner`). A verdict is read for everything it states
as its decision, not just for the field the prompt asked for:
- every score-like JSON field: `score`, per-aspect scores (`correctness`, `scores: {...}`),
  an `overall` one, a key given twice, a second JSON object;
- statements in the explanation: "Score: 8", "I'd give it 8/10", "winner: B";
- prose outside the JSON, or a verdict with no JSON: also "8/10" and "4 out of 5", and any
  bare number after the first score ("Score: 8/10 ... honestly 3").
One value, stated once or repeated, is the verdict. Two different values are a
`parse_error`: the judge contradicted itself, and neither the first nor the last number is
trusted. Scores on another scale ("4/5", "4 out of 5", "80/100") are scaled to 10.
A refusal is what the verdict does: it states no score and declines (or sets the score to
null / "N/A"). A phrase such as "I cannot rate this higher than a 9" next to "Score: 9" is a
score of 9, never a refusal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from distillery.parsing import ParseFailure

__all__ = ["ParseFailure", "Verdict", "parse_verdict", "parse_winner"]

_NUM = r"(\d+(?:\.\d+)?)"
_OF = r"(?:\s*(?:/|out\s+of)\s*" + _NUM + r")?"
# "Score: 8", "final score of 8/10", "rating = 4 out of 5", "I'd give it a 7", "rate this 8"
_LABELLED = re.compile(
    r"(?:\b(?:score|rating|grade)\b(?:\s+(?:is|of|would\s+be|=))?(?:[\s:=*#'\"\[]|-(?!\d))*"
    r"(?:an?\s+)?"
    r"|\b(?:give|rate|score|grade)\s+(?:it|this(?:\s+(?:pair|response|one))?)\s+(?:an?\s+)?)"
    + _NUM
    + _OF,
    re.I,
)
# "8/10", "4 out of 5", "80/100": a score on a common scale, stated without a label
_FRACTION = re.compile(
    r"(?<![\w./])" + _NUM + r"\s*(?:/|out\s+of)\s*(5|10|100)(?![\w/]|\.\d)", re.I
)
_BARE = re.compile(r"(?<![\w.$/#-])(\d+(?:\.\d+)?)(?![\w/%-]|\.\d)")
_ENUMERATOR = re.compile(r"^\s*\d+[.)]\s", re.M)
_RANGE = re.compile(r"\b\d+\s*(?:-|–|to)\s*\d+\b")  # "on a 1-10 scale", "from 1 to 10"
_DECLINE = re.compile(
    r"\b(?:i\s+(?:can(?:no|')t|am\s+(?:unable|not\s+able)|won't|will\s+not|must\s+decline|"
    r"decline|refuse)|i'm\s+(?:unable|not\s+able|sorry)|unable\s+to\s+(?:evaluate|rate|score|"
    r"judge|assess))",
    re.I,
)
_NO_SCORE = {"", "n/a", "na", "none", "null", "-"}
_ASPECTS = {
    "instruction", "clarity", "correctness", "accuracy", "helpfulness", "completeness",
    "constraints", "harmlessness", "safety", "relevance", "quality", "coherence", "style",
}  # fmt: skip
_SCORE_KEY = re.compile(r"(?:^|_)(?:score|scores|rating|ratings|grade|grades|overall)(?:_|$)")
_SCALE_KEY = re.compile(r"(?:^|_)(?:max|min|maximum|minimum|scale|range|out_of)(?:_|$)")
_WINNER_KEY = re.compile(r"^(?:winner|better|verdict|final_verdict|preferred|preference|choice)$")
# "winner: B", "The winner is Response A", "Final verdict: [[A]]" (MT-Bench; [[C]] is a tie)
_WINNER_STATED = re.compile(
    r"\[\[\s*(A|B|C|tie)\s*\]\]"
    r"|\b(?:winner|verdict)\b(?:\s+is)?(?:[\s:=*'\"\[]|-(?!\d))*(?:response\s+|assistant\s+)?"
    r"((?-i:A|B)|tie)\b",
    re.I,
)

# a reply that is nothing but the decision: "8", "**7**", "[[B]]", "Tie."
_MARKS = r"[\s*#\[\]().:'\"]*"
_LONE_SCORE = re.compile(_MARKS + r"(\d+(?:\.\d+)?)" + _MARKS)
_LONE_WINNER = re.compile(_MARKS + r"(?:response\s+)?(A|B|tie)" + _MARKS, re.I)


@dataclass
class Verdict:
    status: str  # ok | parse_error | refusal | failed (the call itself failed: `judging`)
    score: float | None = None
    explanation: str = ""
    error: str = ""


@dataclass
class _Stated:
    """The scores a verdict states, with their positions, and whether it declined to score."""

    values: list[tuple[int, float]]
    declined: bool = False


# ---- reading JSON objects out of free text ------------------------------------------------


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers keys given twice with different values."""

    duplicates: list[str]


def _object_hook(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and obj[key] != value:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _json_objects(text: str) -> list[tuple[int, int, _Object]]:
    """(start, end, object) of every top-level JSON object in `text` (fences, prose around)."""
    decoder = json.JSONDecoder(object_pairs_hook=_object_hook)
    found, pos = [], 0
    while (start := text.find("{", pos)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(value, _Object):
            found.append((start, end, value))
        pos = end
    return found


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted path, key, value) of every member of nested objects and lists."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{path}{key}", str(key), value
            yield from _walk(value, f"{path}{key}.")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{path}{i}.")


def _duplicate(obj: _Object) -> str:
    for _, _, value in _walk({"": obj}):
        if isinstance(value, _Object) and value.duplicates:
            return f"key {value.duplicates[0]!r} is given twice with different values"
    return ""


# ---- scores ------------------------------------------------------------------------------


def _scaled(value: str, scale: str | None) -> float:
    number = float(value)
    return number * 10.0 / float(scale) if scale and float(scale) > 0 else number


def _score_value(value: object) -> float | None:
    """The JSON `score` field as a number on the 10 scale; None when it says 'no score'."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ParseFailure("score is a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        if value.strip().lower() in _NO_SCORE:
            return None
        match = re.fullmatch(r"\s*" + _NUM + _OF + r"\s*", value, re.I)
        if match:
            return _scaled(match.group(1), match.group(2))
        raise ParseFailure(f"score {value!r} is not a number")
    raise ParseFailure(f"score has type {type(value).__name__}")


def _lenient(value: object) -> float | None:
    """Another score-like field: a number, or text that is one; other text is not a score."""
    try:
        return _score_value(value)
    except ParseFailure:
        return None


def _prose_scores(text: str, offset: int, labelled_only: bool) -> list[tuple[int, float]]:
    """Scores stated in prose, with their positions. In a JSON string (`labelled_only`) only
    labelled ones on the 0-10 scale ("a score of 85" there is content, not the verdict)."""
    found = [
        (offset + m.start(), _scaled(m.group(1), m.group(2))) for m in _LABELLED.finditer(text)
    ]
    if labelled_only:
        return [(pos, v) for pos, v in found if 0 <= v <= 10]
    spans = [range(m.start(), m.end()) for m in _LABELLED.finditer(text)]
    for m in _FRACTION.finditer(text):
        if not any(m.start() in span for span in spans):
            found.append((offset + m.start(), _scaled(m.group(1), m.group(2))))
    return found


def _json_scores(start: int, obj: _Object, stated: _Stated) -> None:
    """Add the object's `score`, its other score-like fields (per-aspect, overall, nested
    `scores`) and the labelled scores in its strings (the explanation)."""
    for path, key, value in _walk(obj):
        if isinstance(value, (dict, list)):
            continue
        lowered = key.lower()
        if _SCALE_KEY.search(lowered):  # "max_score": 10 describes the scale
            continue
        inside = any(_SCORE_KEY.search(part.lower()) for part in path.split(".")[:-1])
        number = None
        if path.lower() == "score":  # the field the prompt asks for: a number or "no score"
            number = _score_value(value)
            stated.declined |= number is None
        elif _SCORE_KEY.search(lowered) or inside or lowered in _ASPECTS:
            number = _lenient(value)
        if number is not None:
            stated.values.append((start, number))
        elif isinstance(value, str):
            stated.values.extend((start, v) for _, v in _prose_scores(value, 0, True))


def _outside(text: str, spans: list[tuple[int, int]]) -> Iterator[tuple[int, str]]:
    """(offset, piece) of the prose between JSON objects."""
    pos = 0
    for start, end in spans:
        yield pos, text[pos:start]
        pos = end
    yield pos, text[pos:]


def _later_numbers(text: str, spans: list[tuple[int, int]], after: int) -> list[float]:
    """Bare numbers on the 0-10 scale in prose after position `after` (not list enumerators
    and not part of a stated score): a correction such as "... honestly 3"."""
    numbers = []
    for offset, piece in _outside(text, spans):
        taken = [range(m.start(), m.end()) for m in _LABELLED.finditer(piece)]
        taken += [range(m.start(), m.end()) for m in _FRACTION.finditer(piece)]
        taken += [range(m.start(), m.end()) for m in _ENUMERATOR.finditer(piece)]
        taken += [range(m.start(), m.end()) for m in _RANGE.finditer(piece)]
        for m in _BARE.finditer(piece):
            late = offset + m.start() > after and not any(m.start() in r for r in taken)
            if late and 0 <= float(m.group(1)) <= 10:
                numbers.append(float(m.group(1)))
    return numbers


def _distinct(values: list[float]) -> list[float]:
    out: list[float] = []
    for v in values:
        if all(abs(v - u) > 1e-9 for u in out):
            out.append(v)
    return out


def _verdict_objects(
    text: str, fields: tuple[str, ...]
) -> tuple[list[tuple[int, _Object]], list[tuple[int, int]]]:
    """The JSON objects that are verdicts (they have one of `fields`, or an explanation), and
    the spans of every JSON object, quoted content included (its numbers are not the judge's)."""
    objects = _json_objects(text)
    verdicts = [
        (start, obj)
        for start, _, obj in objects
        if any(str(k).lower() in (*fields, "explanation") for k in obj)
    ]
    return verdicts, [(s, e) for s, e, _ in objects]


def parse_verdict(text: str) -> Verdict:
    """A `judge_quality` verdict: `ok` with one score in 1-10, `refusal`, or `parse_error`."""
    if not text.strip():
        return Verdict("parse_error", error="empty verdict")
    objects, spans = _verdict_objects(text, ("score",))
    stated = _Stated(values=[])
    explanation = text.strip()[:500]
    try:
        for start, obj in objects:
            if duplicate := _duplicate(obj):
                return Verdict("parse_error", error=duplicate)
            _json_scores(start, obj, stated)
            if isinstance(obj.get("explanation"), str):
                explanation = obj["explanation"]
    except ParseFailure as exc:
        return Verdict("parse_error", error=str(exc))
    has_score_field = any(str(k).lower() == "score" for _, obj in objects for k in obj)
    for offset, piece in _outside(text, spans):
        stated.values.extend(_prose_scores(piece, offset, False))
    if lone := _LONE_SCORE.fullmatch(text):
        stated.values.append((lone.start(1), float(lone.group(1))))
    values = _distinct([v for _, v in stated.values])
    if not values:
        if stated.declined or _DECLINE.search(text):
            return Verdict("refusal", error="the judge declined to score")
        if objects:
            return Verdict("parse_error", error="JSON without a 'score' field")
        return Verdict("parse_error", error="no JSON and no score in the verdict")
    if objects and not has_score_field:
        return Verdict("parse_error", error="JSON without a 'score' field")
    first = min(pos for pos, _ in stated.values)
    later = [n for n in _later_numbers(text, spans, first) if abs(n - values[0]) > 1e-9]
    if len(values) > 1 or later:
        shown = ", ".join(f"{v:g}" for v in _distinct([*values, *later]))
        return Verdict("parse_error", error=f"the verdict states different scores: {shown}")
    score = values[0]
    if not 1.0 <= score <= 10.0:
        return Verdict("parse_error", error=f"score {score:g} outside 1-10")
    return Verdict("ok", score=score, explanation=explanation)


# ---- pairwise winners --------------------------------------------------------------------


def _winner_value(value: object) -> str:
    word = re.sub(r"[\s\[\]*'\".()]+", " ", str(value)).strip().lower()
    word = re.sub(r"^(?:response|assistant|output)\s+", "", word)
    normal = {"a": "A", "b": "B", "tie": "tie", "draw": "tie", "c": "tie"}.get(word)
    if normal is None:
        raise ParseFailure(f"winner {str(value)[:40]!r} is not A, B or tie")
    return normal


def _prose_winners(text: str) -> list[str]:
    return [_winner_value(next(g for g in m.groups() if g)) for m in _WINNER_STATED.finditer(text)]


def _json_winners(obj: _Object) -> list[str]:
    """The `winner` field, other winner-like fields, and winners stated in its strings."""
    winners = []
    for path, key, value in _walk(obj):
        if isinstance(value, (dict, list)):
            continue
        if path.lower() == "winner":
            winners.append(_winner_value(value))
            continue
        if _WINNER_KEY.match(key.lower()):
            try:
                winners.append(_winner_value(value))
                continue
            except ParseFailure:
                pass  # a sentence ("verdict": "B is better because ..."): read it as prose
        if isinstance(value, str):
            winners.extend(_prose_winners(value))
    return winners


def parse_winner(text: str) -> str:
    """A `judge_pairwise` verdict: "A", "B" or "tie"; `ParseFailure` when the verdict names
    none, or two different winners (in fields, duplicate keys, objects or its prose)."""
    objects, spans = _verdict_objects(text, ("winner",))
    winners: list[str] = []
    for _, obj in objects:
        if duplicate := _duplicate(obj):
            raise ParseFailure(duplicate)
        winners.extend(_json_winners(obj))
    has_field = any(str(k).lower() == "winner" for _, obj in objects for k in obj)
    for _, piece in _outside(text, spans):
        winners.extend(_prose_winners(piece))
    if lone := _LONE_WINNER.fullmatch(text):
        winners.append(_winner_value(lone.group(1)))
    named = sorted(set(winners))
    if objects and not has_field:
        raise ParseFailure("JSON without a 'winner' field")
    if not named:
        raise ParseFailure("the verdict names no winner")
    if len(named) > 1:
        raise ParseFailure(f"the verdict names different winners: {', '.join(named)}")
    return named[0]
