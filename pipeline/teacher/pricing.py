"""Token prices and cost arithmetic.

`DEFAULT_PRICES` holds list prices in USD per 1M tokens (input, output) as published by
the providers; they change, so check them and override any model in the teacher config
(`prices: {MODEL: {input_per_mtok: .., output_per_mtok: ..}}`). Models not in the table
(local vLLM, hf, fake) cost 0 unless a price is configured.

Batch prices (`teacher.mode: batch`) are a column of their own: OpenAI's Batch API and
Anthropic's Message Batches bill every token at half the online rate, so the column is
`teacher.batch.discount` (0.5) times the online price unless a model's configured `Price`
sets `batch_input_per_mtok` / `batch_output_per_mtok`.
"""

from __future__ import annotations

from distillery.teacher.config import Price, TeacherConfig
from distillery.teacher.types import ChatRequest

PRICES_AS_OF = "2025-08"
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4-0": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku-latest": (0.80, 4.00),
}


def price_for(
    config: TeacherConfig, model: str | None = None, batch: bool | None = None
) -> Price | None:
    """The model's price; with `batch` (default: `config.mode == "batch"`) its batch column
    as the price (input and output per 1M tokens)."""
    model = model or config.model
    price: Price | None = None
    if model in config.prices:
        price = config.prices[model]
    elif model in DEFAULT_PRICES:
        i, o = DEFAULT_PRICES[model]
        price = Price(input_per_mtok=i, output_per_mtok=o)
    if price is None or not (config.mode == "batch" if batch is None else batch):
        return price
    share = config.batch.discount
    return Price(
        input_per_mtok=_or(price.batch_input_per_mtok, price.input_per_mtok * share),
        output_per_mtok=_or(price.batch_output_per_mtok, price.output_per_mtok * share),
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def cost(price: Price | None, input_tokens: int, output_tokens: int) -> float:
    if price is None:
        return 0.0
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters per token for English)."""
    return max(1, len(text) // 4)


def request_tokens(request: ChatRequest) -> int:
    """The estimated input tokens of a request: its messages and its raw prompt, if any."""
    n_in = sum(estimate_tokens(m["content"]) for m in request.messages)
    return n_in + (estimate_tokens(request.prompt) if request.prompt is not None else 0)
