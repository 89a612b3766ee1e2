"""Pieces the benchmarks share: a mixed-length Q/A dataset and result files."""

from __future__ import annotations

import json
import platform
import random
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

WORDS = ("the model learns what the answer to each question is when it trains on enough examples of "
         "questions and answers about many topics such as cities rivers numbers colours and books").split()


def qa_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """Conversations of mixed length (4 to 60 words per answer), deterministic."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) + f" {i}?"
        answer = " ".join(rng.choices(WORDS, k=rng.randint(4, 60))) + "."
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return rows


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"cpu-{platform.machine()}"


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = device_name().replace(" ", "-").lower()
    path = RESULTS / f"{name}-{slug}.json"
    path.write_text(json.dumps({"device": device_name(), "machine": platform.node(), **result}, indent=1))
    return path


def versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "trl", "peft", "unsloth"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            out[name] = None
    return out
