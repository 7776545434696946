"""IFEval's prompts named by Hugging Face id (`hf:google/IFEval`): the hub copy's rows list
every kwarg name with None where unused; scores equal those from the reference JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.cli import main

KWARG_NAMES = ["num_words", "relation", "num_highlights", "keywords", "language", "end_phrase"]
PROMPTS = [
    {
        "key": 1,
        "prompt": "Write about the sea in fewer than 20 words, with no commas.",
        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
        "kwargs": [{}, {"num_words": 20, "relation": "less than"}],
    },
    {
        "key": 2,
        "prompt": "Describe a fox. End with the exact phrase 'Any questions?'",
        "instruction_id_list": ["startend:end_checker"],
        "kwargs": [{"end_phrase": "Any questions?"}],
    },
]
RESPONSES = [
    {"prompt": PROMPTS[0]["prompt"], "response": "The sea is wide and blue and calm today."},
    {"prompt": PROMPTS[1]["prompt"], "response": "A fox is quick, red and clever. Any questions?"},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _hub_copy(directory: Path) -> Path:
    """A local dataset directory laid out like the hub's: every kwarg name in every dict."""
    directory.mkdir()
    rows = [
        {**p, "kwargs": [{n: kw.get(n) for n in KWARG_NAMES} for kw in p["kwargs"]]}
        for p in PROMPTS
    ]
    _jsonl(directory / "train.jsonl", rows)
    return directory


def test_hub_prompt_set_scores_like_the_reference_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    responses = _jsonl(tmp_path / "responses.jsonl", RESPONSES)
    local = _jsonl(tmp_path / "input_data.jsonl", PROMPTS)
    hub = f"hf:{_hub_copy(tmp_path / 'ifeval_hub')}"
    for name, inputs in (("file", str(local)), ("hub", hub)):
        out = tmp_path / name
        code = main(
            [
                "eval",
                "ifeval",
                "--inputs",
                inputs,
                "--responses",
                str(responses),
                "--output-dir",
                str(out),
            ]
        )
        assert code == 0
    by_file = json.loads((tmp_path / "file" / "ifeval_summary.json").read_text())
    by_hub = json.loads((tmp_path / "hub" / "ifeval_summary.json").read_text())
    assert by_hub == by_file
    assert by_file["instruction_level_strict"] == 1.0  # every instruction followed


def test_hf_spec_names_a_dataset_config_and_split(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from distillery.export import load_hf_dataset

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or [])
    load_hf_dataset("hf:openai/gsm8k@main:test")
    load_hf_dataset("hf:google/IFEval")
    assert calls == [
        (("openai/gsm8k", "main"), {"split": "test"}),
        (("google/IFEval", None), {"split": "train"}),
    ]
