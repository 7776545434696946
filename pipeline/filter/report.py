"""The filter report: one static HTML file with inline SVG charts (no server, no JavaScript,
no network), built from the same numbers as `summary.json`."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
.meta{color:#555} .grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:1.5rem}
figure{margin:0} figcaption{font-weight:600;margin-bottom:.4rem}
table{border-collapse:collapse;width:100%;font-size:.9rem} td,th{border:1px solid #ddd;padding:.35rem .5rem;vertical-align:top;text-align:left}
th{background:#f5f5f5} .demo{background:#fff3cd;border:1px solid #e0c060;padding:.6rem 1rem;margin:1rem 0}
.num{text-align:right;font-variant-numeric:tabular-nums} pre{white-space:pre-wrap;margin:0;font-size:.85rem}
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    width: int = 520,
    color: str = "#4e79a7",
    value_fmt: str = "{:,.0f}",
    title: str = "",
) -> str:
    """Horizontal bars with labels and values, as inline SVG."""
    row_h, label_w, pad = 24, 190, 60
    height = max(1, len(values)) * row_h + 10
    top = max(values) if values and max(values) > 0 else 1.0
    parts = [
        f'<svg role="img" aria-label="{_esc(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 5 + i * row_h
        w = (width - label_w - pad) * (value / top)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" font-size="12">{_esc(label)}</text>'
        )
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{color}"/>'
        )
        parts.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + 16}" font-size="12">{_esc(value_fmt.format(value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    values: Sequence[float], bins: Sequence[float], *, labels_fmt: str = "{:g}"
) -> tuple[list[str], list[float]]:
    counts = [0.0] * (len(bins) - 1)
    for v in values:
        for i in range(len(bins) - 1):
            last = i == len(bins) - 2
            if bins[i] <= v < bins[i + 1] or (last and v == bins[-1]):
                counts[i] += 1
                break
    labels = [
        f"{labels_fmt.format(bins[i])}-{labels_fmt.format(bins[i + 1])}"
        for i in range(len(bins) - 1)
    ]
    return labels, counts


def length_bins(values: Sequence[int]) -> list[float]:
    top = max(values, default=1)
    edges = [0.0, 10, 25, 50, 100, 200, 400, 800, 1600, 3200]
    edges = [e for e in edges if e < top] + [float(top)]
    return edges if len(edges) > 1 else [0.0, 1.0]


def render_report(summary: dict[str, Any], samples: dict[str, list[dict[str, Any]]]) -> str:
    s = summary
    out = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>distillery filter report</title>"
        f"<style>{CSS}</style></head><body>"
    ]
    out.append("<h1>distillery filter report</h1>")
    out.append(
        f"<p class='meta'>input <code>{_esc(s['input'])}</code> &middot; {s['rows_in']:,} rows in, "
        f"<b>{s['rows_kept']:,} kept</b>, {s['rows_dropped']:,} dropped &middot; steps: "
        f"{_esc(', '.join(s['steps']))} &middot; {s['wall_time_s']} s</p>"
    )
    if s.get("demo"):
        out.append(
            "<div class='demo'><b>Demo data.</b> These rows were made by the scripted <code>fake</code> "
            "teacher; they exercise the pipeline and are not real training data.</div>"
        )
    if s.get("judge"):
        j = s["judge"]
        out.append(
            f"<p class='meta'>Judge: <code>{_esc(j['model'])}</code> (generator: "
            f"<code>{_esc(', '.join(j['generator_models']) or 'unknown')}</code>; same family: "
            f"{_esc(j['same_family'])}). Parse failures after retries: {j['parse_failures']} of "
            f"{j['judged']} ({j['parse_failure_rate']:.1%}); re-asked: {j['reasked']}.</p>"
        )

    out.append("<h2>Drop funnel</h2><div class='grid'>")
    funnel = s["funnel"]
    out.append(
        "<figure><figcaption>Rows remaining after each step</figcaption>"
        + bar_chart([f["step"] for f in funnel], [f["remaining"] for f in funnel], title="funnel")
        + "</figure>"
    )
    reasons = sorted(s["dropped_by_rule"].items(), key=lambda kv: -kv[1])
    out.append(
        "<figure><figcaption>Dropped rows per rule</figcaption>"
        + bar_chart(
            [k for k, _ in reasons], [v for _, v in reasons], color="#e15759", title="rules"
        )
        + "</figure></div>"
    )
    out.append(
        "<table><tr><th>step</th><th class='num'>in</th><th class='num'>dropped</th>"
        "<th class='num'>remaining</th><th class='num'>seconds</th></tr>"
    )
    for f in funnel:
        out.append(
            f"<tr><td>{_esc(f['step'])}</td><td class='num'>{f['in']:,}</td><td class='num'>{f['dropped']:,}</td>"
            f"<td class='num'>{f['remaining']:,}</td><td class='num'>{f['seconds']}</td></tr>"
        )
    out.append("</table>")

    out.append("<h2>Distributions</h2><div class='grid'>")
    for key, caption in (
        ("response_tokens_before", "Response length before (tokens)"),
        ("response_tokens_after", "Response length after (tokens)"),
    ):
        values = s["lengths"][key]
        labels, counts = histogram(values, length_bins(s["lengths"]["response_tokens_before"]))
        out.append(
            f"<figure><figcaption>{caption}</figcaption>{bar_chart(labels, counts, title=key)}</figure>"
        )
    if s.get("judge") and s["judge"]["scores"]:
        labels, counts = histogram(
            s["judge"]["scores"], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10.0001], labels_fmt="{:.0f}"
        )
        out.append(
            f"<figure><figcaption>Judge scores (1-10)</figcaption>"
            f"{bar_chart(labels, counts, color='#59a14f', title='judge scores')}</figure>"
        )
    cats = sorted(s["categories_after"].items(), key=lambda kv: -kv[1])[:25]
    if cats:
        out.append(
            "<figure><figcaption>Category mix after filtering</figcaption>"
            + bar_chart(
                [k for k, _ in cats], [v for _, v in cats], color="#76b7b2", title="categories"
            )
            + "</figure>"
        )
    nn = s.get("nearest_neighbour_similarity") or []
    if nn:
        labels, counts = histogram(
            nn, [0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0001], labels_fmt="{:.2f}"
        )
        out.append(
            "<figure><figcaption>Nearest-neighbour similarity (cosine, before dedup)</figcaption>"
            f"{bar_chart(labels, counts, color='#f28e2b', title='nearest neighbour')}</figure>"
        )
    out.append("</div>")

    out.append("<h2>Sample of dropped rows per rule</h2>")
    for rule, rows in samples.items():
        out.append(
            f"<h3>{_esc(rule)} ({s['dropped_by_rule'].get(rule, 0):,})</h3><table>"
            "<tr><th>id</th><th>instruction</th><th>reason</th><th>evidence</th></tr>"
        )
        for r in rows:
            out.append(
                f"<tr><td><code>{_esc(r['id'])}</code></td><td><pre>{_esc(r['instruction'][:400])}</pre></td>"
                f"<td>{_esc(r['reason'])}</td><td><pre>{_esc(r['evidence'])[:600]}</pre></td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
