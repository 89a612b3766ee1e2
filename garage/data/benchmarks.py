"""Held-out benchmarks built in, by name: GSM8K (a quick subset and the whole test set) and AIME 2024.

    gsm8k        the first 100 rows of GSM8K's test split (minutes on a CPU; the GRPO preset's evaluation)
    gsm8k-full   all 1,319 rows of GSM8K's test split (the number papers report)
    aime24       the 30 problems of AIME 2024 I and II; answers are integers 0-999, written \\boxed{N}

Every set is vendored in ``garage/data/vendor/`` (licences and sources in each folder's README), so a name means
the same rows online and offline: the full GSM8K test set is the rows of ``openai/gsm8k`` on the Hub. Each has the
answer format its references use and a system prompt that asks for it; Evaluate, the method comparison table,
GRPO's evaluation and prompt optimisation's validation set all read them through ``get``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from garage.data import gsm8k

VENDOR = Path(__file__).resolve().parent / "vendor"
QUICK_GSM8K_ROWS = 100
AIME_ANSWER_FORMAT = "\\boxed{{answer}}"
AIME_SYSTEM_PROMPT = ("Solve the competition math problem. Reason step by step, then give the final answer, an "
                      "integer from 0 to 999, as \\boxed{N} at the very end.")


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    answer_format: str
    system_prompt: str
    conversations: Callable[[], list[dict]]   # [{"messages": [user problem, assistant reference]}]

    def label(self, rows: int) -> str:
        """Where the rows come from, as a report says it."""
        return f"{self.title} ({rows} rows)"


def aime_rows() -> list[dict]:
    """AIME 2024's problems (``id``, ``problem``, ``solution`` = '\\boxed{N}', ``url``), in file order."""
    with (VENDOR / "aime24" / "test.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def aime_conversations() -> list[dict]:
    return [{"messages": [{"role": "user", "content": r["problem"]},
                          {"role": "assistant", "content": r["solution"]}]} for r in aime_rows()]


BENCHMARKS = {
    "gsm8k": Benchmark("gsm8k", f"GSM8K test, first {QUICK_GSM8K_ROWS}", gsm8k.ANSWER_FORMAT, gsm8k.SYSTEM_PROMPT,
                       lambda: gsm8k.conversations("test", QUICK_GSM8K_ROWS)),
    "gsm8k-full": Benchmark("gsm8k-full", "GSM8K test, all of it", gsm8k.ANSWER_FORMAT, gsm8k.SYSTEM_PROMPT,
                            lambda: gsm8k.conversations("test")),
    "aime24": Benchmark("aime24", "AIME 2024", AIME_ANSWER_FORMAT, AIME_SYSTEM_PROMPT, aime_conversations),
}
NAMES = tuple(BENCHMARKS)


def get(name: str | None) -> Benchmark | None:
    """The benchmark called ``name`` (any case), or None: then the name is a dataset's."""
    return BENCHMARKS.get(str(name or "").strip().lower())
