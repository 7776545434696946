"""`distillery view`: the row explorer page, its data, and the page in headless Chromium."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from distillery.cli import main
from distillery.reports import environment
from distillery.view import CHUNK_ROWS, locate, render_view, write_view

from tests.helpers.chromium import CHROMIUM, Chromium, ink
from tests.helpers.runs import (
    CHILD,
    EVAL_TEXT,
    GRANDCHILD,
    LEAK,
    REJECTED,
    ROOT,
    SIBLING,
    write_demo_like_run,
)

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent (apt-get install -y --no-install-recommends chromium)",
)


def _unpack(b64: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(b64)))


def _page_data(page: str) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """What the page embeds: info, the index, and the full rows of every chunk."""
    info = json.loads(
        re.search(r'<script type="application/json" id="info">(.*?)</script>', page).group(1)
    )
    index = _unpack(re.search(r'id="index">([^<]*)</script>', page).group(1))
    chunks = re.findall(r'id="chunk-\d+">([^<]*)</script>', page)
    return info, index, [row for c in chunks for row in _unpack(c)]


def test_view_embeds_every_row_with_status_lineage_and_comparisons(tmp_path: Path) -> None:
    run = write_demo_like_run(tmp_path / "run")
    page, n = render_view(locate(run))
    info, index, rows = _page_data(page)
    # the filter's copy of a generated row is shown once; generate's rejection is there too
    assert n == 6 and len(index["id"]) == 6 and [r["id"] for r in rows] == index["id"]
    status = {
        rid: index["names"]["status"][s]
        for rid, s in zip(index["id"], index["status"], strict=True)
    }
    assert status == {
        ROOT: "kept",
        CHILD: "kept",
        SIBLING: "kept",
        GRANDCHILD: "dropped",
        LEAK: "dropped",
        REJECTED: "rejected",
    }
    pos = {rid: i for i, rid in enumerate(index["id"])}
    assert index["parents"][pos[GRANDCHILD]] == [pos[CHILD]]
    assert index["parents"][pos[CHILD]] == [pos[ROOT]]
    assert index["score"][pos[ROOT]] == 8.0 and index["score"][pos[LEAK]] is None
    rules = index["names"]["rule"]
    assert rules[index["rule"][pos[LEAK]]] == "decontam_ngram"
    # the near-duplicate and its survivor each point at the other
    by_id = {r["id"]: r for r in rows}
    assert by_id[GRANDCHILD]["_compared"] == [
        ["dropped by near_duplicate: survivor_id", pos[SIBLING]]
    ]
    assert by_id[SIBLING]["_compared"] == [
        ["dropped by near_duplicate in favour of this row", pos[GRANDCHILD]]
    ]
    # the full row: messages, every call with prompt, raw answer and usage, the benchmark item
    assert [c["purpose"] for c in by_id[ROOT]["trace"]] == [
        "self_instruct",
        "response",
        "judge:quality",
    ]
    assert by_id[LEAK]["dropped_by"]["evidence"]["eval_text"] == EVAL_TEXT
    assert by_id[ROOT]["_file"] == "kept.jsonl" and by_id[REJECTED]["_file"] == "rejected.jsonl"
    assert info["demo"] is True and info["counts"] == [["kept", 3], ["dropped", 2], ["rejected", 1]]


def test_view_is_self_contained(tmp_path: Path) -> None:
    assert "view.html.jinja" in environment().list_templates()  # package data
    run = write_demo_like_run(tmp_path / "run")
    page, _ = render_view(locate(run))
    # nothing fetched: no external script, stylesheet, image or frame
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "http://" not in page and "https://" not in page
    # row text only reaches the page compressed inside base64 (no markup injection)
    assert "haiku" not in page


def test_view_chunks_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("distillery.view.CHUNK_ROWS", 4)
    run = write_demo_like_run(tmp_path / "run")
    page, _ = render_view(locate(run))
    info, index, rows = _page_data(page)
    assert info["chunk_rows"] == 4 and len(re.findall(r'id="chunk-\d+"', page)) == 2
    assert [r["id"] for r in rows] == index["id"] and CHUNK_ROWS == 200


def test_view_finds_runs_in_each_layout(tmp_path: Path) -> None:
    run = write_demo_like_run(tmp_path / "run")
    both = locate(run)
    assert both.generate == run / "generate" and both.filter == run / "filter"
    # a filter run alone finds the generate run it read from its summary's input
    assert locate(run / "filter") == both
    only_generate = locate(run / "generate")
    assert only_generate.generate == run / "generate" and only_generate.filter is None
    _, n = render_view(only_generate)
    assert n == 6  # five generated rows (not filtered) and one rejected


def test_view_finds_the_generate_run_of_the_shipped_config_layout(tmp_path: Path) -> None:
    """configs/: generate writes runs/main/, filter runs/main/filtered/, and summary.json
    records the input relative to wherever the filter ran."""
    run = write_demo_like_run(tmp_path / "run")
    main_dir = tmp_path / "runs" / "main"
    main_dir.parent.mkdir()
    (run / "generate").rename(main_dir)
    (run / "filter").rename(main_dir / "filtered")
    summary = main_dir / "filtered" / "summary.json"
    summary.write_text(json.dumps({"input": "runs/main/generated.jsonl"}))
    found = locate(main_dir / "filtered")
    assert found.generate == main_dir and found.filter == main_dir / "filtered"
    assert render_view(found)[1] == 6


def test_view_cli_writes_the_page_and_names_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_demo_like_run(tmp_path / "run")
    assert main(["view", str(run)]) == 0
    assert (run / "view.html").is_file() and "6 rows" in capsys.readouterr().out
    out = tmp_path / "elsewhere.html"
    assert main(["view", str(run / "filter"), "--output", str(out)]) == 0 and out.is_file()
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "missing: no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["view", str(tmp_path / "empty")]) == 2
    assert "no run found" in capsys.readouterr().err
    bad = run / "filter" / "kept.jsonl"
    bad.write_text(bad.read_text() + '{"instruction": "no id"}\n')
    assert main(["view", str(run)]) == 2
    assert "kept.jsonl:4: a row without a string 'id'" in capsys.readouterr().err


@needs_chromium
def test_view_in_headless_chromium_search_lineage_and_calls(tmp_path: Path) -> None:
    run = write_demo_like_run(tmp_path / "run")
    assert main(["view", str(run), "--output", str(tmp_path / "view.html")]) == 0
    with Chromium(width=1280, height=900) as browser:
        page = browser.open((tmp_path / "view.html").as_uri())
        page.wait_for("document.body.dataset.firstRenderMs || document.body.dataset.error")
        assert page.evaluate("document.body.dataset.error || ''") == ""
        assert page.evaluate("document.getElementById('count').textContent") == "6 of 6 rows"
        assert ink(page.screenshot(tmp_path / "list.png")) > 0.02  # not a blank page
        # search narrows the list (typed into the box, as a user does)
        page.evaluate(
            "(() => { const q = document.getElementById('q'); q.value = 'autumn leaves';"
            " q.dispatchEvent(new Event('input')); })()"
        )
        page.wait_for("document.getElementById('count').textContent === '3 of 6 rows'")
        shown = page.evaluate("[...document.querySelectorAll('#rows .row')].map(r => r.title)")
        assert len(shown) == 3 and all("autumn leaves" in t for t in shown)
        # a filter: dropped rows only
        page.evaluate(
            "(() => { const s = document.getElementById('status'); s.value = 'dropped';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        page.wait_for("document.getElementById('count').textContent === '0 of 6 rows'")
        # a row's detail, by clicking it: lineage back to the root, through every evolution
        page.goto((tmp_path / "view.html").as_uri() + "#q=two+haiku")
        page.wait_for("document.querySelectorAll('#rows .row').length === 1")
        page.evaluate("document.querySelector('#rows .row').click()")
        page.wait_for("!!document.querySelector('#lineage')")
        lineage = page.evaluate(
            "[...document.querySelectorAll('#lineage li[data-id]')].map(l => l.dataset.id)"
        )
        assert lineage == [CHILD, ROOT]
        compared = page.evaluate("document.getElementById('compared').textContent")
        assert SIBLING in compared and "survivor_id" in compared
        # the survivor named in the evidence is a link to it
        assert page.evaluate(f"!!document.querySelector('#drop a[data-id=\"{SIBLING}\"]')")
        # every LLM call, its prompt and raw answer rendered when opened
        page.evaluate("document.querySelectorAll('#calls details').forEach(d => d.open = true)")
        page.wait_for("document.querySelectorAll('#calls .callbody').length === 2")
        calls = page.evaluate("document.getElementById('calls').textContent")
        assert (
            "Write task for " + GRANDCHILD in calls
            and "raw answer" in calls
            and "$0.000120" in calls
        )
        page.screenshot(tmp_path / "detail.png")
        # follow the lineage link to the parent: its detail, with the grandchild as its child
        page.evaluate(f"document.querySelector('#lineage a[data-id=\"{CHILD}\"]').click()")
        page.wait_for(
            f"location.hash.includes('row={CHILD}') && !!document.querySelector('#lineage')"
        )
        page.wait_for(f"document.getElementById('detail').textContent.includes('row {CHILD}')")
        assert GRANDCHILD in page.evaluate("document.getElementById('lineage').textContent")
        # the benchmark item a contaminated row matched
        page.goto((tmp_path / "view.html").as_uri() + f"#row={LEAK}")
        page.wait_for("!!document.querySelector('#drop')")
        drop = page.evaluate("document.getElementById('drop').textContent")
        assert "benchmark item ifeval_demo.jsonl[3]" in drop and EVAL_TEXT in drop


@pytest.mark.slow
@needs_chromium
def test_view_of_the_demo_run_in_headless_chromium(tmp_path: Path) -> None:
    """The demo's own generate and filter stages (scripted teacher), then the page."""
    from distillery.demo import _filter, _generate

    teacher = {"spec": "fake", "cache_path": str(tmp_path / "cache.sqlite")}
    assert _generate(tmp_path, 20, teacher) == 0 and _filter(tmp_path, teacher) == 0
    page_path, n = write_view(tmp_path)
    kept = [json.loads(line) for line in (tmp_path / "filter" / "kept.jsonl").open()]
    evolved = next(r for r in kept if r["parent_ids"])
    with Chromium(width=1280, height=900) as browser:
        page = browser.open(page_path.as_uri())
        page.wait_for("document.body.dataset.firstRenderMs")
        assert page.evaluate("document.getElementById('count').textContent") == f"{n} of {n} rows"
        assert ink(page.screenshot(tmp_path / "demo.png")) > 0.02
        words = evolved["instruction"].split()[:4]
        page.evaluate(
            "(() => { const q = document.getElementById('q'); q.value = "
            f"{json.dumps(' '.join(words))}; q.dispatchEvent(new Event('input')); }})()"
        )
        page.wait_for(f"!document.getElementById('count').textContent.startsWith('{n} ')")
        shown = int(page.evaluate("document.getElementById('count').textContent").split()[0])
        assert 1 <= shown < n
        # a row found by its id and clicked: its lineage starts at its parent
        page.goto(page_path.as_uri() + f"#q={evolved['id']}")
        page.wait_for("document.querySelectorAll('#rows .row').length === 1")
        page.evaluate("document.querySelector('#rows .row').click()")
        page.wait_for("!!document.querySelector('#lineage')")
        parents = page.evaluate(
            "[...document.querySelectorAll('#lineage li[data-id]')].map(l => l.dataset.id)"
        )
        assert parents[0] == evolved["parent_ids"][0]


def test_view_output_replaces_only_its_own_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output over a file the user keeps, or a directory: one line, the file untouched;
    over a page view wrote before: replaced."""
    run = write_demo_like_run(tmp_path / "run")
    precious = tmp_path / "notes.html"
    precious.write_text("<html>my notes</html>\n")
    assert main(["view", str(run), "--output", str(precious)]) == 2
    assert "notes.html: exists and is not a page distillery view wrote" in capsys.readouterr().err
    assert precious.read_text() == "<html>my notes</html>\n"
    assert main(["view", str(run), "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    page = tmp_path / "new" / "deeper" / "view.html"  # a missing directory is made
    assert main(["view", str(run), "--output", str(page)]) == 0 and page.is_file()
    page.write_text(page.read_text().replace("</body>", "<p>stale</p></body>"))
    assert main(["view", str(run), "--output", str(page)]) == 0
    assert "stale" not in page.read_text()


def test_view_shows_every_generate_run_the_filter_input_joins(tmp_path: Path) -> None:
    """The demo filters generate/'s rows plus passes/magpie/'s (generated_all.jsonl): the
    Magpie pass's rejected candidates are rows of the page too, whichever directory is given
    (the page showed 16 of the demo's 42 rejections)."""
    run = write_demo_like_run(tmp_path / "run")
    main_rows = (run / "generate" / "generated.jsonl").read_text()
    magpie = run / "passes" / "magpie"
    magpie.mkdir(parents=True)
    # one more generated row (so the filter's copy of it is not needed) and one rejected
    row = json.loads(main_rows.splitlines()[0]) | {"id": "magpie-1", "origin": "magpie"}
    gone = row | {"id": "magpie-x", "dropped_by": {"rule": "empty", "reason": "no text"}}
    (magpie / "generated.jsonl").write_text(json.dumps(row) + "\n")
    (magpie / "rejected.jsonl").write_text(json.dumps(gone) + "\n")
    (magpie / "manifest.json").write_text(json.dumps({"rows": 1, "demo": True}))
    joined = run / "generated_all.jsonl"
    joined.write_text(main_rows + (magpie / "generated.jsonl").read_text())
    summary = json.loads((run / "filter" / "summary.json").read_text())
    (run / "filter" / "summary.json").write_text(json.dumps(summary | {"input": str(joined)}))
    for where in (run, run / "filter"):
        files = locate(where)
        assert files.generate == run / "generate" and files.more_generate == (magpie,)
        info, index, _ = _page_data(render_view(files)[0])
        status = dict(zip(index["id"], index["status"], strict=True))
        assert index["names"]["status"][status["magpie-x"]] == "rejected"
        assert index["names"]["status"][status["magpie-1"]] == "generated"
        assert info["rows"] == 8 and str(magpie) in info["generate"]
