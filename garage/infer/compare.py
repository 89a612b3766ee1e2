"""Compare: the same conversation answered by the base model and by a run's tuned model, and its eval rows.

A run here is already the caller's to use (``garage.access``; ``garage.jobs.chat`` resolves and checks it)."""

from __future__ import annotations

from garage import access, device
from garage.data.rows import split_rows, training_conversations
from garage.errors import GarageError
from garage.infer.engine import GenSettings, drain, get_engine
from garage.offline_models import TINY_NAME


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


CHAT_SECONDS = 120  # GPU seconds a Compare stream asks for on ZeroGPU


def stream_compare(prompt: str, run=None, *, base_model: str = TINY_NAME, system_prompt: str = "",
                   base_history: list | None = None, tuned_history: list | None = None,
                   settings: GenSettings | None = None):
    """Yield (base text, tuned text) while both stream; returns the two Answers. ``run``: a run with weights, or
    None for ``base_model`` alone."""
    if run is not None:
        access.require_weights(run)
    model = run.config().model if run is not None else base_model
    messages = build_messages(base_history or [], prompt, system_prompt)
    # Multi-turn: each side continues its own conversation (their earlier answers differ).
    tuned = build_messages(tuned_history if tuned_history is not None else base_history or [], prompt, system_prompt)
    return (yield from get_engine().stream_pair(model, messages, settings or GenSettings(), run,
                                                tuned_messages=tuned))


def stream_on_device(prompt: str, run=None, **kwargs):
    """``stream_compare`` where the GPU is (one ZeroGPU call on a ZeroGPU Space): the same yields and return."""
    return (yield from device.stream(stream_compare, prompt, run, seconds=CHAT_SECONDS, **kwargs))


def chat_compare(prompt: str, run=None, *, base_model: str = TINY_NAME, system_prompt: str = "",
                 settings: GenSettings | None = None) -> dict:
    """Both full answers for one prompt (the API call)."""
    base, tuned = drain(stream_compare(prompt, run, base_model=base_model, system_prompt=system_prompt,
                                       settings=settings))
    return {"base": base.text, "tuned": tuned.text if tuned else None,
            "base_tokens_per_second": base.tokens_per_second,
            "tuned_tokens_per_second": tuned.tokens_per_second if tuned else None}


def eval_examples(run, n: int = 5, settings: GenSettings | None = None) -> list[dict]:
    """Base answer, tuned answer and reference for ``n`` rows of the run's eval split (or its first rows)."""
    if run is None:
        raise GarageError("Pick a fine-tuned run to compare on its eval rows.")
    access.require_weights(run)
    cfg = run.config()
    train_rows, eval_rows = split_rows(training_conversations(cfg, run.status().get("owner", "local")),
                                       cfg.eval_fraction, cfg.seed)
    source = "eval" if eval_rows else "train"
    rows = (eval_rows or train_rows)[: max(1, int(n))]
    settings = settings or GenSettings(greedy=True, max_new_tokens=256)
    out = []
    for row in rows:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt, reference = messages[:last], messages[last]["content"]
        base, tuned = drain(get_engine().stream_pair(cfg.model, prompt, settings, run))
        out.append({"split": source, "prompt": prompt[-1]["content"], "base": base.text, "tuned": tuned.text,
                    "reference": reference, "tuned_matches": tuned.text.strip() == reference.strip()})
    return out
