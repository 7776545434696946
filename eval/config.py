"""`distillery eval ifeval|winrate|harness` settings: the models as teacher sections, the files
read, and the lm-evaluation-harness run (`harness`).

The model under evaluation (`student`), the `baseline` and the pairwise `judge` are full
teacher sections (servers, concurrency, key variable, budget, prices, cache), with eval's
defaults: greedy decoding for the models whose answers are scored, a deterministic judge.
The CLI flags (`--student`, `--judge`, `--instructions`, ...) are shorthands for keys here;
`distillery config eval` prints the reference.
"""

from __future__ import annotations

from typing import Literal

from distillery.config import Section
from distillery.teacher.config import TeacherConfig
from pydantic import Field


class AnsweringModel(TeacherConfig):
    """A model whose answers are scored: greedy, and a cut-off answer is scored as it is."""

    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy)")
    max_tokens: int = Field(
        1024, ge=1, le=1_000_000, description="generation limit per answer (--max-tokens)"
    )
    max_length_retries: int = Field(
        0, ge=0, le=10, description="retries of a cut-off answer (0: it is scored as it is)"
    )


class JudgeModel(TeacherConfig):
    """The pairwise judge: deterministic, with room for a short explanation."""

    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(1024, ge=1, le=1_000_000, description="max output tokens per verdict")


class IFEvalFiles(Section):
    """What `eval ifeval` reads."""

    inputs: str | None = Field(None, description="IFEval input_data.jsonl (key, prompt, ...)")
    responses: str | None = Field(
        None, description="prompt, response JSONL; default: generate them with student.spec"
    )


class WinrateFiles(Section):
    """What `eval winrate` reads; a side without a file is generated with its model."""

    instructions: str | None = Field(
        None, description="JSONL of instructions (id, instruction[, input])"
    )
    field: str = Field("instruction", min_length=1, description="the instruction field name")
    student_responses: str | None = Field(
        None, description="id, response JSONL of the student; default: generate with student.spec"
    )
    baseline_responses: str | None = Field(
        None, description="id, response JSONL of the baseline; default: generate with baseline.spec"
    )


class HarnessSettings(Section):
    """What `eval harness` runs: lm-evaluation-harness tasks on the student and its base."""

    model: str | None = Field(None, description="the student: a local model dir or hub name")
    base: str | None = Field(
        None, description="its base model, scored on the same items (the forgetting table)"
    )
    tasks: list[str] = Field(
        default_factory=list, description="lm_eval task or group names, e.g. [mmlu, gsm8k]"
    )
    include_path: str | None = Field(
        None, description="a folder of extra task YAMLs (local tasks and data)"
    )
    backend: Literal["hf", "vllm"] = Field("hf", description="lm_eval model backend")
    model_args: str = Field(
        "", description="extra lm_eval model_args, e.g. dtype=bfloat16,max_length=4096"
    )
    num_fewshot: int | None = Field(
        None, ge=0, le=64, description="few-shot examples (default: each task's own)"
    )
    limit: int | None = Field(
        None, ge=1, description="score only the first N items of each task (a quick look)"
    )
    apply_chat_template: bool = Field(
        False, description="wrap prompts in the model's chat template (instruction-tuned models)"
    )
    batch_size: int = Field(8, ge=1, le=4096, description="lm_eval batch size")
    device: str | None = Field(None, description="cuda, cuda:1, cpu (default: cuda if present)")
    samples: int = Field(
        3, ge=0, le=100, description="sample prompts and answers kept per task for the report"
    )


class EvalConfig(Section):
    """`distillery eval ifeval|winrate|harness`; the resolved config is saved beside the
    results."""

    output_dir: str | None = Field(None, description="where results, journals and config go")
    student: AnsweringModel = Field(
        default_factory=AnsweringModel,
        description="the model under evaluation (--student, ifeval --model), e.g. hf:PATH",
    )
    baseline: AnsweringModel = Field(
        default_factory=AnsweringModel, description="winrate's baseline model (--baseline)"
    )
    judge: JudgeModel = Field(
        default_factory=JudgeModel,
        description="winrate's pairwise judge (--judge), e.g. anthropic:claude-haiku-4-5",
    )
    ifeval: IFEvalFiles = Field(default_factory=IFEvalFiles, description="eval ifeval inputs")
    winrate: WinrateFiles = Field(default_factory=WinrateFiles, description="eval winrate inputs")
    harness: HarnessSettings = Field(
        default_factory=HarnessSettings, description="eval harness: lm-evaluation-harness tasks"
    )
