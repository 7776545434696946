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
        factory = field.default_factory
        if field.is_required():
            default = "required"
        elif factory is not None and not isinstance(factory, type):
            default = f"{getattr(factory, '__name__', 'computed')}()"  # machine-dependent
        else:
            default = repr(field.get_default(call_default_factory=True))
        rows.append((key, type_name, default, field.description or ""))
    return rows


def reference_markdown(model: type[BaseModel]) -> str:
    """The config reference as a Markdown table (kept in README.md, checked by a test)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_name, default, help_text in describe(model):
        cell = default.replace("|", "\\|")
        lines.append(f"| `{key}` | {type_name.replace('|', 'or')} | `{cell}` | {help_text} |")
    return "\n".join(lines)
