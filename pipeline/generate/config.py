"""`distillery generate` settings: Self-Instruct, Alpaca, Magpie, Evol-Instruct, responses,
conversations, teachers per role."""

from __future__ import annotations

from typing import Literal

from distillery.config import Section
from distillery.executors.config import Executor, RayConfig
from distillery.teacher.config import TeacherConfig
from pydantic import Field, field_validator, model_validator

EVOL_OPERATIONS = (
    "add_constraints",
    "deepen",
    "concretize",
    "increase_reasoning",
    "complicate_input",
    "breadth",
)
# Self-Instruct's filter list (Wang et al. 2022): things a text-only model cannot do.
MODALITY_TERMS = [
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
]  # fmt: skip
SCAFFOLD_PHRASES = [
    "#rewritten prompt#", "#given prompt#", "#created prompt#", "given prompt", "rewritten prompt",
    "created prompt", "original prompt", "the original instruction", "rewritten instruction",
]  # fmt: skip
STOP_WORDS = sorted(set([
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
    "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
    "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for",
    "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself",
    "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just",
    "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she",
    "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves",
    "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until",
    "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom",
    "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "ok", "okay",
    "yes", "sure", "well", "oh"
]))  # fmt: skip


class SelfInstructConfig(Section):
    """Self-Instruct bootstrapping (Wang et al., 2022)."""

    num_base_instructions: int | None = Field(
        None, ge=1, description="new instructions to bootstrap; default: target / (1 + evol.rounds)"
    )
    seed_tasks_in_prompt: int = Field(6, ge=0, le=32, description="in-context tasks from the seeds")
    generated_tasks_in_prompt: int = Field(
        2, ge=0, le=32, description="in-context tasks from the generated pool, once it has any"
    )
    new_tasks_per_prompt: int = Field(8, ge=1, le=64, description="tasks asked for per call")
    prompts_per_batch: int = Field(
        16, ge=1, le=4096, description="calls per bootstrap step (the pool updates between steps)"
    )
    max_steps: int = Field(
        200, ge=1, description="give up after this many steps without reaching the target"
    )
    rouge_l_threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="novelty threshold: ROUGE-L F1 of a new instruction vs any pool member",
    )
    rouge_l_reject_if: Literal[">", ">="] = Field(
        ">",
        description="drop a new instruction whose ROUGE-L F1 is '>' the threshold (Self-Instruct's "
        "code; rouge-score's float arithmetic decides ties) or '>=' it",
    )
    min_words: int = Field(4, ge=1, description="drop instructions with fewer words (paper: <= 3)")
    max_words: int = Field(150, ge=1, description="drop instructions with more words")
    modality_terms: list[str] = Field(
        default_factory=lambda: list(MODALITY_TERMS),
        description="drop instructions mentioning these",
    )
    classify_examples: int = Field(
        12, ge=2, le=64, description="few-shot seeds shown when identifying classification tasks"
    )
    instance_examples: int = Field(
        3, ge=1, le=16, description="seed examples shown for instance generation"
    )
    max_instances: int = Field(3, ge=1, le=10, description="instances asked for per instruction")


class AlpacaConfig(Section):
    """Alpaca-style batched generation (Taori et al., 2023): tasks with input and output per call."""

    tasks_per_call: int = Field(20, ge=1, le=100, description="tasks asked for per call")
    examples_in_prompt: int = Field(3, ge=1, le=16, description="seed tasks shown per call")


class EvolConfig(Section):
    """Evol-Instruct (Xu et al., 2023)."""

    rounds: int = Field(3, ge=0, le=10, description="evolution rounds; 0 disables evolution")
    operations: dict[str, float] = Field(
        default_factory=lambda: dict.fromkeys(EVOL_OPERATIONS, 1.0),
        description="operation -> sampling weight (in-depth ops and 'breadth')",
    )
    min_added_words: int = Field(10, ge=0, description="in-depth ops add at least this many words")
    max_added_words: int = Field(20, ge=1, description="in-depth ops add at most this many words")
    sorry_max_words: int = Field(
        80, ge=1, description="rule 2: 'sorry' in an answer shorter than this"
    )
    scaffold_phrases: list[str] = Field(
        default_factory=lambda: list(SCAFFOLD_PHRASES),
        description="rule 4: leaked rewriting scaffold",
    )
    stop_words: list[str] = Field(
        default_factory=lambda: list(STOP_WORDS), description="rule 3: answers made only of these"
    )
    equality_check: bool = Field(True, description="rule 1: a teacher call checks information gain")

    @model_validator(mode="after")
    def _check_operations(self) -> EvolConfig:
        unknown = set(self.operations) - set(EVOL_OPERATIONS)
        if unknown:
            raise ValueError(
                f"unknown operation(s) {sorted(unknown)}; known: {', '.join(EVOL_OPERATIONS)}"
            )
        if any(w < 0 for w in self.operations.values()) or not any(self.operations.values()):
            raise ValueError("operation weights must be >= 0 with at least one > 0")
        if self.min_added_words > self.max_added_words:
            raise ValueError("min_added_words > max_added_words")
        return self


class CategoryConfig(Section):
    """Categories for generated rows, from the seed set's categories: a new instruction gets
    the category whose seeds it is most similar to (evolutions keep their parent's)."""

    method: Literal["embedding", "rouge", "none"] = Field(
        "embedding",
        description="'embedding': nearest category centroid of sentence embeddings (needs the "
        "filter extra); 'rouge': highest mean ROUGE-L F1 to a category's 3 most similar seeds "
        "(no extra dependency); 'none': generated rows have no category",
    )
    model: str = Field(
        "bundled:all-MiniLM-L6-v2",
        description="sentence-transformers model for 'embedding' ('bundled:' = the offline copy)",
    )


class ResponseConfig(Section):
    """How the responder answers each instruction."""

    system_template: str | None = Field(
        "response_system",
        description="prompt file used as the system message (None: no system message)",
    )
    step_by_step_template: str = Field(
        "response_step_by_step", description="system prompt file for step_by_step_categories"
    )
    step_by_step_categories: list[str] = Field(
        default_factory=lambda: ["math_word_problems", "reasoning", "data_analysis"],
        description="categories answered with the step-by-step system prompt",
    )
    system_templates: dict[str, str] = Field(
        default_factory=dict,
        description="category -> prompt file used as that category's system message",
    )
    keep_system_in_rows: bool = Field(
        False, description="keep the system message in the training rows"
    )


class Sampling(Section):
    """Sampling parameters of one stage's requests (they override the teacher's)."""

    temperature: float = Field(1.0, ge=0, le=2, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int = Field(512, ge=1, le=1_000_000, description="max output tokens per request")


class InstructionSampling(Sampling):
    """Magpie's draws (the paper's): a key left out keeps this default, not `Sampling`'s."""

    max_tokens: int = Field(256, ge=1, le=1_000_000, description="max output tokens per request")


class ResponseSampling(Sampling):
    """Magpie's answers, greedy as in the paper: a key left out keeps this default."""

    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(1024, ge=1, le=1_000_000, description="max output tokens per request")


class MagpieCategory(Section):
    """One category of Magpie rows: its share of the rows and its own system prompt."""

    weight: float = Field(1.0, gt=0, description="share of the rows (weights are normalised)")
    system_prompt: str | None = Field(
        None, description="system prompt that steers this category (default: magpie.system_prompt)"
    )


class MagpieConfig(Section):
    """Magpie (Xu et al., 2024): an aligned model given only its chat template's pre-query
    text writes a user instruction; the response teacher answers it."""

    tokenizer: str | None = Field(
        None,
        description="hub name or local path of the tokenizer whose chat template gives the "
        "pre-query text (default: the teacher's model)",
    )
    system_prompt: str | None = Field(
        None, description="system prompt of every conversation (Magpie's way to steer topics)"
    )
    categories: dict[str, MagpieCategory] = Field(
        default_factory=dict,
        description="target mix: category -> weight and system prompt (empty: one mix)",
    )
    instruction: InstructionSampling = Field(
        default_factory=InstructionSampling,
        description="sampling of the instructions (and of later user turns)",
    )
    response: ResponseSampling = Field(
        default_factory=ResponseSampling,
        description="sampling of the responses (the paper answers greedily)",
    )
    oversample: float = Field(
        1.5, ge=1, le=20, description="candidates drawn per missing row (filters drop some)"
    )
    max_rounds: int = Field(
        6, ge=1, le=100, description="draw rounds before giving up on the target"
    )
    min_words: int = Field(3, ge=1, description="drop instructions with fewer words")
    max_words: int = Field(300, ge=1, description="drop instructions with more words")
    max_repetition: float = Field(
        0.3,
        ge=0,
        le=1,
        description="drop an instruction or response whose share of repeated word 3-grams "
        "is above this (Magpie's repetition filter)",
    )
    language: str | None = Field(
        "en",
        description="keep instructions langdetect identifies as this language code "
        "(None: no check)",
    )
    tags: bool = Field(
        True,
        description="tag each row's first instruction (task category, input quality, "
        "difficulty) into meta.tags with tag_teacher",
    )

    @model_validator(mode="after")
    def _check_words(self) -> MagpieConfig:
        if self.min_words > self.max_words:
            raise ValueError("min_words > max_words")
        return self


MAX_TURNS = 20


class ConversationConfig(Section):
    """Multi-turn rows: after the first answer the next user turn comes from the user
    simulator (`user_teacher`), or for Magpie from the model itself."""

    turns: int | list[int] = Field(
        1,
        description=f"user turns per conversation: N, or [MIN, MAX] drawn per row "
        f"(1..{MAX_TURNS}); the simulated user may end a conversation earlier",
    )

    @field_validator("turns", mode="before")
    @classmethod
    def _whole_numbers(cls, value: object) -> object:
        """Whole numbers only, one message for every wrong type (was: `true` taken as 1, and
        2.5 reported under `conversation.turns.int`)."""
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in items):
            raise ValueError(f"turns must be N or [MIN, MAX], whole numbers from 1 to {MAX_TURNS}")
        return value

    @field_validator("turns")
    @classmethod
    def _check_turns(cls, value: int | list[int]) -> int | list[int]:
        bounds = [value] if isinstance(value, int) else value
        if len(bounds) not in (1, 2) or not all(1 <= t <= MAX_TURNS for t in bounds):
            raise ValueError(f"turns must be N or [MIN, MAX] with 1 <= N <= {MAX_TURNS}")
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            raise ValueError(f"turns [MIN, MAX] has MIN {bounds[0]} > MAX {bounds[1]}")
        return value

    @property
    def range(self) -> tuple[int, int]:
        """(fewest, most) user turns."""
        t = self.turns
        return (t, t) if isinstance(t, int) else (t[0], t[-1])


class GenerateConfig(Section):
    """`distillery generate`: seeds in, (instruction, response) rows with lineage out."""

    seeds: str = Field(
        "builtin",
        description="seed file, directory of .jsonl files, hf:DATASET[:SPLIT], or 'builtin' "
        "(the 220 seeds shipped with distillery)",
    )
    output_dir: str = Field("runs", description="runs are written to OUTPUT_DIR/RUN_ID/")
    run_id: str | None = Field(
        None,
        description="default: a hash of the settings that decide the rows (not concurrency, "
        "budget, ...), so a re-run of the same work resumes",
    )
    num_instructions: int = Field(
        100, ge=1, le=10_000_000, description="target number of finished rows"
    )
    method: Literal["self_instruct", "alpaca", "magpie"] = Field(
        "self_instruct",
        description="how base instructions are made: Self-Instruct or Alpaca from the seeds, "
        "or Magpie from a local model's chat template (no seeds)",
    )
    max_top_ups: int = Field(
        3,
        ge=0,
        le=20,
        description="extra bootstrap passes when eliminations leave fewer rows than the target",
    )
    include_seeds: bool = Field(
        False, description="also emit the seed tasks as rows (origin 'seed')"
    )
    seed: int = Field(0, description="random seed for every sampling decision")
    quiet: bool = Field(False, description="no live progress lines")
    executor: Executor = Field(
        "local", description="local: this process; ray: the teacher calls answered by Ray actors"
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="the Ray cluster (executor ray)")
    teacher: TeacherConfig = Field(
        default_factory=TeacherConfig, description="default teacher for every role"
    )
    evol_teacher: TeacherConfig | None = Field(
        None, description="teacher for evolution (default: teacher)"
    )
    response_teacher: TeacherConfig | None = Field(
        None, description="teacher for responses (default: teacher)"
    )
    tag_teacher: TeacherConfig | None = Field(
        None, description="teacher for Magpie's tags (default: teacher)"
    )
    user_teacher: TeacherConfig | None = Field(
        None, description="teacher playing the user in conversations (default: teacher)"
    )
    self_instruct: SelfInstructConfig = Field(
        default_factory=SelfInstructConfig, description="Self-Instruct"
    )
    alpaca: AlpacaConfig = Field(default_factory=AlpacaConfig, description="Alpaca batched mode")
    magpie: MagpieConfig = Field(default_factory=MagpieConfig, description="Magpie")
    conversation: ConversationConfig = Field(
        default_factory=ConversationConfig, description="multi-turn conversations"
    )
    evol: EvolConfig = Field(default_factory=EvolConfig, description="Evol-Instruct")
    responses: ResponseConfig = Field(default_factory=ResponseConfig, description="responses")
    categories: CategoryConfig = Field(
        default_factory=CategoryConfig, description="categories of generated rows"
    )

    @model_validator(mode="after")
    def _no_batch_on_ray(self) -> GenerateConfig:
        roles = ("teacher", "evol_teacher", "response_teacher", "tag_teacher", "user_teacher")
        for name in roles:
            role = getattr(self, name)
            if self.executor == "ray" and role is not None and role.mode == "batch":
                raise ValueError(
                    f"{name}.mode batch hands each job to the provider's batch API from one "
                    "process: run it with executor local"
                )
        return self
