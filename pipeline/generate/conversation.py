"""Multi-turn conversations, for every generation method (`conversation.turns`).

After a row's first answer, turn k (2, 3, ...) adds a user message and its answer:
- the user message comes from the user simulator (`user_simulator` call, `user` teacher
  role; UltraChat-style), which may end the conversation instead with its explicit signal
  (`calls.END_OF_CONVERSATION`); in a Magpie run (its evolved rows too) it comes from the
  model itself, continuing the conversation's pre-query text (Magpie multi-turn), and goes
  through Magpie's filters;
- the answer comes from the response teacher, given the whole conversation.

Every row's turn k runs as one stage with its own journals (`turnK_user`,
`turnK_responses`), so a run killed after turn 2 of 4 replays turns 1-2 from the journals
and resumes at turn 3, paying for nothing twice. A conversation that cannot go on (the
simulated user ended it, an unparsable or filtered user turn, a failed answer) keeps the
turns it has; why it ended is in `meta.conversation.ended`.

Reads: rows with `response`. Writes: `later_turns`, `trace` (each turn's calls, in order),
`meta.conversation` = {"turns", "target_turns", "ended"}.
"""

from __future__ import annotations

import random
from typing import Any

from distillery import calls
from distillery.generate.context import GenContext, failed_drop
from distillery.generate.evolve import system_template, user_text
from distillery.generate.filters import magpie_drop
from distillery.generate.magpie import MagpieTemplate, response_params, sampling
from distillery.generate.rows import GenRow
from distillery.parsing import ParseFailure
from distillery.records import Drop
from distillery.teacher.jobs import JobItem
from distillery.teacher.types import CallResult, ChatRequest


def target_turns(ctx: GenContext, row: GenRow) -> int:
    """The row's number of user turns: `turns`, or drawn from [MIN, MAX] by its id."""
    lo, hi = ctx.config.conversation.range
    return lo if lo == hi else random.Random(f"{ctx.config.seed}:turns:{row.id}").randint(lo, hi)


def history(row: GenRow) -> list[dict[str, str]]:
    """The conversation so far, without the system prompt."""
    first = [
        {"role": "user", "content": user_text(row.instruction, row.input)},
        {"role": "assistant", "content": row.response or ""},
    ]
    return first + row.later_turns


async def extend(ctx: GenContext, rows: list[GenRow], template: MagpieTemplate | None) -> None:
    """Take every row to its target number of turns, turn by turn across all rows."""
    targets = {r.id: target_turns(ctx, r) for r in rows}
    ended: dict[str, Drop] = {}
    state: dict[str, dict[str, Any]] = {
        r.id: {"turns": 1, "target_turns": targets[r.id], "ended": None} for r in rows
    }
    for row in rows:
        row.meta["conversation"] = state[row.id]
    for k in range(2, max(targets.values(), default=1) + 1):
        active = [r for r in rows if targets[r.id] >= k and r.id not in ended]
        if not active:
            break
        users = await _user_turns(ctx, k, active, template, ended)
        going = [r for r in active if r.id in users]
        items = [JobItem(r.id, _answer_request(ctx, r, users[r.id], template)) for r in going]
        answers = await ctx.call(f"turn{k}_responses", items)
        for row in going:
            result = answers[row.id]
            row.trace = [*row.trace, result.trace]
            if not result.ok:
                ended[row.id] = Drop(rule="response_failed", reason=result.error or "failed",
                                     evidence={"turn": k, "raw": result.text})  # fmt: skip
                continue
            row.later_turns += [
                {"role": "user", "content": users[row.id]},
                {"role": "assistant", "content": result.response or ""},
            ]
            state[row.id]["turns"] = k
            ctx.counts[f"conversation:turn{k}"] += 1
    for row_id, drop in ended.items():
        state[row_id]["ended"] = drop.model_dump()
        ctx.counts[f"conversation:ended:{drop.rule}"] += 1


async def _user_turns(
    ctx: GenContext, k: int, rows: list[GenRow], template: MagpieTemplate | None,
    ended: dict[str, Drop],
) -> dict[str, str]:  # fmt: skip
    """Turn k's user message of each row (journal `turnK_user`); a row whose conversation
    ends here goes into `ended` with why."""
    items = [JobItem(r.id, _user_request(ctx, k, r, template)) for r in rows]
    results = await ctx.call(f"turn{k}_user", items)
    users = {}
    for row in rows:
        result = results[row.id]
        row.trace = [*row.trace, result.trace]
        text, drop = _user_message(ctx, k, row, result)
        if drop is not None:
            ended[row.id] = drop
        elif text is not None:
            users[row.id] = text
    return users


def _user_request(
    ctx: GenContext, k: int, row: GenRow, template: MagpieTemplate | None
) -> ChatRequest:
    """In a Magpie run (its evolved rows too: a run has one user role) the model continues
    the conversation's pre-query text; otherwise the user simulator reads the conversation."""
    past = history(row)
    if template is not None:
        return calls.MAGPIE_USER_TURN.prompt_request(
            template.pre_query(past, row.system_text),
            params=sampling(ctx.config.magpie.instruction, template.user_end),
            row=row.id,
            turn=k,
        )
    turns = [{"user": past[i]["content"], "assistant": past[i + 1]["content"]}
             for i in range(0, len(past), 2)]  # fmt: skip
    return calls.USER_SIMULATOR.request(turns=turns)


def _user_message(
    ctx: GenContext, k: int, row: GenRow, result: CallResult
) -> tuple[str | None, Drop | None]:
    """(the user message, None), or (None, why the conversation ends here): a message that
    repeats an earlier user turn of the row ends it too (a model looping on its question)."""
    text, drop = _read_user_message(ctx, k, result)
    if text is None:
        return None, drop
    earlier = [row.instruction] + [m["content"] for m in history(row) if m["role"] == "user"]
    same = [j for j, u in enumerate(earlier) if _plain(u) == _plain(text)]
    if same:
        turn = max(same[0], 1)  # 0: the instruction, i.e. turn 1
        return None, Drop(rule="repeated_user_turn", reason=f"turn {k} repeats turn {turn}",
                          evidence={"turn": k, "same_as_turn": turn, "text": text})  # fmt: skip
    return text, None


def _plain(text: str) -> str:
    return " ".join(text.lower().split())


def _read_user_message(
    ctx: GenContext, k: int, result: CallResult
) -> tuple[str | None, Drop | None]:
    """The user message of a Magpie turn (through Magpie's filters) or the simulator's."""
    if not result.ok:
        drop = failed_drop(result)
        return None, drop.model_copy(update={"evidence": {**drop.evidence, "turn": k}})
    if result.trace.purpose == calls.MAGPIE_USER_TURN.purpose:
        text = (result.response or "").strip()
        m = ctx.config.magpie
        found = magpie_drop(text, min_words=m.min_words, max_words=m.max_words,
                            max_repetition=m.max_repetition, language=m.language)  # fmt: skip
        if found is not None:
            evidence: dict[str, Any] = {**found.evidence, "turn": k, "text": text}
            return None, found.model_copy(update={"evidence": evidence})
        return text, None
    try:
        message = calls.USER_SIMULATOR.parsed(result)
    except ParseFailure as exc:
        return None, Drop(rule="unparsable_user_turn", reason=str(exc),
                          evidence={"turn": k, "raw": result.text})  # fmt: skip
    if message is None:
        return None, Drop(rule="user_ended", reason="the simulated user ended the conversation",
                          evidence={"turn": k})  # fmt: skip
    return message, None


def _answer_request(
    ctx: GenContext, row: GenRow, user: str, template: MagpieTemplate | None
) -> ChatRequest:
    """The response teacher's request for turn k: the whole conversation, then `user`."""
    if row.origin == "magpie" and template is not None:
        return calls.RESPONSE.request(
            system_text=row.system_text, history=history(row), instruction=user, input="",
            params=response_params(ctx, template),
        )  # fmt: skip
    return calls.RESPONSE.request(
        system=system_template(ctx, row.category), history=history(row), instruction=user,
        input="",
    )  # fmt: skip
