"""Tiny causal LMs built on the spot: a byte-level BPE tokenizer trained locally and a
randomly initialised Llama - no hub, no downloads."""

from __future__ import annotations

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
}


def build_tokenizer(family: str = "chatml", vocab_size: int = 400):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    fam = FAMILIES[family]
    specials = ["<|pad|>", *fam.specials]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=fam.eos, pad_token="<|pad|>", bos_token=fam.bos
    )
    fast.chat_template = (TEMPLATES / fam.template).read_text()
    return fast


def build_tiny_lm(directory: Path, family: str = "chatml", seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(family)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.convert_tokens_to_ids(FAMILIES[family].stop),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
