"""The scripted `fake` teacher's answers: deterministic, offline, shaped like real answers for
each kind of call the pipeline makes (`distillery.calls`), so the demo and the tests run every
real code path (parsing, filters, elimination rules, dedup, judge). Everything it writes is
demo data and every row it produces is marked `demo: true`.

It answers from the request's call (`ChatRequest.call`): the definition's name picks the
script and the template variables fill it - the rendered prompt is never read, so rewording
a prompt (under `DISTILLERY_PROMPTS_DIR`) changes no answer. Its pseudo-random choices are
seeded by `_seed`, a digest of the call's variables (taken as the shipped template renders
them, which keeps the demo data of earlier versions byte for byte). A few answers are
deliberately bad (a modality word, a leaked scaffold, an equal rewrite, a "sorry") so that
each filter has something to catch. A request without a call (`complete`) gets an echo.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from distillery.prompts import PROMPTS_DIR, render
from distillery.teacher.types import CallRef, ChatRequest

VERBS = [
    "Write",
    "Explain",
    "Summarize",
    "List",
    "Compare",
    "Describe",
    "Classify",
    "Outline",
    "Suggest",
    "Plan",
    "Evaluate",
    "Design",
    "Rewrite",
    "Estimate",
    "Critique",
    "Propose",
]
TOPICS = [
    "the water cycle in tropical rainforests",
    "password hygiene for a small accounting office",
    "a weekly budget for a university student",
    "the causes of the French Revolution",
    "a Python function that merges sorted lists",
    "customer reviews of a new coffee grinder",
    "the trade-offs of remote engineering teams",
    "a beginner strength training routine",
    "the main ideas of supply and demand",
    "an onboarding email for new volunteers",
    "a bedtime story about a curious otter",
    "the safety rules of a chemistry lab",
    "the history of the printing press",
    "a SQL query counting monthly active users",
    "the benefits of composting kitchen scraps",
    "a three day itinerary for Lisbon",
    "common mistakes in job interview answers",
    "how vaccines train the immune system",
    "a polite reply to a late delivery complaint",
    "the rules of chess castling",
    "energy use of electric versus gas stoves",
    "a study plan for learning Spanish verbs",
    "the plot structure of detective novels",
    "ways to reduce meeting overload at work",
    "an apology note to a neighbour about noise",
    "a regular expression matching dates",
    "the differences between weather and climate",
    "a fundraising plan for a school library",
    "the pros and cons of electric scooters in cities",
    "how compound interest grows savings",
]
FORMS = [
    "for a complete beginner",
    "in exactly three bullet points",
    "in under one hundred words",
    "with one concrete worked example",
    "as a short formal memo",
    "in a friendly casual tone",
    "as a numbered step by step guide",
    "with a markdown table",
    "for a ten year old reader",
    "and justify each point briefly",
]
ADDITIONS = {
    "add_constraints": "Keep the answer under 150 words and mention at least one common misconception.",
    "deepen": "Also explain why this matters in practice and what would change under different assumptions.",
    "concretize": "Focus specifically on a mid-sized organisation in Canada during its first year.",
    "increase_reasoning": "Reason through it in explicit numbered steps, checking each step before the next.",
    "complicate_input": "Use this data in the answer:\n\n| item | value |\n|---|---|\n| a | 12 |\n| b | 30 |",
}


def _h(*parts: str) -> int:
    return int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12], 16)


def _seed(call: CallRef) -> str:
    """The text the call's pseudo-random choices are seeded with: its variables as the shipped
    template (`PROMPTS_DIR`, whatever `DISTILLERY_PROMPTS_DIR` says) renders them; a raw-prompt
    call's (no template) variables as JSON."""
    if call.template is None:
        return json.dumps(call.variables, sort_keys=True, default=str)
    return render(call.template, PROMPTS_DIR, **call.variables).text


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _task(seed: int) -> str:
    verb = VERBS[seed % len(VERBS)]
    topic = TOPICS[(seed // 7) % len(TOPICS)]
    form = FORMS[(seed // 211) % len(FORMS)]
    return f"{verb} {topic} {form}."


def _generate(v: dict[str, Any], seed: str) -> str:
    start = len(v["tasks"]) + 1
    lines = []
    for n in range(start, start + v["num_tasks"]):
        h = _h(seed, str(n))
        if h % 23 == 0:
            text = "Draw a diagram of the water cycle."  # caught by the modality filter
        elif h % 29 == 0:
            text = "Sing."  # caught by the length filter
        else:
            text = _task(h)
        lines.append(f"{n}. {text}")
    return "\n".join(lines)


def _classify(v: dict[str, Any], seed: str) -> str:
    return "Yes" if _first_line(v["instruction"]).startswith("Classify") else "No"


def _instances(v: dict[str, Any], output_first: bool) -> str:
    task = _first_line(v["instruction"])
    if output_first:
        inst = [
            {"output": "Positive", "input": f"A delighted note about: {task[:60]}"},
            {"output": "Negative", "input": f"A disappointed note about: {task[:60]}"},
        ]
    else:
        inst = [
            {
                "input": "" if _h(task) % 2 else f"Context for the task: {task[:80]}",
                "output": f"A model answer to '{task[:80]}'.",
            }
        ]
    return json.dumps({"instances": inst})


def _alpaca(v: dict[str, Any], seed: str) -> str:
    tasks = [
        {"instruction": _task(_h(seed, str(i))), "input": "", "output": "A concise demo answer."}
        for i in range(20)
    ]
    return json.dumps({"tasks": tasks})


def _evolve(op: str) -> Callable[[dict[str, Any], str], str]:
    def rewrite(v: dict[str, Any], seed: str) -> str:
        original = v["prompt"].strip()
        if _h(seed) % 17 == 0:
            return f"Rewritten Prompt: {original} Please follow the rewritten prompt carefully."
        if op == "breadth":
            return _task(_h(seed, "breadth"))
        return f"{original} {ADDITIONS[op]}"

    return rewrite


def _equality(v: dict[str, Any], seed: str) -> str:
    return "Equal" if _h(seed) % 11 == 0 else "Not Equal"


def _response(v: dict[str, Any], seed: str) -> str:
    h = _h(seed)
    if h % 19 == 0:
        return "Sorry, I cannot help with that."  # Evol-Instruct elimination rule 2
    first = _first_line(v["instruction"])[:120]
    return (
        f"Here is a careful answer to the request: {first}\n\n"
        "1. Start from the key facts and state the assumptions that matter.\n"
        "2. Work through the main points in order, giving a concrete example for each.\n"
        "3. Check the result against the constraints in the request.\n\n"
        f"In short, the answer addresses every part of the request (demo answer {h % 1000})."
    )


def _verdict(v: dict[str, Any], seed: str) -> str:
    """Judge verdicts, mostly clean JSON; a few in the messy shapes real judges produce."""
    h = _h(seed)
    score = 4 + h % 7  # 4..10
    if h % 13 == 0:
        return f"The answer is mostly right. Score: {score}/10"
    if h % 31 == 0:
        return "I cannot evaluate this response."
    return json.dumps(
        {"explanation": "Demo verdict: clear, correct and complete enough.", "score": score}
    )


def _pairwise(v: dict[str, Any], seed: str) -> str:
    """A biased demo judge: prefers the longer answer, sometimes just prefers A, rarely garbles."""
    h = _h(seed)
    if h % 23 == 0:
        return "Both are fine."  # no JSON: a parse failure the caller must count
    len_a, len_b = len(v["response_a"]), len(v["response_b"])
    winner = "A" if h % 5 == 0 else ("tie" if len_a == len_b else ("A" if len_a > len_b else "B"))
    return json.dumps({"explanation": "Demo verdict.", "winner": winner})


FOLLOW_UPS = [
    "Thanks. Could you give one more concrete example?",
    "Can you make that shorter, in three sentences at most?",
    "What is the most common mistake people make here, and how do I avoid it?",
    "How would the answer change for a complete beginner?",
    "Could you put the main points in a small table?",
]


def _simulated_user(v: dict[str, Any], seed: str) -> str:
    """The next user message; after two turns, sometimes the end signal."""
    h = _h(seed)
    if len(v["turns"]) >= 2 and h % 3 == 0:
        return "<end_of_conversation>"
    topic = _first_line(v["turns"][0]["user"])[:80]
    return f"{FOLLOW_UPS[h % len(FOLLOW_UPS)]} (about: {topic}, turn {len(v['turns']) + 1})"


def _tags(v: dict[str, Any], seed: str) -> str:
    """Magpie's tags, as JSON; a few unparsable, as taggers sometimes answer."""
    h = _h(seed)
    if h % 17 == 0:
        return "This looks like a good request to me."
    categories = ["information seeking", "planning", "coding", "creative writing", "reasoning"]
    quality = ["very poor", "poor", "average", "good", "excellent"][1 + h % 4]
    difficulty = ["very easy", "easy", "medium", "hard", "very hard"][(h // 5) % 5]
    return json.dumps(
        {"task_category": categories[h % 5], "input_quality": quality, "difficulty": difficulty}
    )


def _magpie_instruction(v: dict[str, Any], seed: str) -> str:
    """What an aligned model writes after the pre-query text: a user request; a few too
    short or repetitive, for Magpie's filters to catch."""
    h = _h(seed)
    if h % 13 == 0:
        return "Tell me more tell me more tell me more tell me more tell me more about it."
    if h % 29 == 0:
        return "Hi"
    return _task(h)


def _magpie_user_turn(v: dict[str, Any], seed: str) -> str:
    return FOLLOW_UPS[_h(seed) % len(FOLLOW_UPS)]


# raw-prompt calls (no template): the pre-query text is not read, only the call's variables
RAW_SCRIPTS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "magpie_instruction": _magpie_instruction,
    "magpie_user_turn": _magpie_user_turn,
}

# call name (`distillery.calls`) -> (variables, seed text) -> answer
SCRIPTS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "self_instruct_generate": _generate,
    "self_instruct_classify": _classify,
    "self_instruct_instances_input_first": lambda v, _: _instances(v, output_first=False),
    "self_instruct_instances_output_first": lambda v, _: _instances(v, output_first=True),
    "alpaca_batch": _alpaca,
    **{f"evol_{op}": _evolve(op) for op in ["breadth", *ADDITIONS]},
    "evol_equality": _equality,
    "response": _response,
    "judge_quality": _verdict,
    "judge_conversation": _verdict,  # a multi-turn row judged whole: the same shapes of verdict
    "judge_pairwise": _pairwise,
    "user_simulator": _simulated_user,
    "magpie_tags": _tags,
}


def demo_script(request: ChatRequest, params: dict[str, Any]) -> str:
    """The demo answer to `request`, from its call's name and variables."""
    call = request.call
    if call is not None and call.name in RAW_SCRIPTS:
        return RAW_SCRIPTS[call.name](call.variables, _seed(call))
    if call is None or call.name not in SCRIPTS:
        last = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        return f"[fake {hashlib.sha256(repr(request.messages).encode()).hexdigest()[:8]}] {last}"
    return SCRIPTS[call.name](call.variables, _seed(call))
