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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distillery import parsing
from distillery.parsing import GeneratedInstance, GeneratedTask, ParseFailure
from distillery.prompts import render
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
        self, *, system: str | None = None, cache_salt: str = "", **variables: Any
    ) -> ChatRequest:
        """The request: the template rendered with `variables` as the user turn, after the
        system prompt rendered from the template `system` when one is given."""
        if self.template is None:
            raise TypeError(f"call {self.name} has no template: use messages_request")
        rendered = render(self.template, **variables)
        messages = [{"role": "user", "content": rendered.text}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": render(system).text})
        return ChatRequest(
            messages=messages,
            purpose=self.purpose,
            template=rendered.template,
            cache_salt=cache_salt,
            call=CallRef(self.name, self.template, variables),
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
