"""See what the model will learn: prepared examples with their supervised tokens highlighted.

`write_label_preview` takes (where, input_ids, labels) per example - `PrepStats.samples`
from `data.prepare` - writes a self-contained HTML page (every text escaped) with each
example's text, supervised runs highlighted and per-example counts, and returns a short
terminal summary: one line of counts per example and its supervised runs, in brackets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.training.masking import IGNORE

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>distillery: supervised tokens</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: .8em; }
.sup { background: #c8f0c8; outline: 1px solid #5a5; }
.ctx { color: #777; }
td, th { padding: .2em .8em; text-align: right; }
</style></head><body>
<h1>Supervised tokens</h1>
<p><span class="sup">highlighted</span> text is supervised (the model learns to write it);
grey text is context only. The first {{ examples | length }} prepared examples.</p>
<table><tr><th>example</th><th>tokens</th><th>supervised</th><th>share</th><th>runs</th></tr>
{% for e in examples %}<tr><td><a href="#ex{{ loop.index }}">{{ e.where }}</a></td>
<td>{{ e.tokens }}</td><td>{{ e.supervised }}</td><td>{{ e.share }}</td><td>{{ e.runs }}</td></tr>
{% endfor %}</table>
{% for e in examples %}<h2 id="ex{{ loop.index }}">{{ e.where }}</h2>
<p>{{ e.tokens }} tokens, {{ e.supervised }} supervised ({{ e.share }}) in {{ e.runs }} run(s)</p>
<pre>{% for text, on in e.segments %}<span class="{{ 'sup' if on else 'ctx' }}">{{ text }}</span>{% endfor %}</pre>
{% endfor %}</body></html>
"""


@dataclass
class _Shown:
    where: str
    tokens: int
    supervised: int
    share: str
    runs: int
    segments: list[tuple[str, bool]]  # decoded text of each run of equal supervision


def _segments(tokenizer: Any, ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    start = 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or (labels[k] != IGNORE) != (labels[start] != IGNORE):
            text = tokenizer.decode(ids[start:k], skip_special_tokens=False)
            out.append((str(text), labels[start] != IGNORE))
            start = k
    return out


def _shown(tokenizer: Any, where: str, ids: list[int], labels: list[int]) -> _Shown:
    segments = _segments(tokenizer, ids, labels)
    supervised = sum(1 for x in labels if x != IGNORE)
    share = f"{supervised / len(ids):.1%}" if ids else "-"
    runs = sum(1 for _, on in segments if on)
    return _Shown(where, len(ids), supervised, share, runs, segments)


def write_label_preview(
    examples: list[tuple[str, list[int], list[int]]], tokenizer: Any, path: Path, n: int = 8
) -> str:
    """Write the HTML view of the first `n` examples to `path` (atomically); return the
    terminal summary of the same examples."""
    from distillery.jsonl import atomic_write_text
    from jinja2 import Environment

    shown = [_shown(tokenizer, w, ids, labels) for w, ids, labels in examples[:n]]
    html = Environment(autoescape=True).from_string(PAGE).render(examples=shown)
    atomic_write_text(path, html)
    lines = [f"supervised text of {len(shown)} examples (what the model learns) -> {path}"]
    for s in shown:
        lines.append(f"{s.where}: {s.tokens} tokens, {s.supervised} supervised ({s.share})")
        lines += [f"  learns {text[:160]!r}" for text, on in s.segments if on]
    return "\n".join(lines)
