"""The scripted `fake` teacher's answers: deterministic, offline, shaped like real answers for
each purpose the pipeline asks for, so the demo and the tests run every real code path
(parsing, filters, elimination rules, dedup, judge). Everything it writes is demo data and
every row it produces is marked `demo: true`.

Answers depend only on the request text, so the same request always gets the same answer.
A few answers are deliberately bad (a modality word, a leaked scaffold, an equal rewrite, a
"sorry") so that each filter has something to catch.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

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


def _user(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def _between_tags(text: str, nth: int = 0) -> str:
    found = re.findall(r"<instruction>\n?(.*?)\n?</instruction>", text, re.S)
    return found[nth].strip() if len(found) > nth else text


def _task(seed: int) -> str:
    verb = VERBS[seed % len(VERBS)]
    topic = TOPICS[(seed // 7) % len(TOPICS)]
    form = FORMS[(seed // 211) % len(FORMS)]
    return f"{verb} {topic} {form}."


def _generate(prompt: str) -> str:
    match = re.search(r"numbered (\d+) to (\d+)", prompt)
    start, end = (int(match.group(1)), int(match.group(2))) if match else (9, 16)
    lines = []
    for n in range(start, end + 1):
        seed = _h(prompt, str(n))
        if seed % 23 == 0:
            text = "Draw a diagram of the water cycle."  # caught by the modality filter
        elif seed % 29 == 0:
            text = "Sing."  # caught by the length filter
        else:
            text = _task(seed)
        lines.append(f"{n}. {text}")
    return "\n".join(lines)


def _instances(prompt: str, output_first: bool) -> str:
    task = prompt.rsplit("Task:", 1)[-1].strip().splitlines()[0]
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


def _response(user: str) -> str:
    seed = _h(user)
    if seed % 19 == 0:
        return "Sorry, I cannot help with that."  # Evol-Instruct elimination rule 2
    first = user.strip().splitlines()[0][:120]
    return (
        f"Here is a careful answer to the request: {first}\n\n"
        "1. Start from the key facts and state the assumptions that matter.\n"
        "2. Work through the main points in order, giving a concrete example for each.\n"
        "3. Check the result against the constraints in the request.\n\n"
        f"In short, the answer addresses every part of the request (demo answer {seed % 1000})."
    )


def _verdict(prompt: str) -> str:
    """Judge verdicts, mostly clean JSON; a few in the messy shapes real judges produce."""
    seed = _h(prompt)
    score = 4 + seed % 7  # 4..10
    if seed % 13 == 0:
        return f"The answer is mostly right. Score: {score}/10"
    if seed % 31 == 0:
        return "I cannot evaluate this response."
    return json.dumps(
        {"explanation": "Demo verdict: clear, correct and complete enough.", "score": score}
    )


def _pairwise(prompt: str) -> str:
    """A biased demo judge: prefers the longer answer, sometimes just prefers A, rarely garbles."""
    seed = _h(prompt)
    if seed % 23 == 0:
        return "Both are fine."  # no JSON: a parse failure the caller must count
    a = re.search(r"<response_a>\n?(.*?)\n?</response_a>", prompt, re.S)
    b = re.search(r"<response_b>\n?(.*?)\n?</response_b>", prompt, re.S)
    len_a, len_b = (len(m.group(1)) if m else 0 for m in (a, b))
    winner = (
        "A" if seed % 5 == 0 else ("tie" if len_a == len_b else ("A" if len_a > len_b else "B"))
    )
    return json.dumps({"explanation": "Demo verdict.", "winner": winner})


def demo_script(messages: list[dict[str, str]], params: dict[str, Any], purpose: str) -> str:
    prompt = _user(messages)
    if purpose == "self_instruct:generate":
        return _generate(prompt)
    if purpose == "self_instruct:classify":
        task = prompt.rsplit("Task:", 1)[-1].strip().splitlines()[0]
        return "Yes" if task.startswith("Classify") else "No"
    if purpose in ("self_instruct:input_first", "self_instruct:output_first"):
        return _instances(prompt, purpose.endswith("output_first"))
    if purpose == "alpaca:batch":
        tasks = [
            {
                "instruction": _task(_h(prompt, str(i))),
                "input": "",
                "output": "A concise demo answer.",
            }
            for i in range(20)
        ]
        return json.dumps({"tasks": tasks})
    if purpose.startswith("evol:") and purpose != "evol:equality":
        op = purpose.split(":", 1)[1]
        original = _between_tags(prompt)
        if _h(prompt) % 17 == 0:
            return f"Rewritten Prompt: {original} Please follow the rewritten prompt carefully."
        if op == "breadth":
            return _task(_h(prompt, "breadth"))
        return f"{original} {ADDITIONS[op]}"
    if purpose == "evol:equality":
        return "Equal" if _h(prompt) % 11 == 0 else "Not Equal"
    if purpose == "response":
        return _response(prompt)
    if purpose == "judge:quality":
        return _verdict(prompt)
    if purpose == "judge:pairwise":
        return _pairwise(prompt)
    last = prompt
    return f"[fake {hashlib.sha256(repr(messages).encode()).hexdigest()[:8]}] {last}"
