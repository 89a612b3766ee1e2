"""chat_compare: the same conversation answered by the base model and by a run's tuned model."""

from __future__ import annotations

from garage.errors import GarageError
from garage.infer.engine import GenSettings, get_engine


def build_messages(history: list[dict], prompt: str, system_prompt: str = "") -> list[dict]:
    """The conversation to send: optional system prompt, earlier turns, the new prompt."""
    if not prompt or not prompt.strip():
        raise GarageError("Type a prompt first.")
    messages = [{"role": "system", "content": system_prompt.strip()}] if system_prompt and system_prompt.strip() else []
    for turn in history or []:
        if turn.get("role") in ("user", "assistant") and isinstance(turn.get("content"), str):
            messages.append({"role": turn["role"], "content": turn["content"]})
    messages.append({"role": "user", "content": prompt.strip()})
    return messages


def resolve_run(run_id: str | None):
    """(base model name, run or None) for a run id; no run id means the catalogue default base."""
    if not run_id:
        return None, None
    from garage.jobs.worker import get_worker

    run = get_worker().store.get(run_id)
    if run.output_dir() is None:
        raise GarageError(f"Run {run_id} has no trained weights yet ({run.status().get('state')}). Wait for it "
                          "to complete, or pick another run.")
    return run.config().model, run


def stream_compare(prompt: str, run_id: str | None = None, *, base_model: str = "tiny-gemma-3",
                   system_prompt: str = "", base_history: list | None = None, tuned_history: list | None = None,
                   settings: GenSettings | None = None):
    """Yield (base text, tuned text) while both stream; returns the two Answers."""
    model, run = resolve_run(run_id)
    messages = build_messages(base_history or [], prompt, system_prompt)
    # Multi-turn: each side continues its own conversation (their earlier answers differ).
    tuned = build_messages(tuned_history if tuned_history is not None else base_history or [], prompt, system_prompt)
    return (yield from get_engine().stream_pair(model or base_model, messages, settings or GenSettings(), run,
                                                tuned_messages=tuned))


def chat_compare(prompt: str, run_id: str | None = None, *, base_model: str = "tiny-gemma-3",
                 system_prompt: str = "", settings: GenSettings | None = None) -> dict:
    """Both full answers for one prompt (the API call)."""
    stream = stream_compare(prompt, run_id, base_model=base_model, system_prompt=system_prompt, settings=settings)
    while True:
        try:
            next(stream)
        except StopIteration as stop:
            base, tuned = stop.value
            break
    return {"base": base.text, "tuned": tuned.text if tuned else None,
            "base_tokens_per_second": base.tokens_per_second,
            "tuned_tokens_per_second": tuned.tokens_per_second if tuned else None}
