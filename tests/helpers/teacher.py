"""Shared pieces for the teacher tests: a loopback server fixture and config builders."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.local import FakeReplica, Script

from tests.helpers.mockserver import MockLLMServer


@pytest.fixture
def server() -> Iterator[MockLLMServer]:
    srv = MockLLMServer().start_in_thread()
    yield srv
    srv.stop_thread()


def stats(srv: MockLLMServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"{srv.base_url}/_stats") as resp:
        return dict(json.load(resp))


def chat_requests(srv: MockLLMServer) -> int:
    requests = stats(srv)["requests"]
    return int(requests.get("/v1/chat/completions", 0) + requests.get("/v1/messages", 0))


def openai_config(srv: MockLLMServer, tmp_path: Path, **kw: Any) -> TeacherConfig:
    base: dict[str, Any] = {
        "spec": "openai:mock-model",
        "base_urls": [f"{srv.base_url}/v1"],
        "cache_path": str(tmp_path / "cache.sqlite"),
        "timeout_s": 5,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "concurrency": 16,
    }
    base.update(kw)
    return TeacherConfig(**base)


def anthropic_config(srv: MockLLMServer, tmp_path: Path, **kw: Any) -> TeacherConfig:
    base: dict[str, Any] = {"spec": "anthropic:mock-model", "base_urls": [srv.base_url]}
    return openai_config(srv, tmp_path, **{**base, **kw})


# Every protocol over every transport: "openai" and "anthropic" are `transport: direct`.
BACKENDS = ("openai", "openai-sdk", "anthropic", "anthropic-sdk")


def backend_config(srv: MockLLMServer, tmp_path: Path, backend: str, **kw: Any) -> TeacherConfig:
    """The config of one of `BACKENDS` against `srv`."""
    protocol, _, sdk = backend.partition("-")
    build = anthropic_config if protocol == "anthropic" else openai_config
    return build(srv, tmp_path, transport=sdk or "direct", **kw)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class ScriptedTeacher(Teacher):
    """A `fake` teacher (no cache) that answers every request with `script` instead of the
    demo's scripted answers: a judge that always says "A", a teacher that always fails."""

    def __init__(self, script: Script, **config: Any) -> None:
        super().__init__(TeacherConfig(**{"spec": "fake", "cache": False, **config}))
        self.script = script

    def _build_replicas(self) -> list[Any]:
        return [FakeReplica(self.script)]
