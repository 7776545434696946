"""Magpie and raw-prompt calls, offline: the `vllm:` path through the loopback server's
`/v1/completions` (the real OpenAI transports), the pre-query text of five template families,
the refusals, and Magpie's curation with the scripted teacher."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from distillery.cli import main
from distillery.errors import UserError
from distillery.generate.config import GenerateConfig
from distillery.generate.run import run_generate
from distillery.records import Record
from distillery.teacher.config import TeacherConfig
from distillery.teacher.engine import Teacher
from distillery.teacher.types import ChatRequest

from tests.helpers.mockserver import MockLLMServer
from tests.helpers.teacher import anthropic_config, openai_config, server, stats
from tests.tiny_models import build_tokenizer

__all__ = ["server"]

LLAMA31_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
)
# family -> (pre-query of a first turn, of a second turn after {u} and its answer {a}, the
# text that closes a user turn), written out by hand from each family's published format
FAMILIES: dict[str, tuple[str, str, str]] = {
    "chatml": (
        "<|im_start|>user\n",
        "<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>",
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{u}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n{a}<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
    "llama31": (
        LLAMA31_SYSTEM + "<|start_header_id|>user<|end_header_id|>\n\n",
        LLAMA31_SYSTEM + "<|start_header_id|>user<|end_header_id|>\n\n{u}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n{a}<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
    "gemma": (
        "<bos><start_of_turn>user\n",
        "<bos><start_of_turn>user\n{u}<end_of_turn>\n<start_of_turn>model\n{a}<end_of_turn>\n"
        "<start_of_turn>user\n",
        "<end_of_turn>",
    ),
    "phi3": (
        "<|user|>\n",
        "<|user|>\n{u}<|end|>\n<|assistant|>\n{a}<|end|>\n<|user|>\n",
        "<|end|>",
    ),
    "mistral": ("<s>[INST] ", "<s>[INST] {u} [/INST] {a}</s>[INST] ", "[/INST]"),
}


def tokenizer_dir(tmp_path: Path, family: str) -> Path:
    where = tmp_path / f"tok-{family}"
    build_tokenizer(family).save_pretrained(where)
    return where


def records(path: Path) -> list[Record]:
    return [Record.model_validate_json(line) for line in path.read_text().splitlines()]


def magpie_config(tmp_path: Path, teacher: dict[str, Any], **kw: Any) -> GenerateConfig:
    base: dict[str, Any] = {
        "method": "magpie",
        "output_dir": str(tmp_path / "runs"),
        "run_id": "m",
        "num_instructions": 3,
        "quiet": True,
        "teacher": teacher,
        "evol": {"rounds": 0},
    }
    for key, value in kw.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return GenerateConfig.model_validate(base)


# ---- raw prompts through the engine -------------------------------------------------------


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_a_raw_prompt_goes_to_v1_completions_cut_at_its_stop_and_cached_by_its_text(
    server: MockLLMServer, tmp_path: Path, transport: str
) -> None:
    server.configure(completions=["Name three rivers.<|im_end|>ignored"])
    config = openai_config(server, tmp_path, transport=transport)

    async def go() -> list[Any]:
        async with Teacher(config) as teacher:
            first = ChatRequest(
                messages=[], prompt="<|im_start|>user\n", params={"stop": ["<|im_end|>"]}
            )
            other = ChatRequest(
                messages=[], prompt="<|im_start|>system\nx", params={"stop": ["<|im_end|>"]}
            )
            return [await teacher.complete(r) for r in (first, first, other)]

    one, again, other = asyncio.run(go())
    seen = stats(server)
    assert (
        seen["requests"].get("/v1/completions") == 2
        and "/v1/chat/completions" not in seen["requests"]
    )
    assert seen["prompts"] == ["<|im_start|>user\n", "<|im_start|>system\nx"]
    assert one.response == "Name three rivers." and one.trace.prompt == "<|im_start|>user\n"
    assert (
        one.trace.messages == [] and again.cached and not other.cached
    )  # the key holds the prompt


def test_api_teachers_refuse_a_raw_prompt_in_one_line(
    server: MockLLMServer, tmp_path: Path
) -> None:
    async def send(config: TeacherConfig) -> None:
        async with Teacher(config) as teacher:
            await teacher.complete(ChatRequest(messages=[], prompt="<|im_start|>user\n"))

    with pytest.raises(
        UserError, match=r"Anthropic's Messages API takes chat messages only.*hf:MODEL, vllm:MODEL"
    ) as exc:
        asyncio.run(send(anthropic_config(server, tmp_path)))
    assert "\n" not in str(exc.value)
    assert stats(server)["requests"].get("/v1/messages") is None  # nothing was sent


@pytest.mark.parametrize("spec", ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"])
def test_magpie_with_an_api_teacher_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code = main(["generate", "--teacher", spec, "--output-dir", str(tmp_path / "runs"),
                 "method=magpie", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "takes chat messages only" in err and "vllm:MODEL" in err and "hf:MODEL" in err
    assert not (tmp_path / "runs").exists()


# ---- Magpie over `vllm:` at an OpenAI-compatible server --------------------------------------


@pytest.mark.parametrize(
    ("family", "transport"),
    [(f, "direct") for f in FAMILIES] + [("chatml", "sdk")],
)
def test_vllm_magpie_sends_the_chat_templates_pre_query_text(
    server: MockLLMServer, tmp_path: Path, family: str, transport: str
) -> None:
    first, second, user_end = FAMILIES[family]
    server.configure(
        completions=[f"Explain how ocean tides work, step {i}.{user_end}leaked" for i in range(20)]
    )
    teacher = {**openai_config(server, tmp_path, cache=False).model_dump(),
               "spec": "vllm:mock-model", "transport": transport}  # fmt: skip
    config = magpie_config(
        tmp_path, teacher, conversation={"turns": 2},
        magpie={"tokenizer": str(tokenizer_dir(tmp_path, family)), "tags": False, "language": None},
    )  # fmt: skip
    assert run_generate(config) == 0
    rows = records(tmp_path / "runs" / "m" / "generated.jsonl")
    prompts = stats(server)["prompts"]
    assert prompts[:5] == [first] * 5  # 3 rows, oversampled 1.5x
    assert len(rows) == 3 and all(r.origin == "magpie" for r in rows)
    for row in rows:  # cut where the template closes a user turn: the stop text was sent
        assert [m.role for m in row.messages] == ["user", "assistant"] * 2
        assert row.messages[0].content.startswith("Explain how ocean tides work, step")
        assert user_end not in row.messages[0].content and "leaked" not in row.messages[2].content
        assert row.trace[0].prompt == first and row.trace[0].params["stop"] == [user_end]
        assert row.meta["magpie"]["tokenizer"].endswith(f"tok-{family}")
    turn2 = {second.format(u=r.messages[0].content, a=r.messages[1].content) for r in rows}
    assert set(prompts[5:8]) == turn2 and len(prompts) == 8


def test_a_system_prompt_per_category_and_the_target_mix(
    server: MockLLMServer, tmp_path: Path
) -> None:
    server.configure(completions=[f"Write a limerick about the number {i}." for i in range(40)])
    teacher = {**openai_config(server, tmp_path).model_dump(), "spec": "vllm:mock-model"}
    categories = {"coding": {"weight": 3, "system_prompt": "You help with code."},
                  "math": {"weight": 1}}  # fmt: skip
    config = magpie_config(
        tmp_path, teacher, num_instructions=8,
        magpie={"tokenizer": str(tokenizer_dir(tmp_path, "llama3")), "tags": False,
                "system_prompt": "Be terse.", "categories": categories},
    )  # fmt: skip
    assert run_generate(config) == 0
    rows = records(tmp_path / "runs" / "m" / "generated.jsonl")
    assert sorted(r.category or "" for r in rows) == ["coding"] * 6 + ["math"] * 2
    opening = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{}<|eot_id|>"
    user = "<|start_header_id|>user<|end_header_id|>\n\n"
    for row in rows:
        system = "You help with code." if row.category == "coding" else "Be terse."
        assert row.trace[0].prompt == opening.format(system) + user
        assert row.meta["magpie"]["system_prompt"] == system
        assert row.trace[1].messages[0].content == system  # the answer sees the same system prompt
        draw, answer = row.trace[0].params, row.trace[1].params  # sampling per stage
        assert (draw["temperature"], draw["max_tokens"]) == (1.0, 256)
        assert (answer["temperature"], answer["max_tokens"]) == (0.0, 1024)
        assert answer["stop"] == ["<|eot_id|>"]  # the same model answers: its end of turn


# ---- bad input ------------------------------------------------------------------------------


def test_a_chat_template_with_no_user_turn_opening_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = build_tokenizer("chatml")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(tmp_path / "bare")
    code = main(["generate", "--teacher", "fake", "--output-dir", str(tmp_path / "runs"),
                 "method=magpie", f"magpie.tokenizer={tmp_path / 'bare'}", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "has no user-turn opening" in err and str(tmp_path / "bare") in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("turns", ["0", "21", "[3,2]", "[1,2,3]", "true", "2.5", "abc"])
def test_turns_out_of_range_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], turns: str
) -> None:
    code = main(["generate", "--teacher", "fake", "--output-dir", str(tmp_path / "runs"),
                 f"conversation.turns={turns}", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "conversation.turns'" in err
    assert err.startswith("distillery: error: override:")  # where it was set, not <defaults>


# ---- Magpie's curation, with the scripted teacher --------------------------------------------


def test_magpie_filters_keep_every_rejected_candidate_and_tags_reach_meta(tmp_path: Path) -> None:
    config = magpie_config(
        tmp_path, {"spec": "fake", "cache": False}, num_instructions=20,
        magpie={"tokenizer": str(tokenizer_dir(tmp_path, "phi3"))},
    )  # fmt: skip
    assert run_generate(config) == 0
    run = tmp_path / "runs" / "m"
    rows, rejected = records(run / "generated.jsonl"), records(run / "rejected.jsonl")
    assert len(rows) == 20
    rules = {r.dropped_by.rule for r in rejected if r.dropped_by}
    assert {"too_short", "repetitive"} <= rules
    repetitive = next(r for r in rejected if r.dropped_by and r.dropped_by.rule == "repetitive")
    assert repetitive.dropped_by.evidence["repeated_3gram_share"] > 0.3
    assert repetitive.trace[0].prompt == "<|user|>\n" and repetitive.origin == "magpie"
    tagged = [r for r in rows if "tags" in r.meta]
    assert tagged and all(set(r.meta["tags"]) == {"task_category", "input_quality", "difficulty"}
                          for r in tagged)  # fmt: skip
    untagged = [r for r in rows if "tags" not in r.meta]
    assert all(r.meta["tags_error"]["raw"] for r in untagged)  # kept, never defaulted
    lineage = rows[0].meta["magpie"]
    assert lineage["model"] == "fake" and len(lineage["chat_template_sha256"]) == 64
    assert lineage["sampling"]["instruction"]["temperature"] == 1.0
    assert [c.purpose for c in rows[0].trace][:3] == [
        "magpie:instruction",
        "response",
        "magpie:tags",
    ]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["rows_by_origin"] == {"magpie": 20}


def test_the_language_check_rejects_with_what_it_detected(tmp_path: Path) -> None:
    config = magpie_config(
        tmp_path, {"spec": "fake", "cache": False}, num_instructions=4,
        magpie={"tokenizer": str(tokenizer_dir(tmp_path, "gemma")), "language": "de",
                "max_rounds": 1, "tags": False},
    )  # fmt: skip
    assert run_generate(config) == 1  # English candidates only: the target is not met
    rejected = records(tmp_path / "runs" / "m" / "rejected.jsonl")
    language = [r for r in rejected if r.dropped_by and r.dropped_by.rule == "language"]
    assert language and all(r.dropped_by.evidence["detected"] == "en" for r in language)


# ---- the `hf:` replica: raw prompts and stop texts ------------------------------------------


def test_hf_cuts_an_answer_at_the_first_stop_text(tmp_path: Path) -> None:
    from distillery.teacher.local import HFReplica

    replica = HFReplica.__new__(HFReplica)  # only the tokenizer is needed to cut
    replica.tokenizer = build_tokenizer("chatml")
    ids = replica.tokenizer("Paris is the capital<|im_end|>\nmore text", add_special_tokens=False)
    cut = replica._cut_at_stop(ids["input_ids"], ["<|im_end|>"])
    assert cut is not None and cut[0] == "Paris is the capital"
    written = replica.tokenizer.decode(ids["input_ids"][: cut[1]], skip_special_tokens=False)
    assert written.endswith("<|im_end|>")  # the fewest tokens that write the stop text
    assert replica._cut_at_stop(ids["input_ids"], ["[/INST]"]) is None


def test_hf_magpie_generates_from_the_pre_query_text_and_stops_at_the_end_of_turn(
    tmp_path: Path,
) -> None:
    from tests.tiny_models import build_tiny_lm

    model = build_tiny_lm(tmp_path / "lm", "chatml")
    teacher = {"spec": f"hf:{model}", "cache": False, "max_tokens": 48, "max_length_retries": 0,
               "seed": 0, "hf": {"device": "cpu"}}  # fmt: skip
    fake = {"spec": "fake", "cache": False}
    config = magpie_config(
        tmp_path, teacher, num_instructions=2, tag_teacher=fake, response_teacher=fake,
        max_top_ups=0, conversation={"turns": 2},
        magpie={"language": None, "min_words": 1, "max_repetition": 1.0, "oversample": 8,
                "max_rounds": 1, "instruction": {"max_tokens": 96}},
    )  # fmt: skip
    run_generate(config)  # noise text: the target may not be met, every mechanism runs
    run = tmp_path / "runs" / "m"
    candidates = records(run / "generated.jsonl") + records(run / "rejected.jsonl")
    draws = [
        r.trace[0] for r in candidates if r.trace and r.trace[0].purpose == "magpie:instruction"
    ]
    assert draws and all(c.prompt == "<|im_start|>user\n" for c in draws)
    assert all(c.params["stop"] == ["<|im_end|>"] for c in draws)
    cut = [r for r in candidates if r.dropped_by and r.dropped_by.rule == "cut_off"]
    assert all(r.trace[0].finish_reason == "length" for r in cut)  # named, with its evidence
    ended = [c for c in draws if c.finish_reason == "stop"]
    assert ended and all("<|im_end|>" not in (c.response or "") for c in ended)
    # seeded once: a batch of the same prompt after another draws new text, not a copy
    assert not [r for r in candidates if r.dropped_by and r.dropped_by.rule == "duplicate"]
    later = [c for r in candidates for c in r.trace if c.purpose == "magpie:user_turn"]
    assert later
    for row in records(run / "generated.jsonl"):  # the model continues its own conversation
        user, answer = row.messages[0].content, row.messages[1].content
        turn2 = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
        assert any(c.prompt == turn2 + "<|im_start|>user\n" for c in later)


# ---- the shipped configs ------------------------------------------------------------------------


def test_the_shipped_magpie_config_prices_every_role_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """configs/generate_magpie.yaml as shipped (its model's tokenizer replaced by a tiny one
    of the same family): the chat template opens a user turn under every category's system
    prompt, and the rehearsal draws, answers, tags and continues conversations."""
    root = Path(__file__).resolve().parent.parent
    tok = tokenizer_dir(tmp_path, "qwen25")
    code = main(["generate", "--config", str(root / "configs" / "generate_magpie.yaml"),
                 "--estimate-cost", f"magpie.tokenizer={tok}", "num_instructions=6",
                 f"output_dir={tmp_path / 'runs'}"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "instructions vllm:Qwen/Qwen2.5-7B-Instruct" in out
    assert "tags" in out and "responses" in out
    assert not (tmp_path / "runs").exists()


def test_the_filter_keeps_magpie_rows_by_their_tags(tmp_path: Path) -> None:
    """The tags generate writes are the ones the filter's `tags` step reads (distillery.tags)."""
    from distillery.filter.config import FilterConfig
    from distillery.filter.run import run_filter

    config = magpie_config(
        tmp_path, {"spec": "fake", "cache": False}, num_instructions=12,
        magpie={"tokenizer": str(tokenizer_dir(tmp_path, "chatml"))},
    )  # fmt: skip
    assert run_generate(config) == 0
    rows = tmp_path / "runs" / "m" / "generated.jsonl"
    filtered = FilterConfig.model_validate({
        "input": str(rows), "output_dir": str(tmp_path / "filtered"), "steps": ["tags"],
        "tags": {"min_input_quality": "good"},
    })  # fmt: skip
    assert run_filter(filtered) == 0
    kept, made = records(tmp_path / "filtered" / "kept.jsonl"), records(rows)
    low = [r for r in made if r.meta.get("tags", {}).get("input_quality") in ("poor", "average")]
    assert low and len(kept) == len(made) - len(low)
    assert all(r.meta["tags"]["input_quality"] in ("good", "excellent") for r in kept
               if "tags" in r.meta)  # fmt: skip


def test_one_sampling_key_set_keeps_the_stages_other_defaults() -> None:
    """`magpie.response.max_tokens=4096` keeps the greedy answers the docs promise (was:
    temperature 1.0 and the draws' max_tokens 512, the generic `Sampling` defaults)."""
    config = GenerateConfig.model_validate(
        {"magpie": {"response": {"max_tokens": 4096}, "instruction": {"temperature": 0.7}}}
    )
    response, draw = config.magpie.response, config.magpie.instruction
    assert (response.temperature, response.top_p, response.max_tokens) == (0.0, 1.0, 4096)
    assert (draw.temperature, draw.top_p, draw.max_tokens) == (0.7, 1.0, 256)
    assert GenerateConfig().magpie.response.temperature == 0.0


def test_a_magpie_runs_identity_holds_no_seeds(tmp_path: Path) -> None:
    """Magpie reads no seeds: another seed file is the same run (was: a new run directory,
    every draw paid again; with a run id, a refusal naming `inputs.seeds`)."""
    from distillery.generate.roles import generate_identity

    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "s1", "instruction": "Say hi.", "instances": [{"output": "Hi"}]}\n')
    for method, same in (("magpie", True), ("self_instruct", False)):
        a, b = (GenerateConfig.model_validate({"method": method, "seeds": s})
                for s in ("builtin", str(other)))  # fmt: skip
        assert (generate_identity(a) == generate_identity(b)) is same


def test_the_estimate_prices_magpies_stages_at_their_own_max_tokens(tmp_path: Path) -> None:
    """Draws capped at magpie.instruction.max_tokens (256) are not priced at the teacher's
    2048 (was: 512 tokens expected of each, twice its cap); later turns counted per row."""
    from distillery.generate.estimate import estimate_cost

    config = magpie_config(
        tmp_path, {"spec": "vllm:some-model", "max_tokens": 2048}, num_instructions=4,
        conversation={"turns": 3},
        magpie={"tokenizer": str(tokenizer_dir(tmp_path, "chatml")), "tags": False},
    )  # fmt: skip
    roles = estimate_cost(config)["roles"]
    draws, answers = roles["instructions"], roles["responses"]
    # turns x calls per turn; the scripted user repeats itself once at turn 3 (that
    # conversation ends there: `repeated_user_turn`), so one answer fewer
    assert draws["calls"] == 6 + 4 * 2 and answers["calls"] == 4 * 3 - 1
    assert draws["output_tokens"] == draws["calls"] * 256 // 4
    assert answers["output_tokens"] == answers["calls"] * 1024 // 4
    # a role without a per-stage cap is priced at its own teacher's max_tokens
    from tests.test_seeds import SEEDS

    other = GenerateConfig.model_validate({
        "seeds": str(SEEDS), "num_instructions": 3, "evol": {"rounds": 0},
        "categories": {"method": "rouge"},
        "conversation": {"turns": 2}, "teacher": {"spec": "openai:gpt-4o-mini", "max_tokens": 400},
        "user_teacher": {"spec": "openai:gpt-4o-mini", "max_tokens": 40},
    })  # fmt: skip
    for role, r in estimate_cost(other)["roles"].items():
        assert r["output_tokens"] == r["calls"] * (10 if role == "user" else 100), role


def test_a_template_that_refuses_a_system_prompt_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = build_tokenizer("gemma")  # Gemma 1/2's published template raises on a system turn
    tok.chat_template = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + tok.chat_template
    )
    tok.save_pretrained(tmp_path / "nosys")
    code = main(["generate", "--teacher", "fake", "--output-dir", str(tmp_path / "runs"),
                 "method=magpie", f"magpie.tokenizer={tmp_path / 'nosys'}",
                 "magpie.system_prompt=Ask about code.", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "System role not supported" in err
    assert not (tmp_path / "runs").exists()


def test_a_turn_marker_not_marked_special_is_the_stop_text() -> None:
    """DeepSeek-R1's `<｜Assistant｜>` is an added token but not a special one, and its
    generation prompt goes on with `<think>`: the stop is the marker alone (was
    `<｜Assistant｜><think>`, the first whitespace-delimited piece, which a model that writes
    the marker and goes on otherwise never matches, so it answers its own question)."""
    from distillery.chat_template import assistant_turn_end, pre_query, user_turn_end

    tok = build_tokenizer("chatml")
    tok.add_tokens(["<｜User｜>", "<｜Assistant｜>", "<think>"])  # special=False, as R1's
    tok.chat_template = (
        "{{ bos_token or '' }}{% for m in messages %}{% if m['role'] == 'user' %}"
        "<｜User｜>{{ m['content'] }}{% else %}<｜Assistant｜>{{ m['content'] }}<|im_end|>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
    )
    assert pre_query(tok, []).endswith("<｜User｜>")
    assert user_turn_end(tok) == "<｜Assistant｜>"
    assert assistant_turn_end(tok) == "<|im_end|>"


def test_the_pre_query_text_does_not_change_with_the_day() -> None:
    """Llama 3.2/3.3's templates stamp today's date (`strftime_now`) when no `date_string`
    is given: the draws' prompt - their journal and cache keys - would change at midnight
    and a run resumed the next day would draw (and pay for) everything again."""
    from distillery.chat_template import pre_query

    tok = build_tokenizer("llama31")
    tok.chat_template = tok.chat_template.replace(
        "{%- set date_string = '26 Jul 2024' -%}",
        "{%- set date_string = strftime_now('%d %b %Y') -%}",
    )
    assert "strftime_now" in tok.chat_template
    assert pre_query(tok, []) == FAMILIES["llama31"][0]  # Llama's own fallback date
