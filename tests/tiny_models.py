"""Tiny causal LMs built on the spot: a byte-level BPE tokenizer trained locally and a
randomly initialised Llama - no hub, no downloads."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "chat_templates"
CHATML = (TEMPLATES / "chatml.jinja").read_text()
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Write a short poem about the sea and the sky.",
    "Explain recursion to a beginner with one example.",
    "def add(a, b): return a + b",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Hello! How can I help you today? Sure, here are three ideas.",
] * 20


@dataclass(frozen=True)
class Family:
    template: str
    specials: tuple[str, ...]
    eos: str
    stop: str
    bos: str | None = None


FAMILIES = {
    "chatml": Family(
        "chatml.jinja", ("<|im_start|>", "<|im_end|>", "<|endoftext|>"), "<|im_end|>", "<|im_end|>"
    ),
    "llama3": Family(
        "llama3.jinja",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|eot_id|>",
        "<|eot_id|>",
        bos="<|begin_of_text|>",
    ),
    "mistral": Family("mistral.jinja", ("<s>", "</s>"), "</s>", "</s>", bos="<s>"),
    "gemma": Family(
        "gemma.jinja",
        ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
        "<eos>",
        "<end_of_turn>",
        bos="<bos>",
    ),
    "phi3": Family(
        "phi3.jinja",
        ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
        "<|endoftext|>",
        "<|end|>",
    ),
    "qwen25": Family(
        "qwen25.jinja", ("<|im_start|>", "<|im_end|>", "<|endoftext|>"), "<|im_end|>", "<|im_end|>"
    ),
    "qwen3": Family(
        "qwen3.jinja", ("<|im_start|>", "<|im_end|>", "<|endoftext|>"), "<|im_end|>", "<|im_end|>"
    ),
    "llama31": Family(
        "llama31.jinja",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|eot_id|>",
        "<|eot_id|>",
        bos="<|begin_of_text|>",
    ),
    "mistral_v7": Family(
        "mistral_v7.jinja",
        (
            *("<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"),
            *("[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"),
        ),
        "</s>",
        "</s>",
        bos="<s>",
    ),
    "phi4": Family(
        "phi4.jinja",
        ("<|im_start|>", "<|im_sep|>", "<|im_end|>", "<|endoftext|>"),
        "<|endoftext|>",
        "<|im_end|>",
    ),
    "deepseek_r1": Family(
        "deepseek_r1.jinja",
        ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"),
        "<｜end▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
        bos="<｜begin▁of▁sentence｜>",
    ),
    "chatml_generation": Family(
        "chatml_generation.jinja",
        ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
        "<|endoftext|>",
        "<|im_end|>",
    ),
}


@functools.cache
def _cached(family: str, vocab_size: int, trim_offsets: bool, sentencepiece: bool):  # type: ignore[no-untyped-def]
    from distillery.training.tiny import build_tokenizer as build

    fam = FAMILIES[family]
    return build(
        CORPUS,
        specials=fam.specials,
        eos=fam.eos,
        bos=fam.bos,
        template=(TEMPLATES / fam.template).read_text(),
        vocab_size=vocab_size,
        trim_offsets=trim_offsets,
        sentencepiece=sentencepiece,
    )


def build_tokenizer(  # type: ignore[no-untyped-def]
    family: str = "chatml",
    vocab_size: int = 400,
    trim_offsets: bool = False,
    sentencepiece: bool = False,
):
    """A fresh copy of the family's tokenizer (trained once per process); byte-level BPE,
    or a sentencepiece-style Metaspace BPE."""
    import copy

    return copy.deepcopy(_cached(family, vocab_size, trim_offsets, sentencepiece))


def build_tiny_lm(directory: Path, family: str = "chatml", seed: int = 0) -> Path:
    from distillery.training.tiny import build_tiny_lm as build

    return build(directory, build_tokenizer(family), stop=FAMILIES[family].stop, seed=seed)
