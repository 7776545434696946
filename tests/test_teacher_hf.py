"""`hf:` teacher: local transformers generation with batching, on a tiny model built here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from distillery.errors import UserError
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.local import HFReplica
from distillery.teacher.types import ChatRequest

from tests.tiny_models import build_tiny_lm


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny") / "lm")


def test_hf_teacher_batches_concurrent_requests(
    tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    original = HFReplica._generate

    def counting(self, conversations, params):
        batches.append(len(conversations))
        return original(self, conversations, params)

    monkeypatch.setattr(HFReplica, "_generate", counting)
    config = TeacherConfig(
        spec=f"hf:{tiny_lm}",
        temperature=0.0,
        max_tokens=6,
        cache=False,
        max_length_retries=0,
        hf={"batch_size": 4, "device": "cpu"},
    )
    prompts = [
        "Explain recursion.",
        "Write a poem about the sea.",
        "Capital of France?",
        "def add(a, b):",
        "The quick brown fox",
        "Berlin is",
    ]

    async def go():
        async with Teacher(config) as teacher:
            first = await asyncio.gather(
                *(teacher.complete(ChatRequest([{"role": "user", "content": p}])) for p in prompts)
            )
            again = await teacher.complete(ChatRequest([{"role": "user", "content": prompts[0]}]))
            return first, again

    results, again = asyncio.run(go())
    assert max(batches) > 1 and sum(batches[: len(batches) - 1]) == len(prompts)
    for res in results:
        # a random model rarely says <|im_end|>: cut-off answers are recorded as failed, text kept
        assert res.text is not None and res.finish_reason in ("stop", "length")
        assert res.usage.output_tokens <= 6 and res.usage.input_tokens > 0
        assert (res.status == "ok") == (res.finish_reason == "stop")
    assert again.text == results[0].text  # greedy decoding is deterministic, batched or alone


def test_hf_teacher_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    config = TeacherConfig(spec=f"hf:{tmp_path / 'absent'}", cache=False)
    with pytest.raises(UserError, match="cannot load model"):
        asyncio.run(Teacher(config).start())
