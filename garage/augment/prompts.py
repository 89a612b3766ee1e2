"""What we ask the writer and the rater, and the JSON shapes we ask for.

Every reply is a JSON *object* (Gemini's structured output and OpenAI's JSON mode
both want an object at the top). The source text sits between <document> tags.
"""

from __future__ import annotations

import json
from typing import Sequence

SYSTEM_WRITER = ("You create training data for a language model: question-answer pairs grounded in a source "
                 "text. You reply with JSON only.")
SYSTEM_RATER = ("You are a strict reviewer of training data for a language model. You reply with JSON only.")

_PAIR = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
         "required": ["question", "answer"]}
_COT_PAIR = {"type": "object", "properties": {"question": {"type": "string"}, "reasoning": {"type": "string"},
                                              "answer": {"type": "string"}},
             "required": ["question", "reasoning", "answer"]}

SCHEMAS = {
    "qa": {"type": "object", "properties": {"pairs": {"type": "array", "items": _PAIR}}, "required": ["pairs"]},
    "cot": {"type": "object", "properties": {"pairs": {"type": "array", "items": _COT_PAIR}}, "required": ["pairs"]},
    "summary": {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]},
}

RATING_SCHEMA = {
    "type": "object",
    "properties": {"ratings": {"type": "array", "items": {
        "type": "object",
        "properties": {"index": {"type": "integer"}, "rating": {"type": "integer"},
                       "supported": {"type": "boolean"}},
        "required": ["index", "rating", "supported"]}}},
    "required": ["ratings"],
}

SUMMARY_QUESTION = "Summarize the following text.\n\n{text}"


def _steer(instruction: str) -> str:
    instruction = (instruction or "").strip()
    if not instruction:
        return ""
    return ("\nThe dataset's author asks for the following; follow it for audience, language, difficulty and "
            f"tone, as long as the rules above still hold:\n<instruction>\n{instruction}\n</instruction>\n")


def generation_prompt(style: str, text: str, n: int, instruction: str = "") -> str:
    """The request for ``n`` items of ``style`` from one chunk of text."""
    if style == "summary":
        return (
            "Write a summary of the text between the <document> tags in 3 to 6 sentences: its main subject, "
            "its key facts and any conclusion. Use only what the text says.\n"
            f"{_steer(instruction)}"
            'Reply with JSON only, in this shape: {"summary": "..."}\n\n'
            f"<document>\n{text}\n</document>"
        )
    if style == "cot":
        return (
            f"Write exactly {n} questions about the text between the <document> tags that need several steps "
            "of reasoning to answer (combining facts, comparing, computing, explaining cause and effect), each "
            "with its reasoning and a short final answer.\n"
            "Rules:\n"
            "- Everything needed to answer must be in the text; never rely on outside knowledge.\n"
            "- The reasoning goes step by step (Step 1, Step 2, ...) and quotes or paraphrases the text.\n"
            "- The answer is one or two sentences that follow from the reasoning.\n"
            "- Questions must stand alone: never write 'the text', 'the passage' or 'the document'.\n"
            f"{_steer(instruction)}"
            'Reply with JSON only, in this shape: {"pairs": [{"question": "...", "reasoning": "Step 1: ...", '
            '"answer": "..."}]}\n\n'
            f"<document>\n{text}\n</document>"
        )
    return (
        f"Write exactly {n} question-answer pairs about the text between the <document> tags.\n"
        "Rules:\n"
        "- Ask about the important facts, definitions, figures, procedures and reasons in the text.\n"
        "- Every answer must be correct according to the text, complete, and stated in full sentences.\n"
        "- Questions must stand alone: never write 'the text', 'the passage' or 'the document'.\n"
        "- Each pair covers something different; do not ask the same thing twice in other words.\n"
        f"{_steer(instruction)}"
        'Reply with JSON only, in this shape: {"pairs": [{"question": "...", "answer": "..."}]}\n\n'
        f"<document>\n{text}\n</document>"
    )


def rating_prompt(pairs: Sequence[dict], text: str | None, instruction: str = "") -> str:
    """Ask for a 1-10 rating of each pair and whether the text supports its answer."""
    items = [{"index": i, "question": p.get("question", ""), "answer": _answer_with_reasoning(p)}
             for i, p in enumerate(pairs)]
    source = (f"\nThe source text the pairs were written from:\n<document>\n{text}\n</document>\n"
              if text else "\nNo source text is available: judge support by general correctness.\n")
    goal = f"\nThe dataset's author wanted: {instruction.strip()}\n" if instruction and instruction.strip() else ""
    return (
        "Rate each question-answer pair below as training data, on a scale from 1 to 10: add up\n"
        "- accuracy, 0-3: the answer is correct according to the source text;\n"
        "- relevance, 0-2: it is about what matters in the text;\n"
        "- clarity, 0-2: the question and answer are clear and stand alone;\n"
        "- usefulness, 0-3: a model would learn something worth knowing from it.\n"
        "Also say whether the source text supports the answer (supported: true), or whether the answer adds, "
        "contradicts or invents facts (supported: false).\n"
        f"{goal}{source}\n"
        f"<pairs>\n{json.dumps(items, ensure_ascii=False, indent=0)}\n</pairs>\n\n"
        'Reply with JSON only, one entry per pair, in this shape: '
        '{"ratings": [{"index": 0, "rating": 8, "supported": true}]}'
    )


def _answer_with_reasoning(pair: dict) -> str:
    if pair.get("reasoning"):
        return f"{pair['reasoning']}\nFinal answer: {pair.get('answer', '')}"
    return pair.get("answer", "")
