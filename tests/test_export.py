"""`distillery export`: a run's rows in the Hugging Face Hub layout, with a card whose every
number is checked here against the run's own files (manifest.json, summary.json,
dropped.jsonl, identity.json, invocations.jsonl) and the prompt files themselves. The card is
parsed with huggingface_hub's card parser; the Parquet shards are loaded with `datasets`."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from distillery.cli import main
from huggingface_hub import DatasetCard

ROOT = Path(__file__).resolve().parent.parent


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """generate (scripted teacher, 24 rows) -> filter (every offline step; decontam against
    an eval set holding two generated instructions, so it has matches to remove)."""
    root = tmp_path_factory.mktemp("runs")
    cache = f"teacher.cache_path={root / 'cache.sqlite'}"
    generate = ["generate", "--config", str(ROOT / "configs" / "generate_offline_demo.yaml")]
    generate += [f"seeds={ROOT / 'seeds'}", f"output_dir={root}", "run_id=gen"]
    assert main([*generate, "num_instructions=24", cache, "--quiet"]) == 0
    rows = _lines(root / "gen" / "generated.jsonl")
    bench = root / "bench.jsonl"
    picked = [rows[0]["instruction"], rows[-1]["instruction"]]
    bench.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in [*picked, "unrelated"]))
    filt = ["filter", "--input", str(root / "gen" / "generated.jsonl"), "--output-dir"]
    filt += [str(root / "filt"), "--steps", "heuristics,exact,near,decontam,judge"]
    filt += ["--against", str(bench), "decontam.embedding_threshold=null", "judge.min_score=5"]
    assert main([*filt, "judge.teacher.spec=fake", "judge." + cache]) == 0
    return root


def _card(out: Path) -> DatasetCard:
    return DatasetCard.load(out / "README.md")


def _row(text: str, *cells: object) -> bool:
    """Whether the card has a table row starting with these cells."""
    head = "| " + " | ".join(str(c) for c in cells) + " |"
    return any(line.startswith(head) for line in text.splitlines())


def test_the_card_of_a_filter_run_states_the_run_numbers(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    assert main(["export", str(runs / "filt"), "--to", str(out)]) == 0
    card = _card(out)
    meta, text = card.data.to_dict(), card.text
    summary, manifest = _json(runs / "filt" / "summary.json"), _json(runs / "gen" / "manifest.json")
    kept, dropped = _lines(runs / "filt" / "kept.jsonl"), _lines(runs / "filt" / "dropped.jsonl")

    # the metadata the Hub reads
    assert meta["license"] == "other" and "Not set (`other`)" in text
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    numbers = meta["distillery"]
    assert numbers["rows"] == summary["rows_kept"] == len(kept) > 0
    assert numbers["demo"] is True and "DEMO DATA" in text and "demo" in meta["tags"]

    # rows by origin and category, from the kept rows
    assert numbers["rows_by_origin"] == dict(Counter(r["origin"] for r in kept))
    assert numbers["rows_by_category"] == dict(Counter(r["category"] for r in kept))
    for origin, n in numbers["rows_by_origin"].items():
        assert _row(text, origin, n)

    # the filter funnel and drops per rule, as summary.json has them
    assert numbers["funnel"] == summary["funnel"]
    assert numbers["dropped_by_rule"] == summary["dropped_by_rule"]
    for step in summary["funnel"]:
        assert _row(text, step["step"], step["in"], step["dropped"], step["remaining"])
    for rule, n in summary["dropped_by_rule"].items():
        assert _row(text, rule, n)

    # the contamination certificate: items in the eval file, rows dropped for matching it
    (bench,) = numbers["decontamination"]["benchmarks"]
    removed = [d for d in dropped if d["dropped_by"]["rule"].startswith("decontam")]
    assert bench["items_checked"] == 3
    assert bench["matches_removed"] == len(removed) >= 1
    assert numbers["decontamination"]["ngram"] == 8 and "word n-gram overlap" in text
    decontam_step = next(s for s in summary["funnel"] if s["step"] == "decontam")
    assert numbers["decontamination"]["rows_checked"] == decontam_step["in"]
    assert _row(text, str(runs / "bench.jsonl"), 3, len(removed))
    assert summary["decontam"] == numbers["decontamination"]  # filter records it itself

    # the seed set, by count and digest
    identity = _json(runs / "gen" / "identity.json")
    assert f"{manifest['seeds']} seed tasks from `{ROOT / 'seeds'}`" in text
    assert identity["inputs"]["seeds"] in text

    # models with their roles; template hashes are the prompt files' own
    assert _row(text, "teacher: responses", "fake") and _row(text, "judge", "fake")
    for name in ("self_instruct_generate", "judge_quality", "user_turn"):
        digest = hashlib.sha256((ROOT / "prompts" / f"{name}.jinja").read_bytes()).hexdigest()
        assert f"| {name} | `{digest}` |" in text
    assert '"temperature": 0.7' in text

    # tokens and dollars: the manifest per teacher role, plus the judge's calls
    for role, t in manifest["teachers"].items():
        assert _row(text, "generate", role, t["requests_sent"], t["cache_hits"], t["input_tokens"])
    judge = summary["judge"]
    assert (
        numbers["spend"]["requests_sent"]
        == manifest["requests_sent"] + judge["judged"] + judge["reasked"]
    )
    assert numbers["spend"]["input_tokens"] > manifest["input_tokens"]

    # the exact commands, as the runs recorded them
    for run in ("gen", "filt"):
        for line in _lines(runs / run / "invocations.jsonl"):
            assert line["command"] in text

    # the Parquet shards load with `datasets`: every kept row, messages intact
    from datasets import load_dataset

    loaded = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == len(kept)
    assert loaded[0]["messages"] == kept[0]["messages"]
    assert loaded[0]["id"] == kept[0]["id"]


def test_an_export_can_be_redone_and_never_overwrites_anything_else(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    args = ["export", str(runs / "filt"), "--to", str(out), "--license", "apache-2.0"]
    assert main([*args, "--rows-per-shard", "5"]) == 0
    shards = sorted(p.name for p in (out / "data").iterdir())
    n = len(_lines(runs / "filt" / "kept.jsonl"))
    assert len(shards) == -(-n // 5) and shards[0] == f"train-00000-of-{len(shards):05d}.parquet"
    assert _card(out).data.license == "apache-2.0"
    assert main(args) == 0  # a previous export is replaced
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    capsys.readouterr()
    assert main(["export", str(runs / "filt"), "--to", str(runs / "gen")]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists and is not a previous export" in err and len(err.splitlines()) == 1
    assert main(["export", str(tmp_path), "--to", str(tmp_path / "x")]) == 2
    assert "not a filter run" in capsys.readouterr().err


def test_a_license_the_hub_does_not_know_stops_before_anything_is_written(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    for bad, hint in (("Apache-2.0", "did you mean apache-2.0"), ("not a license!", "")):
        assert main(["export", str(runs / "filt"), "--to", str(out), "--license", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--license {bad!r}: not a Hub license id" in err and hint in err
        assert len(err.splitlines()) == 1 and not out.exists()


def test_the_card_finds_the_generate_run_from_any_working_directory_and_builtin_seeds(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter run that recorded its input relative to the project (`make filter` does) and a
    generate run with the package's own seeds (`seeds: builtin`), exported from elsewhere:
    the card still has the seed set and its categories."""
    import shutil

    import yaml

    project = tmp_path / "project"
    shutil.copytree(runs / "gen", project / "runs" / "main" / "gen")
    shutil.copytree(runs / "filt", project / "runs" / "main" / "filtered")
    summary_path = project / "runs" / "main" / "filtered" / "summary.json"
    summary = _json(summary_path)
    summary["input"] = "runs/main/gen/generated.jsonl"
    summary_path.write_text(json.dumps(summary))
    config_path = project / "runs" / "main" / "gen" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["seeds"] = "builtin"  # the same files as the fixture's ROOT/seeds
    config_path.write_text(yaml.safe_dump(config))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    out = tmp_path / "export"
    assert main(["export", str(project / "runs" / "main" / "filtered"), "--to", str(out)]) == 0
    text = _card(out).text
    seeds = _json(runs / "gen" / "manifest.json")["seeds"]
    assert f"{seeds} seed tasks from `builtin`" in text and "| seed category | seeds |" in text
    assert "No generate run was found" not in text and "Categories: not shown" not in text


def test_a_filter_input_joining_two_generate_runs_gets_both_on_the_card(
    runs: Path, tmp_path: Path
) -> None:
    """The demo filters `generated_all.jsonl`, generate/'s rows plus passes/magpie/'s: the card
    names both runs, their teachers and spend, and their seeds (it said no generate run was
    found, and its spend was the judge's alone)."""
    import shutil

    demo = tmp_path / "demo"
    rows = (runs / "gen" / "generated.jsonl").read_text().splitlines(keepends=True)
    half = len(rows) // 2
    for name, part in (("generate", rows[:half]), ("passes/p2", rows[half:])):
        shutil.copytree(runs / "gen", demo / name)
        (demo / name / "generated.jsonl").write_text("".join(part))
    manifest = _json(demo / "passes/p2/manifest.json")
    for teacher in manifest["teachers"].values():
        teacher["requests_sent"] = 7
    (demo / "passes/p2/manifest.json").write_text(json.dumps(manifest))
    (demo / "generated_all.jsonl").write_text("".join(rows))
    shutil.copytree(runs / "filt", demo / "filter")
    summary = _json(demo / "filter" / "summary.json")
    summary["input"] = str(demo / "generated_all.jsonl")
    (demo / "filter" / "summary.json").write_text(json.dumps(summary))

    one, both = tmp_path / "one", tmp_path / "both"
    assert main(["export", str(runs / "filt"), "--to", str(one)]) == 0
    assert main(["export", str(demo / "filter"), "--to", str(both)]) == 0
    text = _card(both).text
    assert "No generate run was found" not in text
    assert "joins the rows of 2 generate runs" in text and "passes/p2" in text
    spend = {
        n: _card(out).data.to_dict()["distillery"]["spend"] for n, out in (("1", one), ("2", both))
    }
    added = 7 * len(manifest["teachers"])
    assert spend["2"]["requests_sent"] == spend["1"]["requests_sent"] + added
    for role in manifest["teachers"]:
        assert _row(text, "passes/p2", role, 7) and f"teacher: {role} (passes/p2)" in text
    seeds = manifest["seeds"]
    assert f"{2 * seeds} seed tasks" in text and text.count(f"{seeds} seed tasks from") == 2


def test_a_damaged_config_of_the_run_is_one_line_naming_it(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    shutil.copytree(runs / "filt", tmp_path / "filt")
    (tmp_path / "filt" / "config.yaml").write_text("steps: [heuristics\n")
    assert main(["export", str(tmp_path / "filt"), "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path / 'filt' / 'config.yaml'}: malformed YAML" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_hub_push_without_a_token_stops_with_one_line(
    runs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push itself needs the network (not tested offline); its preflight is."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["export", str(runs / "filt"), "--to", "hub:someone/rows"]) == 2
    err = capsys.readouterr().err.strip()
    assert "set HF_TOKEN" in err and len(err.splitlines()) == 1


def test_a_generate_run_exports_its_rows_without_a_filter_section(
    runs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "gen-export"
    assert main(["export", str(runs / "gen"), "--to", str(out)]) == 0
    card = _card(out)
    manifest = _json(runs / "gen" / "manifest.json")
    assert card.data.to_dict()["distillery"]["rows"] == manifest["rows"]
    assert card.data.to_dict()["distillery"]["rows_by_origin"] == manifest["rows_by_origin"]
    assert "not filtered: no dedup, judge or decontamination" in card.text


def test_a_certificate_is_rebuilt_for_a_run_that_did_not_record_one(
    runs: Path, tmp_path: Path
) -> None:
    """summary.json without a `decontam` entry: the card rebuilds the same certificate from
    the config, dropped.jsonl and the eval sets."""
    from distillery.dataset_card import card_facts, locate, read_records

    files = locate(runs / "filt")
    facts = card_facts(files, read_records(files.rows))
    summary = _json(runs / "filt" / "summary.json")
    cert = facts["filter"]["decontamination"]
    assert "decontam" not in summary or summary["decontam"] == cert
    assert [b["name"] for b in cert["benchmarks"]] == ["bench.jsonl"]


def test_a_run_built_from_shared_data_exports_with_its_certificate(
    shared_data: Path, tmp_path: Path
) -> None:
    """External Alpaca rows (CodeAlpaca) plus one row copying an IFEval prompt, filtered
    against IFEval and the Self-Instruct user-oriented set: the card shows no teacher, the
    funnel, and the IFEval match."""
    rows = json.loads((shared_data / "code_alpaca" / "code_alpaca_2k.json").read_text())[:300]
    ifeval = _lines(shared_data / "ifeval" / "input_data.jsonl")
    answer = "An answer that copies the benchmark prompt word for word."
    rows.append({"instruction": ifeval[3]["prompt"], "input": "", "output": answer})
    source = tmp_path / "rows.json"
    source.write_text(json.dumps(rows))
    sets = [str(shared_data / "ifeval" / "input_data.jsonl")]
    sets.append(str(shared_data / "self_instruct" / "user_oriented_instructions.jsonl"))
    filt = ["filter", "--input", str(source), "--output-dir", str(tmp_path / "f")]
    filt += ["--steps", "heuristics,exact,near,decontam", "decontam.embedding_threshold=null"]
    assert main([*filt, "--against", sets[0], "--against", sets[1] + ":instruction"]) == 0
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "f"), "--to", str(out), "--license", "cc-by-nc-4.0"]) == 0
    card = _card(out)
    numbers = card.data.to_dict()["distillery"]
    summary = _json(tmp_path / "f" / "summary.json")
    assert numbers["rows"] == summary["rows_kept"] and numbers["rows_by_origin"] == {
        "external": summary["rows_kept"]
    }
    ife, user = numbers["decontamination"]["benchmarks"]
    assert (ife["items_checked"], ife["matches_removed"]) == (len(ifeval), 1)
    assert user["items_checked"] == 252
    assert "No generate run was found" in card.text and "(not recorded)" in card.text
    assert re.search(r"\| \*\*total\*\* \| \| 0 \| 0 \| 0 \| 0 \| 0\.0000 \|", card.text)


@pytest.mark.slow
def test_the_demo_run_exports_with_a_card_matching_it(tmp_path: Path) -> None:
    """`distillery demo` end to end (about a minute), then its filter run exported."""
    demo = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(demo), "--rows", "20"]) == 0
    out = tmp_path / "export"
    assert main(["export", str(demo / "filter"), "--to", str(out)]) == 0
    numbers = _card(out).data.to_dict()["distillery"]
    summary = _json(demo / "filter" / "summary.json")
    manifest = _json(demo / "generate" / "manifest.json")
    assert numbers["rows"] == summary["rows_kept"] and numbers["funnel"] == summary["funnel"]
    magpie = _json(demo / "passes" / "magpie" / "manifest.json")
    assert numbers["spend"]["requests_sent"] >= manifest["requests_sent"] + magpie["requests_sent"]
    text = _card(out).text  # both generate runs the filter's input joins are on the card
    assert "No generate run was found" not in text and "(passes/magpie)" in text
    assert f"{manifest['seeds']} seed tasks from `builtin`" in text
    (bench,) = numbers["decontamination"]["benchmarks"]
    assert bench["name"] == "ifeval_demo.jsonl" and bench["items_checked"] > 0
    from datasets import load_dataset

    assert (
        load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf")).num_rows
        == summary["rows_kept"]
    )
