"""Every kind of LLM call the pipeline makes, each defined once.

A `Call` names everything about one kind of call: its `name`, the prompt file it renders
(`prompts/<template>.jinja`), the teacher `role` that answers it, the `purpose` written into
its trace, and the `parse` function that turns the answer's text into its output type `T`.
Stages build requests with `call.request(**variables)` and read answers with
`call.parsed(result)`; nothing else joins a prompt, a parser and a teacher role.

The request carries the call's name and variables (`ChatRequest.call`), so the scripted
`fake` teacher answers from them (`distillery.teacher.fake`), never from the prompt's wording.

Adding a kind of call is one definition here plus its template: see docs/llm-calls.md.
Neutral: stages import this module; it imports no stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distillery import parsing
from distillery.parsing import GeneratedInstance, GeneratedTask, ParseFailure
from distillery.prompts import render
from distillery.tags import SCALES, TAG_KEYS
from distillery.teacher.types import CallRef, CallResult, ChatRequest
from distillery.verdicts import Verdict, parse_verdict, parse_winner

T = TypeVar("T")

# Evol-Instruct's operations: five in-depth rewrites and in-breadth evolution.
EVOL_OPERATIONS = (
    "add_constraints",
    "deepen",
    "concretize",
    "increase_reasoning",
    "complicate_input",
    "breadth",
)


def _text(text: str) -> str:
    """The answer as it is: a response needs no parsing."""
    return text


END_OF_CONVERSATION = "<end_of_conversation>"  # the simulated user has nothing left to ask


def _magpie_tags(text: str) -> dict[str, str]:
    """The tags of the tagger's JSON object as `meta.tags` holds them (`distillery.tags`):
    a tag missing or off its scale is left out, never defaulted; none at all is a
    `ParseFailure`."""
    data = parsing.json_object(text)
    found = {}
    for key in TAG_KEYS:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        value = " ".join(value.strip().lower().replace("_", " ").split())
        if key in SCALES and value not in SCALES[key]:
            continue
        found[key] = value
    if not found:
        raise ParseFailure(f"none of {', '.join(TAG_KEYS)} in the tags")
    return found


# the end signal as models write it: any case, `<end of conversation>`, or without brackets
_END_SIGNAL = r"(?:<\s*end[ _]of[ _]conversation\s*>|end_of_conversation)"
_WRAPPING = "`*\"'.! \n\t"  # quotes, backticks, bold, a code fence, a full stop around it


def _next_user_turn(text: str) -> str | None:
    """The simulated user's next message, or None when it ends the conversation with
    `END_OF_CONVERSATION` (alone, or after its last words, maybe wrapped in `_WRAPPING`);
    the signal inside a message or an empty message is a `ParseFailure`."""
    body = text.strip()
    if re.search(_END_SIGNAL + "$", body.rstrip(_WRAPPING), flags=re.I):
        return None
    if re.search(_END_SIGNAL, body, flags=re.I):
        raise ParseFailure(f"{END_OF_CONVERSATION} inside a message, not at its end")
    body = re.sub(r"^\**\s*user\s*\**\s*:\s*\**\s*", "", body, flags=re.I).strip()
    if not body:
        raise ParseFailure("an empty user message")
    return body


@dataclass(frozen=True, kw_only=True)
class Call(Generic[T]):
    """One kind of LLM call. `T` (and `output`, for the docs) is what `parse` returns."""

    name: str  # unique; the fake teacher scripts its answer by this name
    template: str | None  # prompt file stem; None: the caller sends its own messages
    role: str  # the teacher role that answers: instructions, evolution, responses, judge...
    purpose: str  # written into the call's trace (`LLMCall.purpose`), e.g. "evol:deepen"
    parse: Callable[[str], T]  # answer text -> output; raises `ParseFailure` on a bad shape
    output: Any  # the output type, as documentation: list[str], bool, Verdict...

    def request(
        self,
        *,
        system: str | None = None,
        system_text: str | None = None,
        history: Sequence[dict[str, str]] = (),
        params: dict[str, Any] | None = None,
        cache_salt: str = "",
        **variables: Any,
    ) -> ChatRequest:
        """The request: the template rendered with `variables` as the user turn, after the
        earlier turns of a conversation (`history`), after the system prompt - rendered
        from the template `system`, or `system_text` as it is - when one is given.
        `params` override the teacher's sampling parameters for this request."""
        if self.template is None:
            raise TypeError(f"call {self.name} has no template: use messages_request")
        rendered = render(self.template, **variables)
        messages = [*history, {"role": "user", "content": rendered.text}]
        if system is not None:
            system_text = render(system).text
        if system_text is not None:
            messages.insert(0, {"role": "system", "content": system_text})
        return ChatRequest(
            messages=messages,
            params=dict(params or {}),
            purpose=self.purpose,
            template=rendered.template,
            cache_salt=cache_salt,
            call=CallRef(self.name, self.template, variables),
        )

    def prompt_request(
        self,
        prompt: str,
        *,
        params: dict[str, Any] | None = None,
        cache_salt: str = "",
        **variables: Any,
    ) -> ChatRequest:
        """A raw-prompt request (a call without a template): `prompt` is the text the model
        continues; `variables` name what it was built from (the fake teacher reads them)."""
        if self.template is not None:
            raise TypeError(f"call {self.name} has a template: use request")
        return ChatRequest(
            messages=[],
            prompt=prompt,
            params=dict(params or {}),
            purpose=self.purpose,
            cache_salt=cache_salt,
            call=CallRef(self.name, None, variables),
        )

    def messages_request(self, messages: list[dict[str, str]]) -> ChatRequest:
        """A request of the caller's own messages (a call without a template)."""
        return ChatRequest(messages=messages, purpose=self.purpose, call=CallRef(self.name))

    def parsed(self, result: CallResult) -> T:
        """The output of a finished call; a failed call is a `ParseFailure` with its error."""
        if not result.ok:
            raise ParseFailure(result.error or "the teacher call failed")
        return self.parse(result.response or "")


# ---- generate: base instructions -----------------------------------------------------------
SELF_INSTRUCT_GENERATE = Call(
    name="self_instruct_generate",
    template="self_instruct_generate",
    role="instructions",
    purpose="self_instruct:generate",
    parse=parsing.numbered_list,
    output=list[str],
)
SELF_INSTRUCT_CLASSIFY = Call(
    name="self_instruct_classify",
    template="self_instruct_classify",
    role="instructions",
    purpose="self_instruct:classify",
    parse=parsing.yes_no,
    output=bool,
)
INSTANCES_INPUT_FIRST = Call(
    name="self_instruct_instances_input_first",
    template="self_instruct_instances_input_first",
    role="instructions",
    purpose="self_instruct:input_first",
    parse=parsing.instances,
    output=list[GeneratedInstance],
)
INSTANCES_OUTPUT_FIRST = Call(
    name="self_instruct_instances_output_first",
    template="self_instruct_instances_output_first",
    role="instructions",
    purpose="self_instruct:output_first",
    parse=parsing.instances,
    output=list[GeneratedInstance],
)
ALPACA_BATCH = Call(
    name="alpaca_batch",
    template="alpaca_batch",
    role="instructions",
    purpose="alpaca:batch",
    parse=parsing.alpaca_tasks,
    output=list[GeneratedTask],
)

# ---- generate: evolution and responses -----------------------------------------------------
EVOL: dict[str, Call[str]] = {
    op: Call(
        name=f"evol_{op}",
        template=f"evol_{op}",
        role="evolution",
        purpose=f"evol:{op}",
        parse=parsing.evolved_prompt,
        output=str,
    )
    for op in EVOL_OPERATIONS
}
EVOL_EQUALITY = Call(
    name="evol_equality",
    template="evol_equality",
    role="evolution",
    purpose="evol:equality",
    parse=parsing.equal_or_not,
    output=bool,
)
# ---- generate: Magpie (Xu et al., 2024) and conversations ---------------------------------
MAGPIE_INSTRUCTION = Call(
    name="magpie_instruction",
    template=None,  # a raw prompt: the chat template's pre-query text (`distillery.chat_template`)
    role="instructions",
    purpose="magpie:instruction",
    parse=_text,
    output=str,
)
MAGPIE_USER_TURN = Call(
    name="magpie_user_turn",
    template=None,  # the pre-query text of the conversation so far
    role="instructions",
    purpose="magpie:user_turn",
    parse=_text,
    output=str,
)
MAGPIE_TAGS = Call(
    name="magpie_tags",
    template="magpie_tags",
    role="tags",
    purpose="magpie:tags",
    parse=_magpie_tags,
    output=dict[str, str],
)
USER_SIMULATOR = Call(
    name="user_simulator",
    template="user_simulator",
    role="user",
    purpose="conversation:user",
    parse=_next_user_turn,  # None: the simulated user ends the conversation
    output=str | None,
)
RESPONSE = Call(
    name="response",
    template="user_turn",  # the instruction (and input) as the user turn; system prompt apart
    role="responses",
    purpose="response",
    parse=_text,
    output=str,
)

# ---- judges (filter and eval) ----------------------------------------------------------------
JUDGE_QUALITY = Call(
    name="judge_quality",
    template="judge_quality",
    role="judge",
    purpose="judge:quality",
    parse=parse_verdict,  # a Verdict with a status: never raises
    output=Verdict,
)
JUDGE_PAIRWISE = Call(
    name="judge_pairwise",
    template="judge_pairwise",
    role="judge",
    purpose="judge:pairwise",
    parse=parse_winner,
    output=str,  # "A" | "B" | "tie"
)
JUDGE_CONVERSATION = Call(
    name="judge_conversation",
    template="judge_conversation",  # a multi-turn row, judged whole (the filter's judge step)
    role="judge",
    purpose="judge:conversation",
    parse=parse_verdict,  # a Verdict with a status: never raises
    output=Verdict,
)

# ---- calls of the caller's own messages ------------------------------------------------------
EVAL_GENERATE = Call(
    name="eval_generate", template=None, role="student", purpose="eval:generate", parse=_text,
    output=str,
)  # fmt: skip
COMPLETE = Call(
    name="complete", template=None, role="teacher", purpose="complete", parse=_text, output=str
)

ALL: tuple[Call[Any], ...] = (
    SELF_INSTRUCT_GENERATE,
    SELF_INSTRUCT_CLASSIFY,
    INSTANCES_INPUT_FIRST,
    INSTANCES_OUTPUT_FIRST,
    ALPACA_BATCH,
    *EVOL.values(),
    EVOL_EQUALITY,
    MAGPIE_INSTRUCTION,
    MAGPIE_USER_TURN,
    MAGPIE_TAGS,
    USER_SIMULATOR,
    RESPONSE,
    JUDGE_QUALITY,
    JUDGE_PAIRWISE,
    JUDGE_CONVERSATION,
    EVAL_GENERATE,
    COMPLETE,
)
BY_NAME: dict[str, Call[Any]] = {c.name: c for c in ALL}
BY_PURPOSE: dict[str, Call[Any]] = {c.purpose: c for c in ALL}  # a trace's call


def role_of(requests: Sequence[ChatRequest]) -> str:
    """The one teacher role that answers every request of a batch (each names its call)."""
    roles = {BY_NAME[r.call.name].role for r in requests if r.call is not None}
    if len(roles) != 1:
        raise ValueError(f"a batch of calls must share one teacher role, got {sorted(roles)}")
    return roles.pop()
