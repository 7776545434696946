"""`GenRow`: the one row type of generate, from a candidate instruction to a `Record`.

A row is made by bootstrapping (Self-Instruct, Alpaca), drawn from a model (Magpie), taken
from the seeds, or evolved from a parent; it is answered (`response`), may go on as a
conversation (`later_turns`), then is either kept as a `Record` (`run._to_record`) or
rejected with the rule that dropped it (`GenContext.reject`). Every LLM call behind it is in
`trace`, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distillery.records import LLMCall


@dataclass
class GenRow:
    id: str
    instruction: str
    origin: str  # seed | self_instruct | alpaca | magpie | evol:<operation>
    input: str = ""
    response: str | None = None  # the answer (the assistant turn); None until answered
    category: str | None = None  # the seed set's category (`GenContext.categorise`, parent's)
    parent_ids: list[str] = field(default_factory=list)
    round: int = 0  # evolution round; 0 for base rows and seeds
    trace: list[LLMCall] = field(default_factory=list)
    template_name: str = ""  # the prompt that made the instruction (the row's `template`)
    meta: dict[str, object] = field(default_factory=dict)
    is_classification: bool = False  # Self-Instruct: the teacher's classification
    output: str | None = None  # the teacher's instance output (Alpaca: its response)
    parent: GenRow | None = None  # an evolution's parent: back on the frontier if eliminated
    system_text: str | None = (
        None  # Magpie: the system prompt the row was drawn (and answered) with
    )
    later_turns: list[dict[str, str]] = field(default_factory=list)  # user, assistant, ... after
    # the first answer (`distillery.generate.conversation`)

    @property
    def operation(self) -> str:
        """An evolution's operation (`evol:deepen` -> `deepen`)."""
        return self.origin.split(":", 1)[1]
