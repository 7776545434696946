"""The package's shape: no stage imports another stage.

Stages are `distillery.generate`, `distillery.filter`, `distillery.eval` and
`distillery.training`. What two stages share lives in neutral modules (`distillery.calls`,
`distillery.parsing`, `distillery.verdicts`, `distillery.judging`, ...); the CLI, the demo and
neutral modules may import stages. Every import statement counts, including those inside
functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the import name setuptools maps it to
PACKAGES = {"pipeline": "distillery", "eval": "distillery.eval", "training": "distillery.training"}
STAGES = ("distillery.generate", "distillery.filter", "distillery.eval", "distillery.training")
# Cross-stage imports not yet moved out. Remove an entry when fixed;
# the test fails on an entry that no longer exists, so the list only shrinks.
KNOWN: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


def _stage(module: str) -> str | None:
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), None)


def _imports(module: str, path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved against `module`."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


def cross_stage_imports() -> set[tuple[str, str]]:
    """(importing module, imported module) pairs where both are in different stages."""
    found = set()
    for module, path in _modules().items():
        home = _stage(module)
        if home is None:
            continue
        for imported in _imports(module, path):
            other = _stage(imported)
            if other is not None and other != home and imported in _modules():
                found.add((module, imported))
    return found


def test_no_stage_imports_another_stage() -> None:
    unexpected = cross_stage_imports() - KNOWN
    assert not unexpected, f"cross-stage imports: {sorted(unexpected)}"
    assert cross_stage_imports() >= KNOWN, "a known exception is fixed: remove it from KNOWN"


def test_the_walk_sees_the_stages_and_would_catch_a_cross_stage_import(tmp_path: Path) -> None:
    modules = _modules()
    assert {"distillery.generate.run", "distillery.filter.run", "distillery.eval.run"} <= set(
        modules
    )
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from distillery.generate.parse import numbered_list\n")
    assert "distillery.generate.parse" in _imports("distillery.filter.bad", bad)
    assert _stage("distillery.generate.parse") == "distillery.generate"
    assert _stage("distillery.judging") is None


def test_every_python_package_of_the_source_tree_is_in_the_wheel() -> None:
    """pyproject lists the packages by hand (its folders map onto one namespace): a new
    subpackage left out of the list imports from a checkout but not from the wheel."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join([name, *rel]))
    assert found - listed == set()
