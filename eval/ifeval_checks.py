"""IFEval's verifiable-instruction checks and the text measures they rest on.

Every `check_*` function takes the response and the instruction's keyword arguments (already
validated by `eval.ifeval`) and says whether the response follows the instruction, with the
semantics of google-research's `instruction_following_eval` (Zhou et al., 2023). Where that
code calls NLTK or langdetect, this module measures the same thing without run-time data:

- words: runs of `\\w` characters, exactly what `RegexpTokenizer(r"\\w+")` counts;
- sentences: the Punkt algorithm (Kiss & Strunk, 2006) with the English model's
  abbreviations, collocations and frequent sentence starters built in. The model's
  orthographic table (how each of 20k words was capitalised in its training text) is not:
  `_orthographic_evidence` replaces it with a rule, so a count can differ where a period
  after an initial, abbreviation or ellipsis is followed by a capitalised word;
- words in capitals: NLTK's word tokenizer rules, applied sentence by sentence;
- language: langdetect, imported on first use and seeded, so verdicts are reproducible.

docs/ifeval.md lists where and why verdicts can differ from the reference.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
import re
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from distillery.errors import UserError

RELATIONS: dict[str, Callable[[int, int], bool]] = {
    "less than": operator.lt,
    "at least": operator.ge,
}

# --- words ----------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


# --- sentences: Punkt with the English model's lists ---------------------------------------
# The three lists are parameters of NLTK's English Punkt model (nltk_data punkt_tab/english:
# abbrev_types.txt, sent_starters.txt, collocations.tab), written out so nothing is fetched.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ABBREVIATIONS = _words(
    """
    a.a a.c a.d a.g a.h a.m a.m.e a.s a.t adm ala ariz aug ave b.f b.v bros c c.i.t c.o.m.b
    c.v calif chg cie co col colo conn corp cos ct d d.c d.h d.w dec dr e e.f e.h e.l e.m f
    f.g f.j feb fla fri ft g g.d g.f g.k ga gen h h.c h.f h.m i.m.s ill inc j.b j.c j.j j.k
    j.p j.r jan jr k kan ky l l.a l.f l.p lt ltd m m.b.a m.d.c m.j maj messrs mg mich minn
    mr mrs ms n n.c n.d n.h n.j n.m n.v n.y nev nov oct ok okla ore p p.a.m p.m pa ph.d prof
    r r.a r.h r.i r.j r.k r.t rep reps s s.a s.a.y s.c s.g s.p.a s.s sen sep sept sr st sw
    t t.j tenn tues u.k u.n u.s u.s.a u.s.s.r v va vs vt w w.c w.r w.va w.w wash wed wis yr
    """
) | {". . "}  # the spaced ellipsis ". . ." without its last period

_SENTENCE_STARTERS = _words(
    """
    according although among both but despite even he however i if in indeed instead it many
    meanwhile moreover most nevertheless nonetheless nor sales separately similarly since so
    some the there these they this though thus under when while yet
    """
)

_NUMBER = "##number##"  # Punkt's type for any number
_COLLOCATIONS = frozenset(
    (_NUMBER, word)
    for word in _words(
        """
        abreast aes business cbot colgate commodities cooper corrections credit dividend
        financing genentech henley insider international leisure letters notable pay-fone
        pegasus pepper review rj wedgestone who zimmer
        """
    )
) | frozenset(
    (pair[0], pair[2:])
    for pair in _words(
        """
        b_edelman b_levine b_smith b_stewart b_wigton i_magnin i_toussie j_aron j_fialka
        j_walter o_ludcke
        """
    )
)

# Punkt's word tokens: characters that end a word (besides whitespace), characters that
# cannot start one, and multi-character punctuation.
_NON_WORD = r"[)\";}\]*:@'({\[\u2018\u2019\u201c\u201d\xab\xbb?!]"
_NOT_WORD_START = r"""[("`{\[:;&#*@)}\]\-,]"""
_MULTI_PUNCT = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_END = rf"\s|$|{_NON_WORD}|{_MULTI_PUNCT}|,(?=$|\s|{_NON_WORD}|{_MULTI_PUNCT})"
_PUNKT_WORD = re.compile(rf"{_MULTI_PUNCT}|(?!{_NOT_WORD_START})\S+?(?={_WORD_END})|\S")
# A candidate boundary: . ? or ! followed by other punctuation or by whitespace and a token.
_CANDIDATE = re.compile(rf"[.?!](?=(?P<after>{_NON_WORD}|\s+(?P<next>\S+)))")
# Closing punctuation that belongs to the sentence before it.
_REALIGN = re.compile(r"""["')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)""", re.M)
_NUMERIC = re.compile(r"^-?[.,]?\d[\d,.-]*\.?$")
_INITIAL = re.compile(r"[^\W\d]\.$")
_ELLIPSIS = re.compile(r"\.\.+$")
_NOT_A_START = (";", ":", ",", ".", "!", "?")


@dataclass
class _Token:
    text: str
    sentbreak: bool = False
    abbr: bool = False
    ellipsis: bool = False

    @property
    def kind(self) -> str:
        """Lowercased, with any number collapsed to one type (Punkt's "type")."""
        return _NUMERIC.sub(_NUMBER, self.text.lower())

    @property
    def kind_no_period(self) -> str:
        kind = self.kind
        return kind[:-1] if len(kind) > 1 and kind.endswith(".") else kind

    @property
    def kind_no_sentperiod(self) -> str:
        return self.kind_no_period if self.sentbreak else self.kind


def _punkt_tokens(text: str) -> list[_Token]:
    return [
        _Token(word)
        for line in text.split("\n")
        if line.strip()
        for word in _PUNKT_WORD.findall(line)
    ]


def _classify_by_type(tok: _Token) -> None:
    """First pass: sentence-final punctuation, ellipses, known abbreviations."""
    text = tok.text
    if text in (".", "?", "!"):
        tok.sentbreak = True
    elif _ELLIPSIS.match(text):
        tok.ellipsis = True
    elif text.endswith(".") and not text.endswith(".."):
        stem = text[:-1].lower()
        if stem in _ABBREVIATIONS or stem.split("-")[-1] in _ABBREVIATIONS:
            tok.abbr = True
        else:
            tok.sentbreak = True


def _orthographic_evidence(tok: _Token) -> bool | None:
    """Does `tok` start a sentence? True, False, or None for no evidence.

    Punkt answers from its table of how each word was capitalised in its training text: True
    for a capitalised word seen in lower case but never capitalised mid-sentence, False for a
    lower-case word seen capitalised or never seen in lower case at a sentence start. Without
    the table, a capitalised word gives no evidence (the frequent-sentence-starter rule still
    applies) and a lower-case word or a punctuation mark is evidence against.
    """
    if tok.text in _NOT_A_START or tok.text[0].islower():
        return False
    return None


def _seen_in_lower_case(kind: str) -> bool:
    """Stand-in for "the table has this word in lower case": any word but an initial ("e.")."""
    return not (len(kind) == 2 and kind.endswith("."))


def _classify_in_context(tok: _Token, following: _Token) -> None:
    """Second pass: decide a period-final token from the token after it."""
    if not tok.text.endswith("."):
        return
    kind = tok.kind_no_period
    next_kind = following.kind_no_sentperiod
    initial = _INITIAL.match(tok.text) is not None
    if (kind, next_kind) in _COLLOCATIONS:
        tok.sentbreak, tok.abbr = False, True
        return
    capitalised = following.text[0].isupper()
    if (
        (tok.abbr or tok.ellipsis)
        and not initial
        and (
            _orthographic_evidence(following) is True
            or (capitalised and next_kind in _SENTENCE_STARTERS)
        )
    ):
        tok.sentbreak = True
        return
    if initial or kind == _NUMBER:
        evidence = _orthographic_evidence(following)
        if evidence is False or (
            evidence is None and initial and capitalised and not _seen_in_lower_case(next_kind)
        ):
            # Not a boundary: "3. the", or an initial inside a name ("J. E. Smith").
            tok.sentbreak, tok.abbr = False, True


def _context_has_break(context: str) -> bool:
    """Is there a sentence break before the last token of `context`?"""
    tokens = _punkt_tokens(context)
    for tok in tokens:
        _classify_by_type(tok)
    for tok, following in itertools.pairwise(tokens):
        _classify_in_context(tok, following)
    return any(tok.sentbreak for tok in tokens[:-1])


def _last_whitespace(text: str) -> int:
    """Index of the last ASCII whitespace character in `text`; 0 when there is none."""
    return max(0, *(text.rfind(ch) for ch in string.whitespace))


def _candidates(text: str) -> Iterator[tuple[re.Match[str], str]]:
    """Candidate boundaries, each with its context: the word before, the mark, what follows.

    Of marks with no whitespace between them ("wait!!!"), only the last is a candidate.
    """
    previous: re.Match[str] | None = None
    previous_word_start = 0
    for match in _CANDIDATE.finditer(text):
        segment_start = previous.start() if previous else 0
        space = _last_whitespace(text[segment_start : match.start()])
        word_start = segment_start + space + 1 if space else previous_word_start
        if previous is not None and previous.start() <= word_start:
            yield previous, _context(text, previous_word_start, previous)
        previous, previous_word_start = match, word_start
    if previous is not None:
        yield previous, _context(text, previous_word_start, previous)


def _context(text: str, word_start: int, match: re.Match[str]) -> str:
    return text[word_start : match.start()] + match.group() + match.group("after")


def _raw_spans(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    for match, context in _candidates(text):
        if _context_has_break(context):
            yield start, match.end()
            start = match.start("next") if match.group("next") else match.end()
    yield start, len(text.rstrip())


def _realigned(text: str, spans: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Move closing quotes and brackets after a boundary into the sentence they close."""
    shift = 0
    for i, (start, stop) in enumerate(spans):
        start, shift = start + shift, 0
        if i + 1 < len(spans):
            next_start, next_stop = spans[i + 1]
            match = _REALIGN.match(text[next_start:next_stop])
            if match:
                yield start, next_start + len(match.group().rstrip())
                shift = match.end()
                continue
        if text[start:stop]:
            yield start, stop


def split_sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in _realigned(text, list(_raw_spans(text)))]


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


# --- words in capitals: NLTK's word tokenizer -----------------------------------------------
# NLTKWordTokenizer's substitutions (as in nltk 3.10), applied in order to one sentence,
# which is then split on whitespace.

_CLOSING = r"""\])}>"'\xbb\u201d\u2019"""
_WORD_RULES: list[tuple[re.Pattern[str], str]] = [
    # opening quotes
    (re.compile(r"([\xab\u201c\u2018\u201e]|`+)"), r" \1 "),
    (re.compile(r'^"'), "``"),
    (re.compile("(``)"), r" \1 "),
    (re.compile(r"""([ (\[{<])("|'{2})"""), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
    # punctuation
    (re.compile(rf"([^.])(\.)([{_CLOSING} ]*)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r"""([^.])(\.)([\])}>"']*)\s*$"""), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\][(){}<>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
]
_PADDED_RULES: list[tuple[re.Pattern[str], str]] = [
    # closing quotes and clitics, on the text padded with a space at both ends
    (re.compile(r"([\xbb\u201d\u2019])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
    *(
        (re.compile(pattern), r" \1 \2 ")
        for pattern in (
            r"(?i)\b(can)(not)\b",
            r"(?i)\b(d)('ye)\b",
            r"(?i)\b(gim)(me)\b",
            r"(?i)\b(gon)(na)\b",
            r"(?i)\b(got)(ta)\b",
            r"(?i)\b(lem)(me)\b",
            r"(?i)\b(more)('n)\b",
            r"(?i)\b(wan)(na)(?=\s)",
            r"(?i) ('t)(is)\b",
            r"(?i) ('t)(was)\b",
        )
    ),
]


def _apply(rules: Sequence[tuple[re.Pattern[str], str]], text: str) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


def word_tokens(text: str) -> list[str]:
    """Tokens as `nltk.word_tokenize` gives them: per sentence, Treebank-style."""
    return [
        token
        for sentence in split_sentences(text)
        for token in _apply(_PADDED_RULES, " " + _apply(_WORD_RULES, sentence) + " ").split()
    ]


# --- language -------------------------------------------------------------------------------

LANGDETECT_SEED = 0


@functools.lru_cache(maxsize=4096)
def detect_language(text: str) -> str | None:
    """langdetect's code for `text` with a fixed seed; None when it finds no features."""
    try:
        from langdetect import DetectorFactory, detect
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError:
        raise UserError(
            "IFEval's language checks need langdetect (pip install langdetect)"
        ) from None

    DetectorFactory.seed = LANGDETECT_SEED
    try:
        return str(detect(text))
    except LangDetectException:
        return None


def _in_language(text: str, language: str) -> bool:
    """The reference counts text langdetect cannot classify as following the instruction."""
    detected = detect_language(text)
    return detected is None or detected == language


# --- the checks -----------------------------------------------------------------------------


def check_keywords_existence(response: str, *, keywords: list[str]) -> bool:
    # Keywords are regular expressions in the reference, matched anywhere, ignoring case.
    return all(re.search(word, response, re.IGNORECASE) for word in keywords)


def check_keyword_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    found = len(re.findall(keyword.strip(), response, re.IGNORECASE))
    return RELATIONS[relation](found, frequency)


def check_forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    return not any(re.search(rf"\b{word}\b", response, re.IGNORECASE) for word in forbidden_words)


def check_letter_frequency(
    response: str, *, letter: str, let_frequency: int, let_relation: str
) -> bool:
    target = letter.strip().lower()
    found = sum(1 for char in response.lower() if char == target)
    return RELATIONS[let_relation](found, let_frequency)


def check_response_language(response: str, *, language: str) -> bool:
    return _in_language(response, language)


def check_number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    return RELATIONS[relation](count_sentences(response), num_sentences)


def check_number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """Paragraphs are separated by `***`; an empty one is only allowed at either end."""
    parts = re.split(r"\s?\*\*\*\s?", response)
    blank = [i for i, part in enumerate(parts) if not part.strip()]
    if any(0 < i < len(parts) - 1 for i in blank):
        return False
    return len(parts) - len(blank) == num_paragraphs


def check_number_words(response: str, *, num_words: int, relation: str) -> bool:
    return RELATIONS[relation](count_words(response), num_words)


def check_nth_paragraph_first_word(
    response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str
) -> bool:
    """Paragraphs are separated by blank lines; the nth must start with `first_word`."""
    parts = response.split("\n\n")
    count = sum(1 for part in parts if part.strip())
    if nth_paragraph > count or not parts[nth_paragraph - 1].strip():
        return False
    word = parts[nth_paragraph - 1].split()[0].lstrip("'").lstrip('"')
    head = re.match(r"""[^.,?!'"]*""", word)
    found = "".join(char.lower() for char in head.group()) if head else ""
    return count == num_paragraphs and found == first_word.lower()


def check_number_placeholders(response: str, *, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


_POSTSCRIPT_PATTERNS = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}


def postscript_pattern(marker: str) -> str:
    marker = marker.strip()
    return _POSTSCRIPT_PATTERNS.get(marker, r"\s*" + marker.lower() + r".*$")


def check_postscript(response: str, *, postscript_marker: str) -> bool:
    pattern = postscript_pattern(postscript_marker)
    return re.search(pattern, response.lower(), re.MULTILINE) is not None


def check_number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", response, re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


_CONSTRAINED_ANSWERS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def check_constrained_response(response: str) -> bool:
    return any(answer in response for answer in _CONSTRAINED_ANSWERS)


def check_number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    """`*text*` spans on one line; each `**text**` span counts once more."""
    single = re.findall(r"\*[^\n\*]*\*", response)
    double = re.findall(r"\*\*[^\n\*]*\*\*", response)
    found = sum(1 for span in single if span.strip("*").strip())
    found += sum(1 for span in double if span[2:-2].strip())
    return found >= num_highlights


def section_pattern(section_spliter: str) -> str:
    return r"\s?" + section_spliter.strip() + r"\s?\d+\s?"


def check_multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    return len(re.split(section_pattern(section_spliter), response)) - 1 >= num_sections


def check_json_format(response: str) -> bool:
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def check_title(response: str) -> bool:
    titles = re.findall(r"<<[^\n]+>>", response)
    return any(title.lstrip("<").rstrip(">").strip() for title in titles)


def check_two_responses(response: str) -> bool:
    """Two different non-empty answers separated by `******` (empty ends allowed)."""
    parts = response.split("******")
    if any(not part.strip() for part in parts[1:-1]):
        return False
    answers = [part.strip() for part in parts if part.strip()]
    return len(answers) == 2 and answers[0] != answers[1]


def check_repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


def check_end_phrase(response: str, *, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def check_capital_word_frequency(
    response: str, *, capital_frequency: int, capital_relation: str
) -> bool:
    found = sum(1 for token in word_tokens(response) if token.isupper())
    return RELATIONS[capital_relation](found, capital_frequency)


def check_english_capital(response: str) -> bool:
    return response.isupper() and _in_language(response, "en")


def check_english_lowercase(response: str) -> bool:
    return response.islower() and _in_language(response, "en")


def check_no_comma(response: str) -> bool:
    return "," not in response


def check_quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'
