"""A run's dataset, and the base and tuned greedy answers to a few of its rows (for the model card)."""

from __future__ import annotations

from garage.data.rows import dataset_rows
from garage.errors import GarageError
from garage.infer.engine import drain, GenSettings, get_engine


def run_conversations(run) -> list[dict]:
    """The conversations the run trained on: the owner's saved dataset, or the file it names."""
    owner = run.status().get("owner") or "local"
    return dataset_rows(owner, run.config().dataset)


def prompts_of(conversations: list[dict], n: int = 3) -> list[tuple[list[dict], str]]:
    """Up to ``n`` (messages up to the first answer, that answer) pairs from chat rows."""
    found = []
    for row in conversations:
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages:
            continue
        for i, message in enumerate(messages):
            if message.get("role") == "assistant" and i > 0 and messages[i - 1].get("role") == "user":
                found.append(([{"role": m["role"], "content": m["content"]} for m in messages[:i]],
                              str(message.get("content", ""))))
                break
        if len(found) >= n:
            break
    return found


def answer_examples(run, n: int = 3, max_new_tokens: int = 64) -> tuple[list[dict], str]:
    """(examples, note): each example has prompt, reference, base and tuned greedy answers.

    Never raises for a generation problem: the card then says why it has no examples.
    """
    try:
        pairs = prompts_of(run_conversations(run), n)
    except GarageError as exc:
        return [], f"No example answers: the run's dataset could not be read ({exc})."
    if not pairs:
        return [], "No example answers: the dataset has no user/assistant turns."
    settings = GenSettings(greedy=True, max_new_tokens=max_new_tokens)
    model = run.config().model
    engine = get_engine()
    base, tuned = [], []
    try:
        for messages, _ in pairs:  # one batched generate per prompt: base row and tuned row, one model copy
            base_answer, tuned_answer = drain(engine.stream_pair(model, messages, settings, run))
            base.append(base_answer.text)
            tuned.append(tuned_answer.text if tuned_answer else "")
    except Exception as exc:  # a card without examples beats no push at all
        run.log(f"Model card: example answers failed: {type(exc).__name__}: {exc}")
        return [], f"No example answers: generation failed ({type(exc).__name__})."
    examples = []
    for (messages, reference), base_text, tuned_text in zip(pairs, base, tuned):
        examples.append({"prompt": messages[-1]["content"], "system": next(
            (m["content"] for m in messages if m["role"] == "system"), ""), "reference": reference,
            "base": base_text, "tuned": tuned_text})
    return examples, ""

