"""One config system: a YAML file plus `key=value` overrides, loaded into pydantic models.

Every stage's config is a pydantic model built from `Section` (unknown keys are errors,
every field typed, defaulted, bounded where it makes sense and documented in one line).
`load_config` turns any problem into a `UserError` whose one-line message names the file,
the line or the key, so the CLI can exit 2 before any work starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from distillery.errors import UserError
from distillery.jsonl import atomic_write_text, read_text_utf8
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=BaseModel)


def _yaml_error(path: str, exc: yaml.YAMLError) -> UserError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return UserError(f"{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}")
    return UserError(f"{path}: invalid YAML: {problem}")


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`a.b=3` -> {"a": {"b": 3}}. Values are parsed as YAML scalars/lists (`true`, `0.5`, `[a, b]`)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"override {item!r}: expected key=value, e.g. teacher.concurrency=32")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(
                    f"override {item!r}: {part!r} is set to a value and a section at once"
                )
            node = child
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (sub)model that `loc` points into, for 'did you mean' hints."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        current = fields[part].annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
    return list(getattr(current, "model_fields", {}))


def _format_validation_error(
    source: str, model: type[BaseModel], exc: ValidationError, override_keys: set[str]
) -> UserError:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    where = "override" if key in override_keys else source
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        msg = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        if allowed:
            msg += f"; allowed: {', '.join(allowed)}"
    else:
        msg = first["msg"]
        if "input" in first and first["type"] != "missing":
            msg += f" (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return UserError(f"{where}: key {key!r}: {msg}{more}")


def _flatten_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        full = f"{prefix}{key}"
        keys.add(full)
        if isinstance(value, dict):
            keys |= _flatten_keys(value, full + ".")
    return keys


def load_config(model: type[M], path: str | Path | None, overrides: Sequence[str] = ()) -> M:
    """Load `path` (YAML; None means defaults only), apply overrides, validate into `model`."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        text = read_text_utf8(Path(path))
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _yaml_error(source, exc) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(
                f"{source}: expected a mapping of keys at the top level, got {type(loaded).__name__}"
            )
        data = loaded
    override_tree = parse_overrides(overrides)
    data = _merge(data, override_tree)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _format_validation_error(source, model, exc, _flatten_keys(override_tree)) from None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, in field order."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def save_resolved_config(config: BaseModel, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config into the run's output directory (atomically)."""
    target = Path(out_dir) / name
    atomic_write_text(target, dump_config(config))
    return target


def _inline_yaml(value: Any) -> str:
    """A default as one line of YAML, the way a config file would spell it."""
    text = yaml.safe_dump(
        to_jsonable_python(value), default_flow_style=True, width=10**9, allow_unicode=True
    )
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _default_text(field: FieldInfo) -> str:
    """`required`, the default in YAML, or `NAME()` for a factory that reads the machine or
    the environment (a named function, e.g. `default_cache_path`). Lambdas and types are
    plain constant builders (`lambda: list(STOP_WORDS)`): they are called and shown."""
    if field.is_required():
        return "required"
    factory = field.default_factory
    named = getattr(factory, "__name__", "<lambda>") != "<lambda>"
    if factory is not None and named and not isinstance(factory, type):
        return f"{factory.__name__}()"
    return _inline_yaml(field.get_default(call_default_factory=True))


def describe(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every field, nested sections flattened: the config reference."""
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe(ann, key + "."))
            continue
        if get_origin(ann) is Literal:
            type_name = " or ".join(repr(a) for a in get_args(ann))
        else:
            type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        rows.append((key, type_name, _default_text(field), field.description or ""))
    return rows


def _code_cell(text: str) -> str:
    """`text` as inline code inside a Markdown table cell."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def reference_markdown(model: type[BaseModel]) -> str:
    """The config reference of one model as a Markdown table (`distillery config STAGE`)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_name, default, help_text in describe(model):
        lines.append(
            f"| `{key}` | {type_name.replace('|', 'or')} | {_code_cell(default)} | {help_text} |"
        )
    return "\n".join(lines)


CONFIG_DOC_HEADER = """# Configuration reference

Generated from the config models by `make docs`; do not edit by hand
(`tests/test_config.py` fails when this file and the models disagree). Every stage reads a
YAML file (`--config FILE`, examples under `configs/`) plus dotted `key=value` overrides;
defaults are shown as they would be written in YAML. `NAME()` marks a default computed on
the machine that runs (e.g. a path under your home directory).
"""


def config_reference_doc() -> str:
    """docs/config.md: the reference of every stage registered in `distillery.cli.CONFIG_MODELS`."""
    import importlib

    from distillery.cli import CONFIG_MODELS

    parts = [CONFIG_DOC_HEADER]
    for stage, target in CONFIG_MODELS.items():
        module, _, name = target.partition(":")
        model = getattr(importlib.import_module(module), name)
        summary = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        parts.append(f"## `{stage}`\n\n{summary}\nPrinted by `distillery config {stage}`.\n")
        parts.append(reference_markdown(model) + "\n")
    return "\n".join(parts)


def write_config_reference(path: str | Path = "docs/config.md") -> Path:
    """Regenerate docs/config.md (`make docs`)."""
    atomic_write_text(Path(path), config_reference_doc())
    return Path(path)
