"""What a run's identity leaves out of a teacher section: the settings that decide how
requests are sent, paid for or cached, never what an answer says. A re-run may change
them (more concurrency, a higher budget, another replica URL) and still resume its run;
`distillery.runstate.config_identity` takes the dotted keys this module builds."""

from __future__ import annotations

from collections.abc import Iterable

TEACHER_RUNTIME_FIELDS = (
    "base_urls", "api_key_env", "transport", "concurrency", "requests_per_minute",
    "input_tokens_per_minute", "output_tokens_per_minute", "timeout_s", "max_retries",
    "backoff_initial_s", "backoff_max_s", "replica_max_failures", "replica_cooldown_s",
    "cache", "cache_path", "prices", "max_cost_usd", "expected_output_tokens", "vllm",
    "hf.batch_size", "hf.device", "mode", "batch",
)  # fmt: skip


def teacher_runtime_keys(sections: Iterable[str]) -> list[str]:
    """Dotted keys of `TEACHER_RUNTIME_FIELDS` under each teacher section, e.g. `judge.teacher`."""
    return [f"{s}.{k}" for s in sections for k in TEACHER_RUNTIME_FIELDS]
