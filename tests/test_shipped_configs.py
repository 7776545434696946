"""Every shipped config loads into its stage's model (configs/<stage>[_variant].yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from distillery.complete import CompleteConfig
from distillery.config import describe, load_config
from distillery.filter.config import FilterConfig
from distillery.generate.config import GenerateConfig
from distillery.training.config import TrainConfig
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
STAGE_MODELS: dict[str, type[BaseModel]] = {
    "complete": CompleteConfig,
    "generate": GenerateConfig,
    "filter": FilterConfig,
    "train": TrainConfig,
}
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def stage_of(path: Path) -> str:
    return path.stem.split("_")[0]


def test_there_are_shipped_configs() -> None:
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    assert stage_of(path) in STAGE_MODELS, (
        f"{path.name}: unknown stage; register it in STAGE_MODELS"
    )
    config = load_config(STAGE_MODELS[stage_of(path)], path)
    assert config is not None


@pytest.mark.parametrize("model", STAGE_MODELS.values(), ids=lambda m: m.__name__)
def test_every_config_field_is_documented(model: type[BaseModel]) -> None:
    for key, _, _, help_text in describe(model):
        assert help_text, f"{model.__name__}.{key} has no description"


# The config reference lives in docs/config.md, generated from the models; its sync test is
# tests/test_config.py::test_docs_config_md_is_current.


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name
)
def test_accelerate_configs_parse_and_say_how_to_launch(path: Path) -> None:
    import yaml

    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"}
    header = path.read_text().split("\n", 3)
    assert any(
        "accelerate launch --config_file configs/accelerate/" + path.name in line for line in header
    )
    # accelerate itself reads the file and turns it into the launch environment
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    ClusterConfig.from_yaml_file(str(path))  # unknown or mistyped keys raise
    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "-m", "distillery.cli", "train"]
    )
    args, _, _ = _validate_launch_command(args)
    if data["distributed_type"] == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin
        from accelerate.utils.launch import prepare_multi_gpu_env

        env = prepare_multi_gpu_env(args)
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            plugin = FullyShardedDataParallelPlugin()  # what each process builds from the env
        assert plugin.fsdp_version == 2
    if data["distributed_type"] == "DEEPSPEED":
        # "auto": batch size and accumulation follow the train config, never contradict it
        assert "gradient_accumulation_steps" not in data["deepspeed_config"]


def test_shipped_configs_need_no_developer_data() -> None:
    """A fresh clone has no ../shared/data: eval sets are Hugging Face ids or shipped files."""
    for path in CONFIGS:
        assert "../shared" not in path.read_text(), f"{path.name} points at ../shared"
    filt = load_config(FilterConfig, ROOT / "configs" / "filter.yaml")
    assert filt.against and all(spec.startswith("hf:") for spec in filt.against)


@pytest.mark.slow
def test_make_filter_runs_with_local_copies_of_the_eval_sets(tmp_path: Path) -> None:
    """`make filter`'s config, offline: the hub sets replaced by local copies (the tests set
    HF_HUB_OFFLINE), the judge by the scripted fake teacher."""
    import json

    from distillery.cli import main

    rows = [
        {"instruction": f"Explain topic number {i} to a new student in plain words.",
         "output": f"Topic {i} is explained here in several plain words for a student."}
        for i in range(12)
    ] + [{"instruction": "Write a 300+ word essay on the history of the printing press.",
          "output": "The printing press changed how ideas spread across Europe and beyond."}]  # fmt: skip
    inp = tmp_path / "generated.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ifeval = tmp_path / "IFEval"  # a local dataset directory stands in for hf:google/IFEval
    ifeval.mkdir()
    (ifeval / "train.jsonl").write_text(
        json.dumps({"key": 1, "prompt": rows[-1]["instruction"]}) + "\n"
    )
    code = main([
        "filter", "--config", str(ROOT / "configs" / "filter.yaml"), "--input", str(inp),
        "--output-dir", str(tmp_path / "out"), "--against", f"hf:{ifeval}", "--judge", "fake",
        "--steps", "heuristics,exact,near,decontam,judge", "decontam.embedding_threshold=null",
        f"judge.teacher.cache_path={tmp_path / 'c.sqlite'}",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["dropped_by_rule"].get("decontam_ngram") == 1
