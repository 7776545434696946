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
