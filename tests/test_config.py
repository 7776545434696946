from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from distillery.config import (
    Section,
    config_reference_doc,
    describe,
    load_config,
    parse_overrides,
    reference_markdown,
    save_resolved_config,
)
from distillery.errors import UserError
from pydantic import Field

ROOT = Path(__file__).resolve().parent.parent


class Inner(Section):
    rate: float = Field(0.5, ge=0, le=1, description="a probability")
    names: list[str] = Field(default_factory=list, description="some names")


class Outer(Section):
    concurrency: int = Field(8, ge=1, le=1024, description="parallel requests")
    model: str = Field("m", description="model name")
    inner: Inner = Field(default_factory=Inner, description="nested section")


def write(tmp_path: Path, text: str | bytes, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_loads_yaml_and_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 4\ninner:\n  rate: 0.1\n")
    cfg = load_config(Outer, path, ["inner.rate=0.9", "inner.names=[a, b]", "model=x"])
    assert cfg.concurrency == 4
    assert cfg.inner.rate == 0.9
    assert cfg.inner.names == ["a", "b"]
    assert cfg.model == "x"


def test_defaults_without_file() -> None:
    assert load_config(Outer, None) == Outer()


def test_broken_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 4\ninner: [unclosed\nmodel: x\n")
    with pytest.raises(UserError) as err:
        load_config(Outer, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:")
    assert "invalid YAML" in msg
    assert "\n" not in msg


def test_unknown_key_names_key_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "inner:\n  rat: 0.3\n")
    with pytest.raises(UserError) as err:
        load_config(Outer, path)
    msg = str(err.value)
    assert f"{path}: key 'inner.rat': unknown key (did you mean 'rate'?)" in msg
    assert "\n" not in msg


def test_out_of_bounds_value(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency: 0\n")
    with pytest.raises(UserError) as err:
        load_config(Outer, path)
    assert "key 'concurrency'" in str(err.value)
    assert "greater than or equal to 1" in str(err.value)


def test_bad_override_is_attributed_to_override() -> None:
    with pytest.raises(UserError, match=r"^override: key 'inner.rate'"):
        load_config(Outer, None, ["inner.rate=7"])
    with pytest.raises(UserError, match="expected key=value"):
        parse_overrides(["novalue"])


def test_non_utf8_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"model: caf\xe9\n")
    with pytest.raises(UserError, match=r":1: not valid UTF-8"):
        load_config(Outer, path)
    with pytest.raises(UserError, match="no such file"):
        load_config(Outer, tmp_path / "absent.yaml")


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(Outer, write(tmp_path, "- a\n- b\n"))


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(Outer, None, ["concurrency=3"])
    out = save_resolved_config(cfg, tmp_path / "run")
    assert load_config(Outer, out) == cfg
    assert yaml.safe_load(out.read_text())["concurrency"] == 3


def test_describe_flattens_sections() -> None:
    keys = {row[0]: row for row in describe(Outer)}
    assert keys["inner.rate"][3] == "a probability"
    assert keys["concurrency"][2] == "8"


def machine_dir() -> str:
    return "/somewhere/on/this/machine"


class WithFactories(Section):
    steps: list[str] = Field(default_factory=lambda: ["a", "b|c"], description="constant list")
    weights: dict[str, float] = Field(
        default_factory=lambda: {"x": 1.0}, description="constant dict"
    )
    pattern: list[str] = Field(default_factory=lambda: [r"\bcan`t\b"], description="regex")
    path: str = Field(default_factory=machine_dir, description="computed where it runs")
    names: list[str] = Field(default_factory=list, description="a type as factory")
    maybe: int | None = Field(None, description="unset")


def test_reference_shows_real_defaults_of_factories() -> None:
    """Lambdas are called and shown as YAML; a named function stays `name()` (machine-dependent)."""
    defaults = {key: default for key, _, default, _ in describe(WithFactories)}
    assert defaults == {
        "steps": "[a, b|c]",
        "weights": "{x: 1.0}",
        "pattern": "[\\bcan`t\\b]",
        "path": "machine_dir()",
        "names": "[]",
        "maybe": "null",
    }
    table = reference_markdown(WithFactories)
    assert "<lambda>" not in table
    assert "| `steps` | list | `[a, b\\|c]` | constant list |" in table  # a pipe stays in its cell
    assert "| `` [\\bcan`t\\b] `` |" in table  # a backtick inside inline code


def test_docs_config_md_is_current() -> None:
    """docs/config.md is generated from every stage in distillery.cli.CONFIG_MODELS."""
    from distillery.cli import CONFIG_MODELS

    expected = config_reference_doc()
    for stage in CONFIG_MODELS:
        assert f"## `{stage}`" in expected
    assert "<lambda>" not in expected
    current = (ROOT / "docs" / "config.md").read_text()
    assert current == expected, "docs/config.md is stale: regenerate it with `make docs`"
