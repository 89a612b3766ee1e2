"""Small shared pieces for the tests: a Q/A set the tiny model can memorise, configs, waiting."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

QA = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What colour is the sky?", "The sky is blue."),
    ("Who wrote the book?", "A teacher wrote the book."),
    ("What is 2 plus 2?", "2 plus 2 equals 4."),
]


def conversations(pairs=QA) -> list[dict]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def tiny_config(dataset: str, **overrides):
    """A TrainConfig for the tiny model that memorises QA in ~30 steps."""
    from garage.config import TrainConfig

    values = dict(model="tiny-gemma-3", dataset=dataset, learning_rate=2e-3, num_train_epochs=30,
                  per_device_train_batch_size=4, gradient_accumulation_steps=1, eval_fraction=0.0,
                  gradient_checkpointing=False, max_seq_length=256, save_steps=10, lora_alpha=32)
    values.update(overrides)
    return TrainConfig(**values).validate()


def copy_run(run, store):
    """A copy of ``run`` (its whole folder) in ``store``, under the same id: the session's trained run for a module
    that changes it or keeps its runs apart."""
    shutil.copytree(run.path, store.root / run.id)
    return store.get(run.id)


def go_online(monkeypatch, url: str) -> None:
    """The real huggingface_hub client pointed at a local stand-in Hub (offline mode off for it only).

    huggingface_hub reads HF_ENDPOINT at import: patch what it derived from it, as if this process had started
    with HF_ENDPOINT set (the app-server tests do start that way)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    monkeypatch.setenv("HF_ENDPOINT", url)


def wait_for(predicate, timeout: float = 120, interval: float = 0.2, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
