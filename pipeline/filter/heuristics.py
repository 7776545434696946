"""Rule-based filters. `check` returns the first rule a row breaks (as a `Drop` with evidence)
or None. Rules, in order: empty, too_short/too_long (instruction, response), cut_off,
refusal (boilerplate such as "as an AI language model"), leaked_scaffold, wrong_language,
repetition.

A multi-turn row is checked turn by turn (each user turn as the instruction, its answer as
the response): the first turn that breaks a rule drops the whole conversation, and the drop
names it (`evidence.turn`, 1 = the first user turn; the reason starts "turn N: ")."""

from __future__ import annotations

import re
from collections import Counter
from functools import cached_property

from distillery.filter.config import HeuristicsConfig
from distillery.filter.rows import turns
from distillery.records import Drop, Record

_WORDS = re.compile(r"\w+", re.UNICODE)


class Heuristics:
    def __init__(self, config: HeuristicsConfig) -> None:
        self.config = config

    @cached_property
    def refusal(self) -> list[re.Pattern[str]]:
        return [re.compile(p, re.I) for p in self.config.refusal_patterns]

    @cached_property
    def scaffold(self) -> list[re.Pattern[str]]:
        return [re.compile(p, re.I | re.M) for p in self.config.scaffold_patterns]

    def check(self, row: Record) -> Drop | None:
        pairs = turns(row)
        if len(pairs) == 1:  # a single-turn row: its trace's last call made the response
            cut = any(call.finish_reason == "length" for call in row.trace[-1:])
            return self._check_turn(row, pairs[0][0], row.response or "", cut)
        for k, (user, response) in enumerate(pairs, 1):
            drop = self._check_turn(row, user, response, _cut_off(row, user, response))
            if drop:
                reason = f"turn {k}: {drop.reason}"
                return Drop(rule=drop.rule, reason=reason, evidence={"turn": k, **drop.evidence})
        return None

    def _check_turn(self, row: Record, user: str, response: str, cut: bool) -> Drop | None:
        """The rules on one (user turn, answer); `cut`: a call writing them hit max_tokens."""
        c = self.config
        if not response.strip() or not user.strip():
            return Drop(rule="empty", reason="empty instruction or response")
        for what, text, low, high in (
            ("instruction", user, c.min_instruction_tokens, c.max_instruction_tokens),
            ("response", response, c.min_response_tokens, c.max_response_tokens),
        ):
            n = len(text.split())
            if n < low:
                return Drop(
                    rule=f"{what}_too_short", reason=f"{n} tokens < {low}", evidence={"tokens": n}
                )
            if n > high:
                return Drop(
                    rule=f"{what}_too_long", reason=f"{n} tokens > {high}", evidence={"tokens": n}
                )
        if c.drop_cut_off and cut:
            return Drop(rule="cut_off", reason="the response was cut off (finish_reason=length)")
        if row.category not in c.keep_refusal_categories:
            for pattern in self.refusal:
                match = pattern.search(response)
                if match:
                    return Drop(
                        rule="refusal",
                        reason="refusal or AI boilerplate",
                        evidence={"pattern": pattern.pattern, "match": match.group(0)},
                    )
        for pattern in self.scaffold:
            for text in (user, response):
                match = pattern.search(text)
                if match:
                    return Drop(
                        rule="leaked_scaffold",
                        reason="prompt scaffolding in the row",
                        evidence={"pattern": pattern.pattern, "match": match.group(0)},
                    )
        if c.language:
            drop = self._language(response)
            if drop:
                return drop
        return self._repetition(response)

    def _language(self, text: str) -> Drop | None:
        import langid

        if len(_WORDS.findall(text)) < 5:
            return None  # too little text to tell
        lang, confidence = _langid_classify(langid, text)
        if lang != self.config.language and confidence >= self.config.min_language_confidence:
            return Drop(
                rule="wrong_language",
                reason=f"looks like {lang!r}, expected {self.config.language!r}",
                evidence={"language": lang, "confidence": round(confidence, 3)},
            )
        return None

    def _repetition(self, text: str) -> Drop | None:
        words = [w.lower() for w in _WORDS.findall(text)]
        grams = list(zip(words, words[1:], words[2:], strict=False))
        if len(grams) < 10:
            return None
        counts = Counter(grams)
        repeated = sum(n - 1 for n in counts.values() if n > 1)
        fraction = repeated / len(grams)
        if fraction > self.config.max_repeated_ngram_fraction:
            top = " ".join(counts.most_common(1)[0][0])
            return Drop(
                rule="repetition",
                reason=f"{fraction:.0%} of word 3-grams are repeats",
                evidence={"fraction": round(fraction, 3), "most_repeated": top},
            )
        return None


def _cut_off(row: Record, user: str, response: str) -> bool:
    """Whether a call of the row's trace that stopped at max_tokens wrote this turn: its raw
    text is the turn's answer, or holds the turn's user text (a simulated user's reply)."""
    for call in row.trace:
        raw = (call.response or "").strip()
        if call.finish_reason != "length" or not raw:
            continue
        if raw == response.strip() or (user.strip() and user.strip() in raw):
            return True
    return False


_IDENTIFIER = None


def _langid_classify(langid: object, text: str) -> tuple[str, float]:
    """langid with normalised probabilities (deterministic: langid has no randomness)."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from langid.langid import LanguageIdentifier, model

        _IDENTIFIER = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    lang, prob = _IDENTIFIER.classify(text)
    return str(lang), float(prob)
