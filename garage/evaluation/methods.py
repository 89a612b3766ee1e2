"""Which helped: base, base + an optimised prompt, fine-tuned runs, tuned + prompt, on one held-out set.

Every entry answers the same rows greedily and is scored by the same scorer, so the columns compare: accuracy, format failures apart from wrong answers, and what the method cost to make (GPU seconds
of training or of prompt search, LLM calls, tokens and dollars where known) next to what evaluating it took.

    compare(entries, dataset, n, owner=...)  -> {"dataset", "n", "scorer", "rows": [one per entry]}
    to_csv(table), to_markdown(table)        -> the same rows for a spreadsheet or a model card

An entry is ``{"method", "label", "base", "run" (tuned weights, or None), "system_prompt" (None: as Evaluate
chooses), "cost": {...}}``; the jobs layer makes them from a user's runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time

from garage import device
from garage.data import benchmarks
from garage.data.rows import with_system_prompt
from garage.errors import GarageError
from garage.evaluation.evaluate import (answers_on_engine, choose_scorer, generation_seconds, held_out_rows,
                                        prompt_settings, score_texts, summarize)
from garage.scoring.rewards import prompt_text, rows_with_a_stated_number

COLUMNS = ("method", "model", "accuracy", "format_failure_rate", "wrong_answer_rate", "mean_score", "n",
           "gpu_seconds", "llm_calls", "llm_tokens", "dollars", "eval_seconds", "answer_format", "system_prompt")
HEADERS = {"method": "method", "model": "model", "accuracy": "accuracy", "format_failure_rate": "format failures",
           "wrong_answer_rate": "wrong answers", "mean_score": "mean score", "n": "rows",
           "gpu_seconds": "GPU s to make it", "llm_calls": "LLM calls", "llm_tokens": "LLM tokens",
           "dollars": "LLM $", "eval_seconds": "eval s", "answer_format": "answer format",
           "system_prompt": "system prompt"}


def compare(entries: list[dict], dataset: str, n: int = 50, *, owner: str, judge=None, max_new_tokens: int = 512,
            batch_size: int = 8, exclude: set | frozenset = frozenset(), answer_format: str | None = None,
            log=None) -> dict:
    """Score each entry on the first ``n`` rows of ``dataset`` (a benchmark or a saved dataset), leaving out the
    rows whose fingerprint is in ``exclude`` (those a prompt was chosen on: its score there is not held-out).

    Each entry answers in a call of its own where the GPU is (one ZeroGPU call per entry, sized to it) and is scored
    outside it (a judge's client does not cross to the GPU worker). The answer format is one for the table: a
    benchmark's own, else ``answer_format`` (the one a prompt was searched against), else none (the final number
    however written); only a GRPO run keeps the format it was trained to write, as Evaluate does. The system prompt
    is the entry's (an optimised one), else Evaluate's for its run (``prompt_settings``)."""
    say = log or (lambda message: None)
    if not entries:
        raise GarageError("Pick at least one model, prompt run or fine-tuned run to compare.")
    dataset = str(dataset or "").strip()
    if not dataset:
        raise GarageError("Name the held-out set to compare on (gsm8k, gsm8k-full, aime24, or a saved dataset): "
                          "every method answers the same rows.")
    rows, label = held_out_rows(dataset, None, owner, "")
    kept = [r for r in rows if fingerprint(r) not in exclude]
    left_out, rows = len(rows) - len(kept), kept[:max(0, int(n))]
    if not rows:
        raise GarageError(f"No prompts to compare on in {label} (n = {n}" + (
            f"; {left_out} left out as rows a prompt was chosen on)." if left_out else ")."))
    scorer = choose_scorer("auto", rows, None, judge, free_text=True)
    if scorer == "answer":
        rows = rows_with_a_stated_number(rows)[0]
    # the first model loads before the clock starts: "eval s" is answering, for every entry alike
    device.call(answers_on_engine, entries[0]["base"], None, [rows[0]["prompt"]], 1, 1, seconds=120)
    table = []
    bench = benchmarks.get(dataset)
    table_format = bench.answer_format if bench is not None else (answer_format or "")
    for entry in entries:
        run = entry.get("run")
        cfg = run.config() if run is not None else None
        own_format, system_prompt = prompt_settings(dataset, cfg, None, entry.get("system_prompt"))
        entry_format = own_format if cfg is not None and cfg.method == "grpo" else table_format
        prompted = [{**r, "prompt": with_system_prompt(r["prompt"], system_prompt)} for r in rows]
        say(f"Scoring {entry['label']} on {len(rows)} rows of {label}.")
        started = time.perf_counter()
        texts = device.call(answers_on_engine, entry["base"], run, [r["prompt"] for r in prompted],
                            int(max_new_tokens), batch_size, seconds=generation_seconds(len(rows), max_new_tokens))
        seconds = round(time.perf_counter() - started, 2)
        summary = summarize(score_texts(texts, prompted, entry_format, scorer, judge), scorer)
        cost = entry.get("cost") or {}
        table.append({"method": entry["method"], "model": entry["label"], "accuracy": summary["accuracy"],
                      "format_failure_rate": summary["format_failure_rate"],
                      "wrong_answer_rate": summary.get("wrong_answer_rate"), "mean_score": summary.get("mean_score"),
                      "n": summary["n"], "gpu_seconds": cost.get("gpu_seconds"), "llm_calls": cost.get("llm_calls"),
                      "llm_tokens": cost.get("llm_tokens"), "dollars": cost.get("dollars"), "eval_seconds": seconds,
                      "answer_format": entry_format, "system_prompt": system_prompt})
    return {"dataset": label, "n": len(rows), "left_out": left_out, "scorer": scorer, "rows": table}


def fingerprint(row: dict) -> str:
    """A prompt row's identity by its question, to tell which rows of a set a prompt was chosen on."""
    return hashlib.sha256(prompt_text(row["prompt"]).encode("utf-8")).hexdigest()[:16]


def to_csv(table: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table["rows"])
    return out.getvalue()


def to_markdown(table: dict) -> str:
    """The table for a model card or the page (the system prompts shortened; the CSV has them whole)."""
    shown = [c for c in COLUMNS if any(r.get(c) is not None for r in table["rows"])]
    left_out = (f", leaving out {table['left_out']} rows a prompt was chosen on" if table.get("left_out") else "")
    lines = [f"On {table['n']} rows of {table['dataset']}{left_out}, scored by {table['scorer']}, greedy answers:", "",
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
