"""Which helped: base, base + an optimised prompt, fine-tuned runs, tuned + prompt, on one held-out set.

Every entry answers the same rows greedily and is scored by the same scorer (``evaluate.score_side``), so the
columns compare: accuracy, format failures apart from wrong answers, and what the method cost to make (GPU seconds
of training or of prompt search, LLM calls, tokens and dollars where known) next to what evaluating it took.

    compare(entries, dataset, n, owner=...)  -> {"dataset", "n", "scorer", "rows": [one per entry]}
    to_csv(table), to_markdown(table)        -> the same rows for a spreadsheet or a model card

An entry is ``{"method", "label", "base", "run" (tuned weights, or None), "system_prompt" (None: the set's own),
"cost": {...}}``; the jobs layer makes them from a user's runs.
"""

from __future__ import annotations

import csv
import io

from garage.data.rows import with_system_prompt
from garage.errors import GarageError
from garage.evaluation.evaluate import choose_scorer, held_out_rows, prompt_settings, score_side
from garage.infer.engine import GenSettings, get_engine
from garage.scoring.rewards import rows_with_a_stated_number

COLUMNS = ("method", "model", "accuracy", "format_failure_rate", "wrong_answer_rate", "mean_score", "n",
           "gpu_seconds", "llm_calls", "llm_tokens", "dollars", "eval_seconds", "system_prompt")
HEADERS = {"method": "method", "model": "model", "accuracy": "accuracy", "format_failure_rate": "format failures",
           "wrong_answer_rate": "wrong answers", "mean_score": "mean score", "n": "rows",
           "gpu_seconds": "GPU s to make it", "llm_calls": "LLM calls", "llm_tokens": "LLM tokens",
           "dollars": "LLM $", "eval_seconds": "eval s", "system_prompt": "system prompt"}


def compare(entries: list[dict], dataset: str, n: int = 50, *, owner: str, judge=None, max_new_tokens: int = 512,
            batch_size: int = 8, engine=None, log=None) -> dict:
    """Score each entry on the first ``n`` rows of ``dataset`` (a benchmark or a saved dataset)."""
    say = log or (lambda message: None)
    if not entries:
        raise GarageError("Pick at least one model, prompt run or fine-tuned run to compare.")
    dataset = str(dataset or "").strip()
    if not dataset:
        raise GarageError("Name the held-out set to compare on (gsm8k, gsm8k-full, aime24, or a saved dataset): "
                          "every method answers the same rows.")
    answer_format, default_prompt = prompt_settings(dataset, None, None, None)
    rows, label = held_out_rows(dataset, None, owner, "")
    rows = rows[:max(0, int(n))]
    if not rows:
        raise GarageError(f"No prompts to compare on in {label} (n = {n}).")
    scorer = choose_scorer("auto", rows, None, judge, free_text=True)
    if scorer == "answer":
        rows = rows_with_a_stated_number(rows)[0]
    engine = engine or get_engine()
    settings = GenSettings(greedy=True, max_new_tokens=int(max_new_tokens))
    table = []
    for entry in entries:
        system_prompt = default_prompt if entry.get("system_prompt") is None else entry["system_prompt"]
        prompted = [{**r, "prompt": with_system_prompt(r["prompt"], system_prompt)} for r in rows]
        say(f"Scoring {entry['label']} on {len(rows)} rows of {label}.")
        _, _, summary = score_side(engine, entry["base"], entry.get("run"), prompted, settings, answer_format,
                                   scorer, judge, batch_size)
        cost = entry.get("cost") or {}
        table.append({"method": entry["method"], "model": entry["label"], "accuracy": summary["accuracy"],
                      "format_failure_rate": summary["format_failure_rate"],
                      "wrong_answer_rate": summary.get("wrong_answer_rate"), "mean_score": summary.get("mean_score"),
                      "n": summary["n"], "gpu_seconds": cost.get("gpu_seconds"), "llm_calls": cost.get("llm_calls"),
                      "llm_tokens": cost.get("llm_tokens"), "dollars": cost.get("dollars"),
                      "eval_seconds": summary["seconds"], "system_prompt": system_prompt})
    return {"dataset": label, "n": len(rows), "scorer": scorer, "answer_format": answer_format, "rows": table}


def to_csv(table: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table["rows"])
    return out.getvalue()


def to_markdown(table: dict) -> str:
    """The table for a model card or the page (the system prompts shortened; the CSV has them whole)."""
    shown = [c for c in COLUMNS if any(r.get(c) is not None for r in table["rows"])]
    lines = [f"On {table['dataset']}, scored by {table['scorer']}, greedy answers:", "",
             "| " + " | ".join(HEADERS[c] for c in shown) + " |", "|" + "---|" * len(shown)]
    for row in table["rows"]:
        lines.append("| " + " | ".join(_cell(c, row.get(c)) for c in shown) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value) -> str:
    if value is None:
        return ""
    if column in ("accuracy", "format_failure_rate", "wrong_answer_rate"):
        return f"{100 * value:.1f}%"
    if column == "system_prompt":
        text = " ".join(str(value).split())
        return (text[:60] + "...") if len(text) > 60 else text
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")
