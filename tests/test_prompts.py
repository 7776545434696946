from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest
from distillery.errors import UserError
from distillery.prompts import prompts_dir, render, template_names
from jinja2 import meta

ROOT = Path(__file__).resolve().parent.parent

EXAMPLE = SimpleNamespace(
    instruction="Sort the list.", input="3, 1, 2", output="1, 2, 3", is_classification=False
)
SAMPLE_VALUES: dict[str, Any] = {
    "instruction": "Explain recursion to a beginner.",
    "input": "",
    "tasks": ["Write a haiku about rain.", "Convert 3 miles to km."],
    "num_tasks": 8,
    "examples": [EXAMPLE, SimpleNamespace(**{**vars(EXAMPLE), "is_classification": True})],
    "max_instances": 3,
    "prompt": "Write a function that reverses a string.",
    "min_added_words": 10,
    "max_added_words": 20,
    "first": "Sort a list.",
    "second": "Sort a list in place.",
    "response": "Recursion is when a function calls itself.",
    "response_a": "Answer A.",
    "response_b": "Answer B.",
    "system_prompt": "You are a patient tutor.",
    "turns": [
        {"user": "What is recursion?", "assistant": "A function that calls itself."},
        {
            "user": "Show me an example.",
            "assistant": "def f(n): return 1 if n < 2 else n * f(n - 1)",
        },
    ],
}


def variables_of(name: str) -> set[str]:
    env = jinja2.Environment()
    source = (prompts_dir() / f"{name}.jinja").read_text()
    return meta.find_undeclared_variables(env.parse(source))


def test_prompts_exist_and_are_documented() -> None:
    names = template_names()
    assert len(names) >= 16
    readme = (ROOT / "prompts" / "README.md").read_text()
    for name in names:
        assert f"`{name}`" in readme, f"{name} is not documented in prompts/README.md"


@pytest.mark.parametrize("name", template_names())
def test_every_prompt_renders(name: str) -> None:
    needed = variables_of(name)
    assert needed <= set(SAMPLE_VALUES), f"add sample values for {needed - set(SAMPLE_VALUES)}"
    rendered = render(name, **{k: SAMPLE_VALUES[k] for k in needed})
    assert rendered.text and rendered.text == rendered.text.strip()
    assert "\n\n\n" not in rendered.text
    source = (prompts_dir() / f"{name}.jinja").read_bytes()
    assert rendered.template.sha256 == hashlib.sha256(source).hexdigest()
    assert rendered.template.name == name


@pytest.mark.parametrize("name", [n for n in template_names() if variables_of(n)])
def test_missing_variable_is_an_error(name: str) -> None:
    with pytest.raises(UserError, match=f"{name}.jinja: '.*' is undefined"):
        render(name)


def test_user_turn_with_and_without_input() -> None:
    assert render("user_turn", instruction="Sum these.", input="").text == "Sum these."
    assert render("user_turn", instruction="Sum these.", input="1 2").text == "Sum these.\n\n1 2"


def test_no_prompt_text_in_python() -> None:
    """Prompts live in files: no line of a template (40+ characters) is repeated in Python."""
    lines = {
        line.strip()
        for path in prompts_dir().glob("*.jinja")
        for line in path.read_text().splitlines()
        if len(line.strip()) >= 40 and "{" not in line
    }
    assert lines
    for path in (ROOT / "pipeline").rglob("*.py"):
        text = path.read_text()
        leaked = [line for line in lines if line in text]
        assert not leaked, f"{path} repeats prompt text: {leaked[0]!r}"
