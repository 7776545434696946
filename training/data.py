"""Preparing training data: load conversations, mask, pack. No model is loaded here.

Reads a `messages` column (distillery's kept/generated rows, or any chat data) from JSONL, a
filter or generate run directory, a saved Hugging Face dataset directory, Parquet, or
`hf:NAME[:SPLIT]` (hub or local dataset); several such sources mix (`distillery.training.mix`).
Writes `input_ids`, `labels` (-100 where not supervised, equal to `input_ids` where
supervised) and, for packed rows, `seq_lengths`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from distillery.errors import UserError
from distillery.jsonl import iter_json_lines
from distillery.records import training_messages
from distillery.training.config import TrainConfig
from distillery.training.masking import (
    EndOfTurn,
    MaskingError,
    TemplateRenderError,
    end_of_turn,
    mask_conversation,
)
from distillery.training.packing import pack_examples
from distillery.training.signal import (
    SignalCounts,
    SignalError,
    check_example,
    check_generation_markers,
    has_generation_markers,
)

SAMPLES = 16  # examples kept in PrepStats.samples for the label preview


@dataclass
class PrepStats:
    """Counts from preparation; `as_dict` flows into prepared_stats.json and metrics.json."""

    conversations: int = 0
    examples: int = 0  # training sequences (a split conversation gives several)
    dropped_empty: int = 0
    truncated_examples: int = 0
    truncated_assistant_turns: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    rows: int = 0
    packing_fill: float | None = None
    split_conversations: int = 0  # history-rewriting template: one example per turn
    split_extra_examples: int = 0
    split_extra_tokens: int = 0  # tokens beyond the conversations' one-sequence renderings
    signal_checked_turns: int = 0
    signal_boundary_merges: int = 0
    signal_generation_marked: int = 0
    end_of_turn: str = ""
    # per source of a mix: conversations, examples, dropped_empty, tokens, supervised_tokens
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    # the mix as used (`distillery.training.mix.describe`): one entry per source
    data_mix: list[dict[str, Any]] = field(default_factory=list)
    # the first examples as (where, input_ids, labels), for `write_label_preview`
    samples: list[tuple[str, list[int], list[int]]] = field(default_factory=list, repr=False)

    @property
    def masked_fraction(self) -> float:
        return 1 - self.supervised_tokens / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        hidden = ("samples", "by_source")  # by_source is in data_mix, with the mix's own counts
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
        return {**out, "masked_fraction": round(self.masked_fraction, 4)}


Take = Callable[[Sequence[int]], list[tuple[str, dict[str, Any]]]]


def _dataset_source(ds: Any, where: str) -> tuple[int, Take]:
    if "messages" not in ds.column_names:
        raise UserError(
            f"{where}: the dataset has no 'messages' column (columns: {', '.join(ds.column_names)})"
        )

    def take(indices: Sequence[int]) -> list[tuple[str, dict[str, Any]]]:
        whole = isinstance(indices, range) and indices == range(len(ds))
        chosen = ds["messages"] if whole else ds.select(indices)["messages"]
        return [(f"{where}[{i}]", {"messages": m}) for i, m in zip(indices, chosen, strict=True)]

    return len(ds), take


def run_file(p: Path) -> Path | None:
    """A filter run dir's kept.jsonl, or a generate run dir's generated.jsonl."""
    return next((p / n for n in ("kept.jsonl", "generated.jsonl") if (p / n).is_file()), None)


def open_source(path: str) -> tuple[int, Take]:
    """(rows, take) for a 'messages' source: JSONL, a filter or generate run directory, a
    saved HF dataset directory, Parquet or `hf:NAME[:SPLIT]`; `take(indices)` gives those
    rows as (where, row), reading only them from a dataset (a large hub set stays on disk)."""
    p = Path(path)
    if path.startswith("hf:"):
        from distillery.export import load_hf_dataset

        return _dataset_source(load_hf_dataset(path), path)
    if p.is_dir() and (rows_file := run_file(p)) is not None:
        p = rows_file
    elif p.is_dir():
        from datasets import load_from_disk

        try:
            ds = load_from_disk(str(p))
        except Exception as exc:
            raise UserError(
                f"{p}: not a saved Hugging Face dataset: {str(exc).splitlines()[0]}"
            ) from None
        return _dataset_source(ds, str(p))
    elif p.suffix == ".parquet":
        from datasets import Dataset

        if not p.is_file():
            raise UserError(f"{p}: no such file")
        try:
            ds = Dataset.from_parquet(str(p))
        except Exception as exc:
            raise UserError(
                f"{p}: not a readable Parquet file: {str(exc).splitlines()[0]}"
            ) from None
        return _dataset_source(ds, str(p))
    lines = [(f"{p}:{n}", obj) for n, obj in iter_json_lines(p)]
    return len(lines), lambda indices: [lines[i] for i in indices]


def checked_conversations(
    rows: list[tuple[str, dict[str, Any]]],
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(where, messages) per row, validated; every problem names the file and line."""
    out = []
    for where, obj in rows:
        if obj.get("tools"):
            raise UserError(
                f"{where}: field 'tools' (tool definitions) is not passed to the chat template "
                "by distillery yet; remove it (tool calls and results in 'messages' are)"
            )
        clean = training_messages(obj.get("messages"), where)
        if not any(m["role"] == "assistant" for m in clean):
            raise UserError(f"{where}: no assistant turn to learn from")
        out.append((where, clean))
    return out


def load_conversations(path: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(where, messages) per example, from any source `open_source` reads; every problem
    names the file and line."""
    n, take = open_source(path)
    out = checked_conversations(take(range(n)))
    if not out:
        raise UserError(f"{path}: no examples")
    return out


def load_tokenizer(config: TrainConfig) -> tuple[Any, str | None, EndOfTurn | None]:
    """The student's tokenizer, the chat template to use (None: the tokenizer's) and the
    template's end-of-turn text (derived from a probe turn, or `stop_token`). A template
    given as a file becomes the tokenizer's own, so the model is saved with the template it
    was trained on (and served with it)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"model {config.model!r}: cannot load its tokenizer ({str(exc).splitlines()[0][:120]}); "
            "check the name or path - without internet, download it elsewhere with "
            "`hf download NAME --local-dir DIR` and pass --model DIR"
        ) from None
    template = None
    if config.chat_template:
        path = Path(config.chat_template)
        if not path.is_file():
            raise UserError(f"chat_template {path}: no such file")
        template = path.read_text(encoding="utf-8")
    elif not tokenizer.chat_template:
        raise UserError(
            f"model {config.model!r} has no chat template (a base model?): give one with "
            "--chat-template FILE.jinja, e.g. training/chat_templates/base.jinja (ends each "
            "answer with the tokenizer's eos token)"
        )
    try:
        end: EndOfTurn | None = end_of_turn(tokenizer, template, config.stop_token)
    except TemplateRenderError:
        end = None  # the template renders no probe turn: each row will say why
    except MaskingError as exc:
        raise UserError(f"model {config.model!r}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if template is not None:  # the saved tokenizer renders prompts as the model was trained
        tokenizer.chat_template = template
    return tokenizer, template, end


def _mask_all(
    config: TrainConfig,
    conversations: list[tuple[str, list[dict[str, Any]]]],
    tokenizer: Any,
    template: str | None,
    end: EndOfTurn | None,
    stats: PrepStats,
) -> list[tuple[str, Any, int]]:
    """(where, Example, conversation index) for every training sequence, each signal-checked
    when configured."""
    counts = SignalCounts()
    markers = config.signal_check and has_generation_markers(tokenizer, template)
    out = []
    for index, (where, messages) in enumerate(conversations):
        try:
            masked = mask_conversation(
                tokenizer,
                messages,
                template=template,
                end=end,
                max_length=config.max_length,
                history_rewrite=config.history_rewrite,
            )
        except MaskingError as exc:
            raise UserError(f"{where}: {exc}") from None
        stats.conversations += 1
        if masked.split:
            stats.split_conversations += 1
            stats.split_extra_examples += len(masked.examples) - 1
            stats.split_extra_tokens += masked.extra_tokens
        for ex in masked.examples:
            name = f"{where} (messages[{ex.turns[-1].message}])" if masked.split else where
            if config.signal_check:
                try:
                    check_example(tokenizer, ex, counts)
                    if markers:
                        check_generation_markers(tokenizer, messages, template, ex, counts)
                except SignalError as exc:
                    raise UserError(f"{name}: signal check: {exc}") from None
            out.append((name, ex, index))
    stats.signal_checked_turns = counts.turns
    stats.signal_boundary_merges = counts.boundary_merges
    stats.signal_generation_marked = counts.generation_marked
    return out


def _source_counter(
    stats: PrepStats,
    conversations: Sequence[object],
    source_of: Sequence[str] | None,
) -> Callable[[int, Any], dict[str, int]]:
    """`counts(conversation index, example)`: that source's counters in `stats.by_source`
    (its `examples` counted), or a scratch dict when sources are not tracked."""
    if source_of is None:
        return lambda index, example: {"dropped_empty": 0, "tokens": 0, "supervised_tokens": 0}
    if len(source_of) != len(conversations):
        raise ValueError("source_of needs one source name per conversation")
    keys = ("conversations", "examples", "dropped_empty", "tokens", "supervised_tokens")
    for name in source_of:
        stats.by_source.setdefault(name, dict.fromkeys(keys, 0))["conversations"] += 1

    def counts(index: int, example: Any) -> dict[str, int]:
        count = stats.by_source[source_of[index]]
        count["examples"] += 1
        return count

    return counts


def prepare(
    config: TrainConfig,
    conversations: list[tuple[str, list[dict[str, Any]]]],
    tokenizer: Any,
    template: str | None,
    end: EndOfTurn | None,
    source_of: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], PrepStats]:
    """Mask, check (and pack) conversations given as (where, messages); errors name `where`.
    With `source_of` (each conversation's source name), `stats.by_source` counts per source."""
    stats = PrepStats(end_of_turn=end.text if end else "")
    masked = _mask_all(config, conversations, tokenizer, template, end, stats)
    if masked and all(m.truncated_turns for _, m, _ in masked):
        raise UserError(
            f"max_length={config.max_length} is shorter than every example: raise max_length"
        )
    examples = []
    counts = _source_counter(stats, conversations, source_of)
    for where, m, index in masked:
        count = counts(index, m)
        stats.examples += 1
        if m.truncated_turns:
            stats.truncated_examples += 1
            stats.truncated_assistant_turns += m.truncated_turns
        if m.supervised == 0:
            if config.on_empty_example == "error":
                raise UserError(
                    f"{where}: no supervised token (after truncation to max_length={config.max_length}); "
                    "set on_empty_example=drop to drop such rows"
                )
            stats.dropped_empty += 1
            count["dropped_empty"] += 1
            continue
        stats.tokens += len(m.input_ids)
        stats.supervised_tokens += m.supervised
        count["tokens"] += len(m.input_ids)
        count["supervised_tokens"] += m.supervised
        if len(stats.samples) < SAMPLES:
            stats.samples.append((where, m.input_ids, m.labels))
        examples.append({"input_ids": m.input_ids, "labels": m.labels})
    if not examples:
        raise UserError("no example has a supervised token")
    if config.packing:
        rows, stats.packing_fill = pack_examples(examples, config.max_length)
    else:
        rows = examples
    stats.rows = len(rows)
    return rows, stats


def save_prepared(rows: list[dict[str, Any]], stats: PrepStats, out_dir: Path) -> Path:
    from datasets import Dataset
    from distillery.jsonl import atomic_write_text

    target = out_dir / "prepared"
    Dataset.from_list(rows).save_to_disk(str(target))
    atomic_write_text(out_dir / "prepared_stats.json", json.dumps(stats.as_dict(), indent=1) + "\n")
    return target
