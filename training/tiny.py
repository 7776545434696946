"""A tiny causal LM made on the spot, for the offline demo and tests: a byte-level BPE
tokenizer trained on a few sentences and a randomly initialised Llama. Nothing is downloaded;
it learns nothing useful - it exists so every training and eval code path can run on a CPU."""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHATML = Path(__file__).resolve().parent / "chat_templates" / "chatml.jinja"


def build_tokenizer(
    corpus: Iterable[str],
    *,
    specials: tuple[str, ...] = ("<|im_start|>", "<|im_end|>"),
    eos: str = "<|im_end|>",
    bos: str | None = None,
    template: str | None = None,
    vocab_size: int = 400,
    trim_offsets: bool = False,
    sentencepiece: bool = False,
) -> Any:
    """A byte-level BPE (GPT-2/Llama-3/Qwen style). `trim_offsets` adds a ByteLevel
    post-processor that trims whitespace from offsets (as RoBERTa-style and many converted
    tokenizers do): all-space tokens get zero width. `sentencepiece` makes a Metaspace BPE
    instead (Llama-2/Mistral style: words carry a leading "▁", only the text's first word
    gets one prepended; characters beyond the corpus and printable ASCII are `<unk>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(corpus)
    if sentencepiece:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
        alphabet = sorted(set("".join(corpus)) | set(string.printable))
        specials = ("<unk>", *specials)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|pad|>", *specials], initial_alphabet=alphabet
    )
    tok.train_from_iterator(corpus, trainer)
    if trim_offsets:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos,
        pad_token="<|pad|>",
        bos_token=bos,
        unk_token="<unk>" if sentencepiece else None,
    )
    fast.chat_template = template if template is not None else CHATML.read_text()
    return fast


def build_tiny_lm(
    directory: Path,
    tokenizer: Any,
    stop: str = "<|im_end|>",
    seed: int = 0,
    width: int = 32,
    layers: int = 2,
) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.convert_tokens_to_ids(stop),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
