"""A prompt optimisation run (``method: prompt``): GEPA evolves the system prompt of a model against a metric.

The run lives in the run store like a training run (queued, running, stopped, resumed, its log and live plot),
and the worker runs it with ``execute`` instead of the trainer's. No weights change: the result is a prompt.

    train rows   the dataset's rows (its held-out share left out): GEPA's reflection minibatches
    validation   eval_dataset (a benchmark or a saved dataset), else the dataset's held-out rows: val_rows of them;
                 every candidate that does better on its minibatch is scored on all of them, and the chosen prompt
                 is the best there (the starting prompt is candidate 0, so the choice is never worse than it)
    budget       metric_calls (answers generated and scored), and optionally reflection tokens or dollars

``<run>/prompt/`` holds GEPA's own state (``gepa/``, what Resume continues from), every scored answer
(``answers.jsonl``), and at the end ``result.json``: the best prompt, its validation score against the starting
prompt's, every candidate with its score and parents, and what it cost.
"""

from __future__ import annotations

import json
import time
import traceback

import gepa

from garage import access, device, files
from garage.data import benchmarks
from garage.data.rows import dataset_rows, prompt_rows, split_rows, training_conversations
from garage.errors import GarageError
from garage.evaluation.evaluate import choose_scorer
from garage.optimize.adapter import COMPONENT, PromptAdapter
from garage.optimize.reflection import ReflectionModel
from garage.scoring.judge import Judge
from garage.scoring.rewards import rows_with_a_stated_number
from garage.secrecy import scrub_secrets
from garage.train import runner

DEFAULT_START = "Answer the user's question."
TOP = 5  # candidates the status lists (best first); result.json has them all  # the starting prompt when neither the config nor the set has one


def execute(run, stop_event) -> str:
    """Optimise the run's prompt; return its final state. Never raises: failures end up in status.json."""
    status = run.status()
    run.update(state="running", started=status.get("started") or time.time(), reason=None,
               phase="reading the rows and loading the model")
    with runner.library_logs_to(run):
        try:
            outcome = optimize(run, run.config(), status.get("owner", "local"), stop_event, log=run.log)
        except GarageError as exc:
            return runner.fail_run(run, str(exc))
        except Exception as exc:  # the full trace to the log, one line to the user
            run.log(scrub_secrets(traceback.format_exc()))
            return runner.fail_run(run, runner.explain_failure(exc))
    if outcome["stopped"]:
        return runner.end_run(run, "stopped", reason=f"Stopped after {outcome['metric_calls']} of "
                                                     f"{outcome['budget']} metric calls; Resume goes on.")
    return runner.end_run(run, "completed", reason=outcome.get("ended_by"))


# --- the rows ---------------------------------------------------------------------------------------------------

def task_rows(cfg, owner: str) -> dict:
    """Train and validation rows (``{"id", "prompt", "reference"}``), the answer format, the starting prompt, and
    the scorer; a GarageError that says what to change when a set is empty or cannot be scored."""
    conversations = training_conversations(cfg, owner)
    bench = benchmarks.get(cfg.eval_dataset)
    if cfg.eval_dataset.strip():
        train = conversations
        if bench is not None:
            val, val_label = bench.conversations(), bench.title
        else:
            val, val_label = [r for r in dataset_rows(owner, cfg.eval_dataset) if r.get("messages")], cfg.eval_dataset
    else:
        train, val = split_rows(conversations, cfg.eval_fraction, cfg.seed)
        val_label = f"held-out rows of {cfg.dataset}"
        if not val:
            raise GarageError(f"Prompt optimisation needs validation rows, and this setup holds none out "
                              f"(eval_fraction is {cfg.eval_fraction}, {len(conversations)} rows): name a validation "
                              f"set in eval_dataset ({', '.join(benchmarks.NAMES)}, or a saved dataset), or set "
                              "eval_fraction above 0.")
    train_rows, val_rows = _ids(prompt_rows(train), "train"), _ids(prompt_rows(val), "val")[:cfg.val_rows]
    if not train_rows:
        raise GarageError(f"Dataset {cfg.dataset!r} has no rows with a user turn to answer.")
    if not val_rows:
        raise GarageError(f"The validation set ({val_label}) has no rows with a user turn to answer.")
    scorer = choose_scorer("auto", val_rows, cfg, None, free_text=True)
    if scorer == "answer":  # rows whose reference states no final number cannot be scored by it
        train_rows, val_rows = rows_with_a_stated_number(train_rows)[0], rows_with_a_stated_number(val_rows)[0]
        if not train_rows:
            raise GarageError(f"No row of {cfg.dataset!r} states a final number to check answers against, and the "
                              f"validation set is scored by its numbers: train on rows like it (e.g. gsm8k-train).")
    answer_format = bench.answer_format if bench is not None else cfg.answer_format
    start = cfg.system_prompt.strip() or (bench.system_prompt if bench is not None else "") or DEFAULT_START
    return {"train": train_rows, "val": val_rows, "val_label": f"{val_label} ({len(val_rows)} rows)",
            "answer_format": answer_format if scorer == "answer" else "", "start": start, "scorer": scorer}


def _ids(rows: list[dict], split: str) -> list[dict]:
    return [{"id": f"{split}-{i}", **row} for i, row in enumerate(rows)]


# --- the optimisation ---------------------------------------------------------------------------------------------

class _Log:
    """GEPA's logger: its lines go to the run log."""

    def __init__(self, log):
        self._log = log

    def log(self, message: str) -> None:
        self._log(scrub_secrets(f"GEPA: {message}"))  # its tracebacks may quote a library's error text


class _Progress:
    """GEPA's callbacks: the live plot (latest and best validation score per iteration), the status, the list of
    candidates with their scores and parents."""

    def __init__(self, run, budget: int, adapter: PromptAdapter, reflection: ReflectionModel, before: dict):
        self.run, self.budget, self.adapter, self.reflection, self.before = run, budget, adapter, reflection, before
        scored = [c["score"] for c in before.get("top") or []]  # a resumed search: what it had found
        self.best = max(scored) if scored else None

    def on_valset_evaluated(self, event) -> None:
        score, index = round(float(event["average_score"]), 4), int(event["candidate_idx"])
        if index == 0 and self.best is not None:  # resumed: GEPA scores its start again (from the kept answers)
            return
        self.best = score if self.best is None else max(self.best, score)
        parents = [int(p) for p in event["parent_ids"] if p is not None]
        self.run.append_metrics({"step": int(event["iteration"]), "val_score": score, "best_val_score": self.best,
                                 "candidate": index, "time": time.time()})
        self.run.log(f"Candidate {index}{f' (from {parents})' if parents else ''} scores {score:.3f} on the "
                     f"validation rows (best {self.best:.3f}).")
        found = self.run.status().get("prompt") or {}
        top = [c for c in found.get("top") or [] if c["index"] != index]
        top.append({"index": index, "score": score, "parents": parents, "prompt": event["candidate"][COMPONENT]})
        self.run.update(prompt={**found, "top": sorted(top, key=lambda c: (-c["score"], c["index"]))[:TOP]})

    def on_iteration_start(self, event) -> None:
        self.run.update(phase=f"iteration {event['iteration']}: reflecting and scoring a new prompt")

    def on_budget_updated(self, event) -> None:
        self.run.update(step=int(event["metric_calls_used"]), total_steps=self.budget,
                        prompt={**(self.run.status().get("prompt") or {}), **self.spent()})

    def spent(self) -> dict:
        return {"reflection": self.reflection.spent(),
                "gpu_seconds": round(self.before.get("gpu_seconds", 0.0) + self.adapter.gpu_seconds, 2)}


def optimize(run, cfg, owner: str, stop_event=None, log=print) -> dict:
    """Run (or resume) GEPA for ``run``; write ``prompt/result.json`` and the status' ``prompt``; say how it ended."""
    rows = task_rows(cfg, owner)
    base, tuned = cfg.model, None
    if cfg.tuned_run.strip():
        tuned = access.require("use", run.sibling(cfg.tuned_run.strip()), owner)
        access.require_weights(tuned)
        base = tuned.config().model
    folder = run.path / "prompt"
    folder.mkdir(parents=True, exist_ok=True)
    judge = (Judge.from_config(cfg, owner=owner, log=log, cache_path=folder / "judge.jsonl")
             if rows["scorer"] == "judge" else None)
    before = run.status().get("prompt") or {}
    adapter = PromptAdapter(base=base, run=tuned, answer_format=rows["answer_format"], scorer=rows["scorer"],
                            judge=judge, max_new_tokens=cfg.max_completion_length, folder=folder,
                            visitor=device.visitor_of(run.id), log=log)
    reflection = ReflectionModel(cfg.reflection_backend, cfg.reflection_model, base_url=cfg.reflection_base_url,
                                 spent=before.get("reflection"), log=log)
    progress = _Progress(run, cfg.metric_calls, adapter, reflection, before)
    log(f"Optimising the system prompt of {tuned.id + ' (tuned)' if tuned else base}: {len(rows['train'])} train "
        f"rows, validation on {rows['val_label']}, scored by {rows['scorer']}; budget {cfg.metric_calls} metric "
        f"calls. Starting prompt: {rows['start']!r}")
    stoppers = [lambda state: bool(stop_event is not None and stop_event.is_set()) or run.stop_requested(),
                reflection.failed]
    if cfg.reflection_max_tokens:
        stoppers.append(lambda state: reflection.total_tokens_in + reflection.total_tokens_out
                        >= cfg.reflection_max_tokens)
    try:
        result = gepa.optimize(
            seed_candidate={COMPONENT: rows["start"]}, trainset=rows["train"], valset=rows["val"], adapter=adapter,
            reflection_lm=reflection, reflection_minibatch_size=min(cfg.reflection_minibatch_size, len(rows["train"])),
            max_metric_calls=cfg.metric_calls, max_reflection_cost=cfg.reflection_max_dollars or None,
            stop_callbacks=stoppers, run_dir=str(folder / "gepa"), callbacks=[progress], logger=_Log(log),
            seed=cfg.seed, raise_on_exception=True, track_best_outputs=False)
    finally:
        run.update(prompt={**(run.status().get("prompt") or {}), **progress.spent()})
        reflection.close()
    if reflection.failure is not None:  # GEPA saved its state and stopped: the run fails with the reason
        raise GarageError(f"{reflection.failure} The candidates scored so far are kept: press Resume to go on.")
    summary = write_result(run, result, rows, progress.spent(), base=base, tuned=tuned)
    stopped = bool(stop_event is not None and stop_event.is_set()) or run.stop_requested()
    ended_by = None
    if not stopped and result.total_metric_calls < cfg.metric_calls:
        ended_by = "Ended at the reflection model's token or dollar limit."
    log(f"Best prompt (candidate {summary['best_index']}): validation score {summary['best_score']:.3f} against "
        f"the starting prompt's {summary['start_score']:.3f}.")
    return {"stopped": stopped and result.total_metric_calls < cfg.metric_calls, "ended_by": ended_by,
            "metric_calls": result.total_metric_calls, "budget": cfg.metric_calls}


def write_result(run, result, rows: dict, spent: dict, *, base: str, tuned) -> dict:
    """``prompt/result.json`` and the status' ``prompt`` summary from GEPA's result."""
    scores = [round(float(s), 4) for s in result.val_aggregate_scores]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the earliest of equals: the start on a tie
    candidates = [{"index": i, "prompt": c[COMPONENT], "score": scores[i], "rows": len(result.val_subscores[i]),
                   "parents": [p for p in (result.parents[i] or []) if p is not None]}
                  for i, c in enumerate(result.candidates)]
    full = {"base_model": base, "tuned_run": tuned.id if tuned else None, "validation": rows["val_label"],
            "train_rows": len(rows["train"]), "scorer": rows["scorer"], "answer_format": rows["answer_format"],
            "start_prompt": candidates[0]["prompt"], "start_score": scores[0], "best_index": best,
            "best_prompt": candidates[best]["prompt"], "best_score": scores[best],
            "metric_calls": result.total_metric_calls, **spent, "candidates": candidates}
    files.write_atomic(run.path / "prompt" / "result.json", json.dumps(full, indent=1))
    summary = {k: v for k, v in full.items() if k != "candidates"} | {"candidates": len(candidates)}
    run.update(prompt={**(run.status().get("prompt") or {}), **summary})
    return summary
