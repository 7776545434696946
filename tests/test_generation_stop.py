"""A trained student stops generating where it was trained to end its turn: the saved
generation config lists the template's end-of-turn token (Phi-3's `<|end|>`, whose eos is
`<|endoftext|>`), and the `hf:` teacher cuts answers there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distillery.teacher.config import TeacherConfig
from distillery.teacher.local import HFReplica

from tests.test_training import conversations, run_cli, write_data
from tests.tiny_models import build_tiny_lm


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_saved_students_stop_on_the_end_of_turn_token(tmp_path: Path, mode: str) -> None:
    from transformers import AutoTokenizer

    lm = build_tiny_lm(tmp_path / "phi3", family="phi3")
    data = write_data(tmp_path / "d.jsonl", conversations(4))
    extra = ["mode=full"] if mode == "full" else ["mode=lora", "merge=true"]
    assert run_cli(lm, data, tmp_path / "out", *extra, "max_steps=1", "batch_size=1") == 0
    saved = tmp_path / "out" / ("model" if mode == "full" else "merged")
    tokenizer = AutoTokenizer.from_pretrained(saved)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end != tokenizer.eos_token_id
    eos = json.loads((saved / "generation_config.json").read_text())["eos_token_id"]
    assert end in (eos if isinstance(eos, list) else [eos])


def test_hf_teacher_cuts_the_answer_at_any_eos_of_the_generation_config(tmp_path: Path) -> None:
    import torch

    lm = build_tiny_lm(tmp_path / "phi3", family="phi3")
    replica = HFReplica(TeacherConfig(spec=f"hf:{lm}"))
    end = replica.tokenizer.convert_tokens_to_ids("<|end|>")
    replica.model.generation_config.eos_token_id = [replica.tokenizer.eos_token_id, end]
    answer = replica.tokenizer(" sea sky", add_special_tokens=False)["input_ids"]

    def generate(input_ids, **kwargs):  # type: ignore[no-untyped-def]
        tail = torch.tensor([*answer, end, end]).repeat(input_ids.shape[0], 1)
        return torch.cat([input_ids, tail], dim=1)  # the model ended its turn with <|end|>

    replica.model.generate = generate  # type: ignore[method-assign]
    params = {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0}
    (result,) = replica._generate([[{"role": "user", "content": "x"}]], params)
    assert result.finish_reason == "stop" and result.text.strip() == "sea sky"
    assert result.output_tokens == len(answer) + 1
