"""GSM8K, built in: a small vendored subset, as conversations (its GRPO preset is ``garage.train.presets``').

``garage/data/vendor/gsm8k/`` holds the first 200 train and first 100 test rows of GSM8K
(OpenAI, MIT licence; see the LICENSE and README there). The app never reads anything
outside its own folder for it.

    rows("train" | "test", n)         -> [{"question", "answer"}]  (answers end in '#### N')
    conversations(split, n)           -> [{"messages": [user question, assistant worked answer]}]
    save_to_workspace(owner, name)    -> the train rows saved as a dataset in the owner's workspace
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from garage.data import store
from garage.errors import GarageError

VENDOR = Path(__file__).resolve().parent / "vendor" / "gsm8k"
SPLITS = ("train", "test")
DATASET_NAME = "gsm8k-train"     # the saved training dataset the preset points at
EVAL_NAME = "gsm8k"              # eval_dataset value meaning "the built-in GSM8K test subset"
ANSWER_FORMAT = "#### {answer}"
SYSTEM_PROMPT = ("Solve the math word problem. Reason step by step, then give the final answer on its own last "
                 "line in the form '#### <number>' (digits only, no units).")
_CALCULATOR = re.compile(r"<<[^>]*>>")


def rows(split: str = "train", n: int | None = None) -> list[dict]:
    """GSM8K rows of the vendored subset (``question`` and ``answer``), in file order."""
    if split not in SPLITS:
        raise GarageError(f"GSM8K split must be train or test; got {split!r}.")
    path = VENDOR / f"{split}.jsonl"
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                out.append(json.loads(line))
            if n is not None and len(out) >= n:
                break
    return out


def clean_answer(answer: str) -> str:
    """A worked answer without GSM8K's calculator annotations ('48/2 = <<48/2=24>>24' -> '48/2 = 24')."""
    return _CALCULATOR.sub("", answer)


def conversations(split: str = "train", n: int | None = None) -> list[dict]:
    """GSM8K as conversations: the question as the user turn, the worked answer (ending '#### N') as the model's."""
    return [{"messages": [{"role": "user", "content": r["question"]},
                          {"role": "assistant", "content": clean_answer(r["answer"])}]} for r in rows(split, n)]


def save_to_workspace(owner: str, name: str = DATASET_NAME, *, overwrite: bool = False) -> dict:
    """Save the vendored train rows as dataset ``name`` of ``owner`` (kept as is if it already exists)."""
    try:
        return store.load_meta(owner, name)
    except GarageError:
        pass
    return store.save_dataset(owner, name, conversations("train"), source="GSM8K (OpenAI, MIT licence), "
                              "first 200 train rows", format="question/answer", overwrite=overwrite)
