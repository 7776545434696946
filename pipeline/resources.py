"""Files distillery ships: prompts, the 220 seed tasks, chat templates, the demo's IFEval sample.

In a checkout (or an editable install) they are the repository's own folders - `prompts/`,
`seeds/`, `configs/demo/` - so an edit there takes effect at once. A wheel carries copies
as package data under `distillery/_data/`, so an installed `distillery` runs anywhere.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = {"prompts": "prompts", "seeds": "seeds", "demo": "configs/demo"}

BUILTIN_SEEDS = "builtin"  # `seeds: builtin` names the seed set shipped with distillery


def shipped(name: str) -> Path:
    """The directory of shipped files called `name` ('prompts', 'seeds' or 'demo')."""
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / _CHECKOUT[name]


def seeds_path(path: str | Path) -> str | Path:
    """`builtin` resolves to the shipped seed set; any other path is used as given."""
    return shipped("seeds") if str(path) == BUILTIN_SEEDS else path
