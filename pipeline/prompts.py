"""Prompt files: every prompt the pipeline sends lives in `prompts/<name>.jinja`.

Rendering uses Jinja2 with `StrictUndefined`, so a missing variable is an error, never an
empty string. `render` returns the text and a `TemplateRef` (name + SHA-256 of the template
source) that travels with every row the prompt produced.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from distillery.errors import UserError
from distillery.records import TemplateRef
from distillery.resources import shipped

PROMPTS_DIR = shipped("prompts")


def prompts_dir() -> Path:
    """`$DISTILLERY_PROMPTS_DIR` if set (to use edited copies), else the shipped `prompts/`."""
    return Path(os.environ.get("DISTILLERY_PROMPTS_DIR", PROMPTS_DIR))


@dataclass(frozen=True)
class Rendered:
    text: str
    template: TemplateRef


@lru_cache(maxsize=8)
def _environment(directory: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        keep_trailing_newline=False,
    )


def template_names(directory: Path | None = None) -> list[str]:
    directory = directory or prompts_dir()
    return sorted(p.stem for p in directory.glob("*.jinja"))


def template_ref(name: str, directory: Path | None = None) -> TemplateRef:
    path = (directory or prompts_dir()) / f"{name}.jinja"
    try:
        source = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such prompt template") from None
    return TemplateRef(name=name, sha256=hashlib.sha256(source).hexdigest())


def render(name: str, directory: Path | None = None, **variables: Any) -> Rendered:
    """Render `prompts/<name>.jinja`; an undefined variable raises a one-line `UserError`."""
    directory = directory or prompts_dir()
    ref = template_ref(name, directory)
    try:
        template = _environment(str(directory)).get_template(f"{name}.jinja")
        text = template.render(**variables)
    except jinja2.UndefinedError as exc:
        raise UserError(f"{directory / name}.jinja: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(
            f"{exc.filename or name}:{exc.lineno}: template syntax error: {exc.message}"
        ) from None
    return Rendered(text=text.strip(), template=ref)
