"""Generation-time filters: Self-Instruct's instruction filters and Evol-Instruct's elimination.

Each check returns `None` to keep the text or a `Drop` naming the rule and its evidence.
Thresholds and word lists are config values (`SelfInstructConfig`, `EvolConfig`).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from distillery.records import Drop
from distillery.textsim import RejectIf, RougePool, rouge_tokens

_WORD = re.compile(r"[A-Za-z0-9']+")


def _mentions(text: str, term: str) -> bool:
    """Whole-word (or whole-phrase) match, case-insensitive."""
    return re.search(rf"\b{re.escape(term)}\b", text, re.I) is not None


def length_drop(text: str, min_words: int, max_words: int) -> Drop | None:
    """Too few or too many words."""
    words = len(text.split())
    if words < min_words:
        return Drop(
            rule="too_short", reason=f"{words} words < {min_words}", evidence={"words": words}
        )
    if words > max_words:
        return Drop(
            rule="too_long", reason=f"{words} words > {max_words}", evidence={"words": words}
        )
    return None


def instruction_drop(
    text: str,
    *,
    min_words: int,
    max_words: int,
    blocklist: list[str],
    finish_reason: str | None = None,
) -> Drop | None:
    """Self-Instruct's heuristic filters, in the paper's order (pool similarity is separate)."""
    if finish_reason == "length":
        return Drop(
            rule="cut_off", reason="the teacher's output was cut off (finish_reason=length)"
        )
    too = length_drop(text, min_words, max_words)
    if too is not None:
        return too
    for term in blocklist:
        if _mentions(text, term):
            return Drop(rule="modality", reason=f"mentions {term!r}", evidence={"term": term})
    first = text[0]
    if first in string.punctuation:
        return Drop(rule="starts_with_punctuation", reason=f"starts with {first!r}")
    if not first.isascii():
        return Drop(rule="starts_non_ascii", reason=f"starts with {first!r}")
    return None


@dataclass
class InstructionPool:
    """Instructions accepted so far, with Self-Instruct's novelty rule: a new instruction whose
    ROUGE-L F1 (rouge-score's arithmetic) against any member is `> threshold` is rejected
    (`reject_if=">="` rejects ties too). Indexed: see `RougePool`; decisions equal scoring
    against every member."""

    threshold: float
    reject_if: RejectIf = ">"
    texts: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    index: RougePool = field(init=False)

    def __post_init__(self) -> None:
        self.index = RougePool(self.threshold, self.reject_if)

    def add(self, item_id: str, text: str) -> None:
        self.texts.append(text)
        self.ids.append(item_id)
        self.index.add(rouge_tokens(text))

    def too_similar(self, text: str) -> Drop | None:
        score, i = self.index.best_match(rouge_tokens(text))
        if i < 0:
            return None
        return Drop(
            rule="rouge_l",
            reason=f"ROUGE-L {score:.3f} {self.reject_if} {self.threshold} against the pool",
            evidence={
                "most_similar_id": self.ids[i],
                "most_similar": self.texts[i],
                "rouge_l": round(score, 4),
            },
        )

    def __len__(self) -> int:
        return len(self.texts)


# ---- Evol-Instruct elimination (Xu et al., 2023, section 3.3) --------------------------


def is_sorry_answer(response: str, max_words: int) -> bool:
    """Rule 2: the teacher struggles - 'sorry' in a short answer."""
    return "sorry" in response.lower() and len(response.split()) < max_words


def only_punctuation_and_stop_words(response: str, stop_words: set[str]) -> bool:
    """Rule 3: nothing but punctuation and stop words."""
    words = [w.lower() for w in _WORD.findall(response)]
    return all(w in stop_words for w in words)


def leaked_scaffold(prompt: str, phrases: list[str]) -> str | None:
    """Rule 4: the evolved prompt copies words from the rewriting prompt."""
    low = prompt.lower()
    for phrase in phrases:
        if phrase.lower() in low:
            return phrase
    return None


# ---- Magpie's curation (Xu et al., 2024, section 4) -------------------------------------


def repetition_share(text: str, n: int = 3) -> float:
    """The share of the text's word n-grams that repeat an earlier one (0 for short texts):
    high for a model stuck in a loop."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return round(1 - len(set(grams)) / len(grams), 4)


def language_of(text: str) -> str | None:
    """langdetect's language code for `text`, seeded (the same text always gets the same
    code); None when it finds nothing to go on."""
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    try:
        return str(detect(text))
    except LangDetectException:
        return None


def magpie_drop(
    text: str,
    *,
    min_words: int,
    max_words: int,
    max_repetition: float,
    language: str | None,
) -> Drop | None:
    """Magpie's filters for a drawn instruction (or user turn): length, repetition, language."""
    too = length_drop(text, min_words, max_words)
    if too is not None:
        return too
    share = repetition_share(text)
    if share > max_repetition:
        return Drop(
            rule="repetitive",
            reason=f"{share:.0%} of its word 3-grams repeat (> {max_repetition:.0%})",
            evidence={"repeated_3gram_share": share},
        )
    if language is not None:
        found = language_of(text)
        if found != language:
            return Drop(
                rule="language",
                reason=f"language {found or 'unknown'}, not {language}",
                evidence={"detected": found},
            )
    return None
