from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Tests never reach the Hugging Face Hub: set before `datasets`/`huggingface_hub` import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """A local Ray instance (2 CPUs, no dashboard) per test module, or skip: Ray is the
    optional `ray` extra. It takes ~10 s to start, hence one per module."""
    ray = pytest.importorskip("ray", reason="ray is not installed (make install EXTRAS=ray)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip: the default suite must pass without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (reference data for integration checks)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test writes the user's ~/.cache: the default teacher cache goes to a temp dir."""
    monkeypatch.setenv("DISTILLERY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
