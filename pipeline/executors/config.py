"""Settings shared by the stages that can run on Ray (`filter`, `complete`, `generate`)."""

from __future__ import annotations

from typing import Literal

from distillery.config import Section
from pydantic import Field

Executor = Literal["local", "ray"]


class RayConfig(Section):
    """Where the Ray cluster is and how work is cut for it (used when `executor: ray`)."""

    address: str = Field(
        "",
        description="'' starts a local Ray instance; 'auto' joins the cluster this machine is "
        "part of (`ray start`); ray://HOST:10001 connects to a remote cluster's client server",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of a local instance (None: all); ignored for a cluster"
    )
    rows_per_block: int = Field(
        20_000, ge=1, description="filter: rows per Ray Data block (the unit of parallel work)"
    )
    embed_actors: int = Field(
        1, ge=1, description="filter: embedding actors (each loads the model once)"
    )
    embed_gpus: float = Field(
        0.0, ge=0, description="filter: GPUs per embedding actor (0: CPU; 1 on a GPU cluster)"
    )
    workers: int = Field(
        2, ge=1, description="teacher calls (complete, generate, judge): engine actors"
    )
    chunk_size: int = Field(
        16, ge=1, description="teacher calls: requests per task sent to a teacher actor"
    )
