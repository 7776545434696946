"""IFEval (Zhou et al., 2023): strict and loose instruction-following accuracy.

Reads IFEval's prompt file (rows `key, prompt, instruction_id_list, kwargs`) and a responses
file (rows `prompt, response`, matched to prompts by exact prompt text; a prompt without a
response is scored on the empty response), checks every instruction of every prompt, and
writes what google-research's `instruction_following_eval` writes:

- `DIR/eval_results_strict.jsonl`, `DIR/eval_results_loose.jsonl`: one row per prompt, in
  input order: `follow_all_instructions, follow_instruction_list, instruction_id_list,
  prompt, response`;
- `DIR/ifeval_summary.json`: prompt- and instruction-level accuracy, strict and loose, the
  numbers of prompts and instructions, and how many prompts had no response.

Strict checks the response as it is; loose also tries it without its first line, its last
line or both, each with and without `*` characters, and counts an instruction as followed if
any of the eight texts follows it. The checks live in `eval.ifeval_checks`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.eval import ifeval_checks as checks
from distillery.export import iter_hf_rows
from distillery.jsonl import atomic_write_text, iter_json_lines, validation_summary, write_jsonl
from pydantic import BaseModel, ConfigDict, StrictStr, TypeAdapter, ValidationError
from typing_extensions import TypedDict

MODES = ("strict", "loose")

# --- keyword-argument validators: each returns what is wrong with a value, or None ----------

Validator = Callable[[Any], str | None]

# The languages langdetect can answer with.
_LANGDETECT_CODES = (
    "af ar bg bn ca cs cy da de el en es et fa fi fr gu he hi hr hu id it ja kn ko lt lv mk "
    "ml mr ne nl no pa pl pt ro ru sk sl so sq sv sw ta te th tl tr uk ur vi zh-cn zh-tw"
)
LANGUAGES = frozenset(_LANGDETECT_CODES.split())


def _count(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else f"expected a non-negative integer, got {value!r}"


def _position(value: Any) -> str | None:
    return _count(value) or (None if value >= 1 else "expected 1 or more, got 0")


def _text(value: Any) -> str | None:
    ok = isinstance(value, str) and value.strip()
    return None if ok else f"expected a non-empty string, got {value!r}"


def _one_of(allowed: frozenset[str] | Mapping[str, object]) -> Validator:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"expected one of {sorted(allowed)}, got {value!r}"

    return check


def _letter(value: Any) -> str | None:
    ok = isinstance(value, str) and len(value) == 1 and not value.isspace()
    return None if ok else f"expected a single character, got {value!r}"


def _pattern(to_regex: Callable[[str], str] = str) -> Validator:
    """A string the reference uses as (part of) a regular expression: it must compile."""

    def check(value: Any) -> str | None:
        problem = _text(value)
        if problem:
            return problem
        try:
            re.compile(to_regex(value))
        except re.error as exc:
            return f"{value!r} is not a valid regular expression ({exc})"
        return None

    return check


def _patterns(to_regex: Callable[[str], str] = str) -> Validator:
    one = _pattern(to_regex)

    def check(value: Any) -> str | None:
        if not isinstance(value, list) or not value:
            return f"expected a non-empty list of strings, got {value!r}"
        problems = [problem for problem in map(one, value) if problem]
        return problems[0] if problems else None

    return check


_RELATION = _one_of(checks.RELATIONS)

# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """How to check one instruction type: the check and its keyword arguments' validators."""

    check: Callable[..., bool]
    params: Mapping[str, Validator]


def _entry(check: Callable[..., bool], **params: Validator) -> Instruction:
    return Instruction(check, params)


REGISTRY: dict[str, Instruction] = {
    "keywords:existence": _entry(checks.check_keywords_existence, keywords=_patterns()),
    "keywords:frequency": _entry(
        checks.check_keyword_frequency,
        keyword=_pattern(str.strip),
        frequency=_count,
        relation=_RELATION,
    ),
    "keywords:forbidden_words": _entry(
        checks.check_forbidden_words, forbidden_words=_patterns(lambda w: rf"\b{w}\b")
    ),
    "keywords:letter_frequency": _entry(
        checks.check_letter_frequency, letter=_letter, let_frequency=_count, let_relation=_RELATION
    ),
    "language:response_language": _entry(
        checks.check_response_language, language=_one_of(LANGUAGES)
    ),
    "length_constraints:number_sentences": _entry(
        checks.check_number_sentences, num_sentences=_count, relation=_RELATION
    ),
    "length_constraints:number_paragraphs": _entry(
        checks.check_number_paragraphs, num_paragraphs=_count
    ),
    "length_constraints:number_words": _entry(
        checks.check_number_words, num_words=_count, relation=_RELATION
    ),
    "length_constraints:nth_paragraph_first_word": _entry(
        checks.check_nth_paragraph_first_word,
        num_paragraphs=_count,
        nth_paragraph=_position,
        first_word=_text,
    ),
    "detectable_content:number_placeholders": _entry(
        checks.check_number_placeholders, num_placeholders=_count
    ),
    "detectable_content:postscript": _entry(
        checks.check_postscript, postscript_marker=_pattern(checks.postscript_pattern)
    ),
    "detectable_format:number_bullet_lists": _entry(
        checks.check_number_bullet_lists, num_bullets=_count
    ),
    "detectable_format:constrained_response": _entry(checks.check_constrained_response),
    "detectable_format:number_highlighted_sections": _entry(
        checks.check_number_highlighted_sections, num_highlights=_count
    ),
    "detectable_format:multiple_sections": _entry(
        checks.check_multiple_sections,
        section_spliter=_pattern(checks.section_pattern),
        num_sections=_count,
    ),
    "detectable_format:json_format": _entry(checks.check_json_format),
    "detectable_format:title": _entry(checks.check_title),
    "combination:two_responses": _entry(checks.check_two_responses),
    "combination:repeat_prompt": _entry(checks.check_repeat_prompt, prompt_to_repeat=_text),
    "startend:end_checker": _entry(checks.check_end_phrase, end_phrase=_text),
    "startend:quotation": _entry(checks.check_quotation),
    "change_case:capital_word_frequency": _entry(
        checks.check_capital_word_frequency,
        capital_frequency=_count,
        capital_relation=_RELATION,
    ),
    "change_case:english_capital": _entry(checks.check_english_capital),
    "change_case:english_lowercase": _entry(checks.check_english_lowercase),
    "punctuation:no_comma": _entry(checks.check_no_comma),
}

# --- input ----------------------------------------------------------------------------------


class _PromptRow(TypedDict):
    prompt: StrictStr
    instruction_id_list: list[StrictStr]
    kwargs: list[dict[str, Any]]


_PROMPT_ROW = TypeAdapter(_PromptRow)  # other fields ("key") are ignored


class _ResponseRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr
    response: StrictStr


@dataclass(frozen=True)
class Task:
    """One instruction to check: its id and validated keyword arguments."""

    instruction_id: str
    kwargs: dict[str, Any]

    def follows(self, texts: list[str]) -> bool:
        """Followed if any non-blank text follows it (one text strict, eight loose)."""
        check = REGISTRY[self.instruction_id].check
        return any(text.strip() and check(text, **self.kwargs) for text in texts)


@dataclass(frozen=True)
class Prompt:
    prompt: str
    tasks: list[Task]


def build_task(instruction_id: str, kwargs: dict[str, Any]) -> Task:
    """Validate one instruction's id and kwargs (None values are dropped, as absent)."""
    entry = REGISTRY.get(instruction_id)
    if entry is None:
        raise UserError(f"unknown instruction id {instruction_id!r}")
    given = {name: value for name, value in kwargs.items() if value is not None}
    unexpected = sorted(given.keys() - entry.params.keys())
    if unexpected:
        raise UserError(f"{instruction_id}: unexpected kwarg {unexpected[0]!r}")
    for name, validate in entry.params.items():
        if name not in given:
            raise UserError(f"{instruction_id}: missing kwarg {name!r}")
        problem = validate(given[name])
        if problem:
            raise UserError(f"{instruction_id}: kwarg {name!r}: {problem}")
    return Task(instruction_id, given)


def _prompt(obj: dict[str, Any]) -> Prompt:
    row = _PROMPT_ROW.validate_python(obj)
    ids, kwargs = row["instruction_id_list"], row["kwargs"]
    if len(kwargs) != len(ids):
        raise UserError(f"{len(ids)} instruction ids but {len(kwargs)} kwargs")
    return Prompt(row["prompt"], [build_task(*pair) for pair in zip(ids, kwargs, strict=True)])


def iter_prompt_rows(spec: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) of IFEval's prompt set: a JSONL file in the reference format, or
    `hf:NAME[:SPLIT]` (e.g. `hf:google/IFEval`, read through `datasets` and cached). The hub
    copy stores every kwarg name of every instruction, None where unused: those are dropped,
    as the reference's file has only the kwargs each instruction takes."""
    if str(spec).startswith("hf:"):
        for where, row in iter_hf_rows(str(spec)):
            kwargs = row.get("kwargs")
            if isinstance(kwargs, list):
                row["kwargs"] = [
                    {k: v for k, v in kw.items() if v is not None} if isinstance(kw, dict) else kw
                    for kw in kwargs
                ]
            yield where, row
        return
    for lineno, obj in iter_json_lines(spec):
        yield f"{spec}:{lineno}", obj


def read_prompts(path: str | Path) -> list[Prompt]:
    """IFEval's prompt set (`iter_prompt_rows`); any problem is a UserError naming the row."""
    prompts = []
    for where, obj in iter_prompt_rows(path):
        try:
            prompts.append(_prompt(obj))
        except ValidationError as exc:
            raise UserError(f"{where}: {validation_summary(exc)}") from None
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    if not prompts:
        raise UserError(f"{path}: no prompts")
    return prompts


def read_responses(path: str | Path) -> dict[str, str]:
    """Prompt text -> response. Two different responses to one prompt are an error."""
    responses: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_json_lines(path):
        try:
            row = _ResponseRow.model_validate(obj)
        except ValidationError as exc:
            raise UserError(f"{path}:{lineno}: {validation_summary(exc)}") from None
        if responses.get(row.prompt, row.response) != row.response:
            raise UserError(
                f"{path}:{lineno}: a second, different response to the prompt of line "
                f"{first_line[row.prompt]}"
            )
        responses[row.prompt] = row.response
        first_line.setdefault(row.prompt, lineno)
    return responses


# --- scoring --------------------------------------------------------------------------------


def loose_variants(response: str) -> list[str]:
    """The response without its first line, last line or both, each with and without `*`."""
    lines = response.split("\n")
    trimmed = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return trimmed + [text.replace("*", "") for text in trimmed]


def score(prompt: Prompt, response: str, mode: str) -> dict[str, Any]:
    """One output row, as the reference writes it."""
    texts = loose_variants(response) if mode == "loose" else [response]
    followed = [task.follows(texts) for task in prompt.tasks]
    return {
        "follow_all_instructions": all(followed),
        "follow_instruction_list": followed,
        "instruction_id_list": [task.instruction_id for task in prompt.tasks],
        "prompt": prompt.prompt,
        "response": response,
    }


def summarise(results: Mapping[str, list[dict[str, Any]]], missing: int) -> dict[str, Any]:
    """Accuracies per mode (prompt level: all of a prompt's instructions followed)."""
    summary: dict[str, Any] = {}
    for mode, rows in results.items():
        prompts_followed = sum(row["follow_all_instructions"] for row in rows)
        verdicts = [v for row in rows for v in row["follow_instruction_list"]]
        summary[f"prompt_level_{mode}"] = prompts_followed / len(rows)
        summary[f"instruction_level_{mode}"] = sum(verdicts) / len(verdicts) if verdicts else 0.0
    rows = results[MODES[0]]
    summary["prompts"] = len(rows)
    summary["instructions"] = sum(len(row["instruction_id_list"]) for row in rows)
    summary["missing_responses"] = missing
    summary["intervals"] = intervals(results)
    return summary


def intervals(results: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """n and the 95% Wilson interval of each accuracy: prompt level over the prompts,
    instruction level over the instructions (each verdict counted as one, as the accuracy
    itself does; instructions of one prompt are not independent, so read it as approximate)."""
    from distillery.stats import proportion

    out: dict[str, Any] = {}
    for mode, rows in results.items():
        verdicts = [v for row in rows for v in row["follow_instruction_list"]]
        followed = sum(bool(row["follow_all_instructions"]) for row in rows)
        out[f"prompt_level_{mode}"] = proportion(followed, len(rows)).as_dict()
        out[f"instruction_level_{mode}"] = proportion(
            sum(map(bool, verdicts)), len(verdicts)
        ).as_dict()
    return out


def evaluate(
    inputs_path: str | Path, responses_path: str | Path, output_dir: str | Path
) -> dict[str, Any]:
    """Score a responses file on IFEval; write the three output files; return the summary."""
    prompts = read_prompts(inputs_path)
    responses = read_responses(responses_path)
    known = {p.prompt for p in prompts}
    missing = [p for p in prompts if p.prompt not in responses]
    extra = [r for r in responses if r not in known]
    if missing or extra:  # a mismatch is an error, never a silently smaller denominator
        detail = (
            f"no response for {len(missing)} prompt(s) (first: {missing[0].prompt[:60]!r})"
            if missing
            else f"{len(extra)} response(s) to prompts not in {inputs_path} (first: {extra[0][:60]!r})"
        )
        raise UserError(f"{responses_path}: does not line up with {inputs_path}: {detail}")
    results = {
        mode: [score(p, responses.get(p.prompt, ""), mode) for p in prompts] for mode in MODES
    }
    out = Path(output_dir)
    for mode, rows in results.items():
        write_jsonl(out / f"eval_results_{mode}.jsonl", rows)
    summary = summarise(results, sum(p.prompt not in responses for p in prompts))
    atomic_write_text(out / "ifeval_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
