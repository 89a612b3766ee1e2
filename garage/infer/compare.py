"""chat_compare: the same conversation answered by the base model and by a run's tuned model."""

from __future__ import annotations

from garage.errors import GarageError
from garage.infer.engine import GenSettings, drain, get_engine


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
    check_gpu_room(model or base_model)
    messages = build_messages(base_history or [], prompt, system_prompt)
    # Multi-turn: each side continues its own conversation (their earlier answers differ).
    tuned = build_messages(tuned_history if tuned_history is not None else base_history or [], prompt, system_prompt)
    return (yield from get_engine().stream_pair(model or base_model, messages, settings or GenSettings(), run,
                                                tuned_messages=tuned))


def chat_compare(prompt: str, run_id: str | None = None, *, base_model: str = "tiny-gemma-3",
                 system_prompt: str = "", settings: GenSettings | None = None) -> dict:
    """Both full answers for one prompt (the API call)."""
    base, tuned = drain(stream_compare(prompt, run_id, base_model=base_model, system_prompt=system_prompt,
                                       settings=settings))
    return {"base": base.text, "tuned": tuned.text if tuned else None,
            "base_tokens_per_second": base.tokens_per_second,
            "tuned_tokens_per_second": tuned.tokens_per_second if tuned else None}


def check_gpu_room(base_model: str) -> None:
    """Chatting never breaks a training job: if the GPU lacks room while a job trains, say when it frees up."""
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        return
    from garage import catalog
    from garage.jobs.worker import get_worker

    worker = get_worker()
    if worker.current is None or get_engine().holds(base_model):
        return
    free, _ = torch.cuda.mem_get_info()
    need = catalog.resolve(base_model).params_b * 2.2 * 2**30  # bf16 weights + KV cache margin
    if need > free:
        status = worker.store.get(worker.current).status()
        eta = f" in about {status['eta']:.0f} s" if status.get("eta") else " when it finishes"
        raise GarageError(f"The GPU is busy training run {worker.current} and has {free / 2**30:.1f} GiB free; "
                          f"{base_model} needs about {need / 2**30:.1f} GiB. It frees up{eta}.")


def check_owner(run, user: str | None) -> None:
    """A run's rows come from its owner's dataset, and its tuned model answers with what it learnt from them: only
    the owner sees them (``user`` None: no check, the CLI)."""
    if user is not None and run.status().get("owner") != user:
        raise GarageError(f"Run {run.id} belongs to another user: its answers, eval rows and evaluation are theirs "
                          "to see. Pick one of your runs.")


def eval_examples(run_id: str, n: int = 5, settings: GenSettings | None = None, *, user: str | None = None
                  ) -> list[dict]:
    """Base answer, tuned answer and reference for ``n`` rows of the run's eval split (or its first rows)."""
    from garage.train.sft import load_conversations, split_rows

    if run_id:
        from garage.jobs.worker import get_worker

        check_owner(get_worker().store.get(run_id), user)
    model, run = resolve_run(run_id)
    if run is None:
        raise GarageError("Pick a fine-tuned run to compare on its eval rows.")
    cfg = run.config()
    train_rows, eval_rows = split_rows(load_conversations(cfg, run.status().get("owner", "local")),
                                       cfg.eval_fraction, cfg.seed)
    source = "eval" if eval_rows else "train"
    rows = (eval_rows or train_rows)[: max(1, int(n))]
    settings = settings or GenSettings(greedy=True, max_new_tokens=256)
    out = []
    for row in rows:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt, reference = messages[:last], messages[last]["content"]
        base, tuned = drain(get_engine().stream_pair(model, prompt, settings, run))
        out.append({"split": source, "prompt": prompt[-1]["content"], "base": base.text, "tuned": tuned.text,
                    "reference": reference, "tuned_matches": tuned.text.strip() == reference.strip()})
    return out
