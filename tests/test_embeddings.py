"""`distillery.embeddings.embed` cuts texts into length-sorted batches under a token budget:
every text is embedded once, its vector comes back in its own row, and the vectors equal one
plain `encode` call's. A tiny random BERT built in the test stands in for MiniLM."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distillery import embeddings

WORDS = [f"w{i}" for i in range(60)]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 2-layer BERT with random weights and a word-level vocabulary, loaded by
    sentence-transformers (mean pooling), truncating at MAX_TOKENS."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizer

    d: Path = tmp_path_factory.mktemp("tiny_bert")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    BertTokenizer(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(d)
    model = SentenceTransformer(str(d), device="cpu")
    model.max_seq_length = MAX_TOKENS
    return model


def texts_of_mixed_length(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(n)]


def test_length_batches_cover_every_index_once_within_the_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500)
    batches = embeddings.length_batches(lengths, batch_size=16, token_budget=256)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    assert (np.diff(lengths[flat]) >= 0).all()  # shortest first
    for idx in batches:
        assert len(idx) <= 16
        # a batch over the budget is one item longer than the budget on its own
        assert len(idx) * lengths[idx].max() <= 256 or len(idx) == 1
    assert max(len(i) for i in batches) == 16  # short texts fill whole batches


def test_length_batches_of_nothing_and_of_zero_lengths() -> None:
    assert embeddings.length_batches(np.array([], dtype=np.int64), 8, 64) == []
    batches = embeddings.length_batches(np.zeros(5, dtype=np.int64), 2, 64)
    assert [len(b) for b in batches] == [2, 2, 1]


def test_token_lengths_count_special_tokens_and_truncate(tiny_model: Any) -> None:
    lengths = embeddings.token_lengths(tiny_model, ["w1", "w1 w2 w3", " ".join(WORDS)])
    assert lengths.tolist() == [3, 5, MAX_TOKENS]  # [CLS] ... [SEP], capped


@pytest.mark.parametrize("workers", [1, 2])
def test_embed_restores_input_order_and_equals_one_plain_encode(
    tiny_model: Any, workers: int
) -> None:
    import torch

    texts = texts_of_mixed_length(60)
    calls: list[list[str]] = []
    preprocess = tiny_model.preprocess

    def spy(batch: list[str], **kwargs: Any) -> Any:
        calls.append(list(batch))
        return preprocess(batch, **kwargs)

    threads = torch.get_num_threads()
    tiny_model.preprocess = spy
    try:
        vecs = embeddings.embed(tiny_model, texts, batch_size=8, token_budget=64, workers=workers)
    finally:
        del tiny_model.preprocess
    assert torch.get_num_threads() == threads  # restored after the worker threads
    plain = np.asarray(
        tiny_model.encode(texts, batch_size=64, normalize_embeddings=True), dtype=np.float32
    )
    assert vecs.dtype == np.float32 and vecs.shape == plain.shape
    np.testing.assert_allclose(vecs, plain, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # the texts really went in several short, length-homogeneous batches
    assert len(calls) > len(texts) / 8
    assert sorted(t for batch in calls for t in batch) == sorted(texts)
    for batch in calls:
        lengths = embeddings.token_lengths(tiny_model, batch)
        assert len(batch) <= 8 and (len(batch) * lengths.max() <= 64 or len(batch) == 1)


def test_embed_of_no_texts_and_of_duplicates(tiny_model: Any) -> None:
    assert embeddings.embed(tiny_model, [], token_budget=64).shape == (0, 32)
    vecs = embeddings.embed(tiny_model, ["w1 w2", "w3", "w1 w2"], token_budget=64)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)
    assert not np.allclose(vecs[0], vecs[1])


def test_auto_device_is_the_gpu_only_when_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert embeddings.resolve_device("auto") == "cuda"
    assert embeddings.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert embeddings.resolve_device("auto") == "cpu"
    assert embeddings.resolve_device("cuda:1") == "cuda:1"
