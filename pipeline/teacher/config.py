"""Teacher configuration: which model, how hard to push it, what it costs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from distillery.config import Section
from pydantic import Field, field_validator, model_validator

BACKENDS = ("openai", "anthropic", "vllm", "hf", "fake")


def default_cache_path() -> str:
    base = (
        os.environ.get("DISTILLERY_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distillery"
    )
    return str(Path(base) / "teacher_cache.sqlite")


class Price(Section):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0, description="USD per 1M input (prompt) tokens")
    output_per_mtok: float = Field(ge=0, description="USD per 1M output (completion) tokens")
    batch_input_per_mtok: float | None = Field(
        None, ge=0, description="batch API input price (default: batch.discount x online)"
    )
    batch_output_per_mtok: float | None = Field(
        None, ge=0, description="batch API output price (default: batch.discount x online)"
    )


class BatchSettings(Section):
    """`teacher.mode: batch`: requests go through the provider's batch API (half price,
    answers within the completion window), grouped, tracked in a ledger and resumable."""

    max_requests: int | None = Field(
        None,
        ge=1,
        description="requests per batch (default: the API's limit, OpenAI 50,000, "
        "Anthropic 100,000)",
    )
    max_bytes: int | None = Field(
        None, ge=1, description="bytes per batch input (default: OpenAI 200 MB, Anthropic 256 MB)"
    )
    collect_s: float = Field(
        2.0, ge=0, description="wait this long for more requests before sending a partial batch"
    )
    poll_initial_s: float = Field(30.0, gt=0, description="first wait before polling a batch")
    poll_max_s: float = Field(600.0, gt=0, description="longest wait between polls (x1.5 each)")
    completion_window: Literal["24h"] = Field(
        "24h", description="the batch's completion window (OpenAI offers 24h only)"
    )
    max_pending: int = Field(
        100_000, ge=1, description="items waiting in batches at once (replaces concurrency)"
    )
    discount: float = Field(
        0.5, gt=0, le=1, description="batch price as a share of the online price (both APIs: 0.5)"
    )
    ledger_dir: str | None = Field(
        None,
        description="where the batch ledger lives (default: the run directory, else "
        "batches/ beside the response cache)",
    )
    detach: bool = Field(False, description="submit every batch, then exit; re-run to collect")
    progress_every_s: float = Field(
        60.0, ge=0, description="print a batch status line this often (0: never)"
    )


class VLLMServe(Section):
    """How `vllm:MODEL` starts `vllm serve` when no running server is given."""

    executable: str = Field("vllm", description="the vllm executable (on PATH or a path)")
    port: int = Field(8000, ge=1, le=65535, description="port for the started server")
    extra_args: list[str] = Field(
        default_factory=list,
        description="extra `vllm serve` flags, e.g. ['--tensor-parallel-size', '2']",
    )
    startup_timeout_s: float = Field(900, gt=0, description="how long to wait for /health")


class HFLocal(Section):
    """`hf:MODEL_OR_PATH`: local transformers generation."""

    batch_size: int = Field(8, ge=1, le=1024, description="prompts generated together")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = Field("auto", description="'auto', 'float32', 'bfloat16', 'float16'")


class TeacherConfig(Section):
    """One teacher: the backend and model, limits, retries, cache and prices."""

    spec: str | None = Field(
        None,
        description="backend:model, e.g. openai:gpt-4o-mini, anthropic:claude-haiku-4-5, "
        "vllm:Qwen/Qwen2.5-7B-Instruct, hf:./my-model, fake",
    )
    base_urls: list[str] = Field(
        default_factory=list,
        description="server URLs (several = replicas, balanced by in-flight count); "
        "default: the backend's, or $OPENAI_BASE_URL / $ANTHROPIC_BASE_URL",
    )
    api_key_env: str | None = Field(
        None, description="env var holding the API key (default OPENAI_API_KEY / ANTHROPIC_API_KEY)"
    )
    transport: Literal["direct", "sdk"] = Field(
        "direct",
        description="openai/vllm/anthropic requests: 'direct' (one aiohttp session, lowest "
        "overhead, no SDK import) or 'sdk' (through openai.AsyncOpenAI / anthropic.AsyncAnthropic)",
    )
    mode: Literal["online", "batch"] = Field(
        "online",
        description="'online' (one request per call) or 'batch' (the OpenAI Batch / Anthropic "
        "Message Batches API: half price, answers within hours; openai and anthropic only)",
    )
    batch: BatchSettings = Field(
        default_factory=BatchSettings, description="`mode: batch` settings"
    )
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(2048, ge=1, le=1_000_000, description="max output tokens per request")
    seed: int | None = Field(None, description="sampling seed where the backend supports it")
    stop: list[str] = Field(default_factory=list, description="stop sequences")
    concurrency: int = Field(64, ge=1, le=8192, description="max requests in flight")
    requests_per_minute: float | None = Field(None, gt=0, description="RPM limit (token bucket)")
    input_tokens_per_minute: float | None = Field(None, gt=0, description="input TPM limit")
    output_tokens_per_minute: float | None = Field(None, gt=0, description="output TPM limit")
    timeout_s: float = Field(120, gt=0, description="per-request timeout")
    max_retries: int = Field(8, ge=0, le=100, description="retries for 429/5xx/timeouts/bad bodies")
    max_length_retries: int = Field(
        1, ge=0, le=10, description="retries when the answer is cut off (finish_reason=length)"
    )
    max_parse_retries: int = Field(
        2, ge=0, le=10, description="retries after a reply with no text (empty content)"
    )
    backoff_initial_s: float = Field(
        0.5, gt=0, description="first retry wait (doubles, with jitter)"
    )
    backoff_max_s: float = Field(60, gt=0, description="longest retry wait")
    replica_max_failures: int = Field(
        5, ge=1, description="consecutive failures that take a replica out of rotation"
    )
    replica_cooldown_s: float = Field(30, gt=0, description="how long a failing replica rests")
    cache: bool = Field(True, description="use the on-disk response cache")
    cache_path: str = Field(
        default_factory=default_cache_path,
        description="SQLite response cache (default: $DISTILLERY_CACHE_DIR or ~/.cache/distillery)",
    )
    cache_namespace: str = Field(
        "",
        description="added to cache keys: set it when two servers serve different weights under one name",
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="price overrides per model name (USD per 1M tokens)"
    )
    max_cost_usd: float | None = Field(
        None, gt=0, description="stop cleanly once this much is spent"
    )
    expected_output_tokens: int | None = Field(
        None, ge=1, description="for the cost projection; default max_tokens/4"
    )
    vllm: VLLMServe = Field(default_factory=VLLMServe, description="`vllm:` server settings")
    hf: HFLocal = Field(default_factory=HFLocal, description="`hf:` local generation settings")

    @field_validator("spec", mode="before")
    @classmethod
    def _spec_as_text(cls, value: object) -> object:
        """`--teacher openai:` reaches here as the YAML mapping {openai: null}: read it back
        as the text it was typed as, so the error says what is missing."""
        if isinstance(value, dict) and len(value) == 1:
            ((backend, model),) = value.items()
            if model is None or isinstance(model, (str, int, float)):
                return f"{backend}:{'' if model is None else model}"
        return value

    @field_validator("spec")
    @classmethod
    def _check_spec(cls, value: str | None) -> str | None:
        if value is None:
            return value
        backend, sep, model = value.partition(":")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if backend == "fake":
            return value
        if not sep or not model.strip():
            raise ValueError(
                f"the model name is missing in {value!r}: expected {backend}:MODEL, "
                "e.g. openai:gpt-4o-mini"
            )
        return value

    @model_validator(mode="after")
    def _batch_backends(self) -> TeacherConfig:
        if self.mode == "batch" and self.spec and self.backend not in ("openai", "anthropic"):
            raise ValueError(
                f"mode: batch needs an openai: or anthropic: teacher, not {self.spec!r}"
            )
        return self

    @property
    def backend(self) -> str:
        return (self.spec or "").partition(":")[0]

    @property
    def model(self) -> str:
        return (self.spec or "").partition(":")[2]
