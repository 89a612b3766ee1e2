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
from garage.data.rows import prompt_rows, split_rows, training_conversations
from garage.errors import GarageError
from garage.evaluation.evaluate import choose_scorer, held_out_rows
from garage.evaluation.methods import fingerprint
from garage.optimize.adapter import COMPONENT, PromptAdapter, SearchStopped
from garage.optimize.reflection import ReflectionModel
from garage.scoring.judge import Judge
from garage.scoring.rewards import rows_with_a_stated_number
from garage.secrecy import scrub_secrets
from garage.train import runner

DEFAULT_START = "Answer the user's question."  # the starting prompt when neither the config nor the set has one
TOP = 5  # candidates the status lists (best first); result.json has them all
# what a resumed search keeps of the status' prompt (what it found and spent); its result it says again
CARRIED = ("top", "reflection", "gpu_seconds", "start_score", "start_prompt", "base_model", "tuned_run")


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
    """Train and validation rows (``{"prompt", "reference"}``), the answer format, the starting prompt, and the
    scorer; a GarageError that says what to change when a set is empty or cannot be scored.

    The validation rows are Evaluate's (``held_out_rows``). The answer format is the metric's: a benchmark's own
    (its references are written so), else the config's; the starting prompt is the config's, else the
    benchmark's. Unlike Evaluate (where a GRPO run keeps the format it was trained on), the search may not move
    the goal: it looks for a prompt that meets the set's format."""
    conversations = training_conversations(cfg, owner)
    dataset = cfg.eval_dataset.strip()
    bench = benchmarks.get(dataset)
    train = conversations if dataset else split_rows(conversations, cfg.eval_fraction, cfg.seed)[0]
    try:
        val, val_label = held_out_rows(dataset, cfg, owner, "")
    except GarageError as exc:  # no held-out rows, no such dataset: said as what the search needs
        raise GarageError(f"Prompt optimisation needs validation rows. {exc}") from None
    train_rows, val_rows = prompt_rows(train), val[:cfg.val_rows]
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
    return {"train": train_rows, "val": val_rows, "val_label": f"{val_label.rsplit(' (', 1)[0]} "
            f"({len(val_rows)} rows)", "answer_format": answer_format if scorer == "answer" else "", "start": start,
            "scorer": scorer}


def kept_rows(run, cfg, owner: str, log=print) -> dict:
    """The rows the search started with (``prompt/rows.json``): GEPA's saved state counts rows by position, so a
    resumed search goes on with them even when the dataset was saved again since (said in the log)."""
    path = run.path / "prompt" / "rows.json"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        kept = None
    if kept is None:
        rows = task_rows(cfg, owner)
        files.write_atomic(path, json.dumps(rows))
        return rows
    try:
        now = task_rows(cfg, owner)
    except GarageError:
        now = None
    if now != kept:
        log("NOTICE: the dataset or the validation set changed since this search started; it goes on with the "
            "rows it started with (start a new prompt optimisation for the new rows).")
    return kept


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
        self.calls = 0  # metric calls spent, as GEPA counts them (its budget events)

    def on_valset_evaluated(self, event) -> None:
        score, index = round(float(event["average_score"]), 4), int(event["candidate_idx"])
        if index == 0 and self.best is not None:  # resumed: GEPA scores its start again (from the kept answers)
            return
        self.best = score if self.best is None else max(self.best, score)
        parents = [int(p) for p in event["parent_ids"] if p is not None]
        # the calls this scoring spent count now: GEPA's budget event comes after it, and a Stop in between would
        # leave the status at fewer calls than the plot's last point
        self.calls = max(self.calls, int(event["num_examples_evaluated"]))
        self.run.update(step=self.calls, total_steps=self.budget)
        # x: the metric calls spent (the budget's unit, one scale across resumes); the iteration kept beside it
        self.run.append_metrics({"step": self.calls, "val_score": score,
                                 "best_val_score": self.best, "candidate": index,
                                 "iteration": int(event["iteration"]), "time": time.time()})
        self.run.log(f"Candidate {index}{f' (from {parents})' if parents else ''} scores {score:.3f} on the "
                     f"validation rows (best {self.best:.3f}).")
        found = self.run.status().get("prompt") or {}
        if index == 0:
            found.update(start_score=score, start_prompt=event["candidate"][COMPONENT])
        top = [c for c in found.get("top") or [] if c["index"] != index]
        top.append({"index": index, "score": score, "parents": parents, "prompt": event["candidate"][COMPONENT]})
        self.run.update(prompt={**found, "top": sorted(top, key=lambda c: (-c["score"], c["index"]))[:TOP]})

    def on_iteration_end(self, event) -> None:
        """A point on the best line each iteration: most iterations score no new prompt on the validation rows."""
        if self.best is not None:
            self.run.append_metrics({"step": self.calls, "best_val_score": self.best,
                                     "iteration": int(event["iteration"]), "time": time.time()})

    def on_iteration_start(self, event) -> None:
        self.run.update(phase=f"iteration {event['iteration']}: reflecting and scoring a new prompt")

    def on_budget_updated(self, event) -> None:
        self.calls = int(event["metric_calls_used"])
        self.run.update(step=self.calls, total_steps=self.budget)
        self.run.merge_into("prompt", **self.spent())

    def spent(self) -> dict:
        return {"reflection": self.reflection.spent(),
                "gpu_seconds": round(self.before.get("gpu_seconds", 0.0) + self.adapter.gpu_seconds, 2)}


def optimize(run, cfg, owner: str, stop_event=None, log=print) -> dict:
    """Run (or resume) GEPA for ``run``; write ``prompt/result.json`` and the status' ``prompt``; say how it ended."""
    folder = run.path / "prompt"
    folder.mkdir(parents=True, exist_ok=True)
    rows = kept_rows(run, cfg, owner, log)
    base, tuned = cfg.model, None
    if cfg.tuned_run.strip():
        tuned = access.require("use", run.sibling(cfg.tuned_run.strip()), owner)
        access.require_weights(tuned)
        base = tuned.config().model
    judge = (Judge.from_config(cfg, owner=owner, log=log, cache_path=folder / "judge.jsonl")
             if rows["scorer"] == "judge" else None)
    # what earlier starts found and spent carries over; their result (best prompt) is this start's to say again
    before = {k: v for k, v in (run.status().get("prompt") or {}).items() if k in CARRIED}
    run.update(prompt={**before, "base_model": base, "tuned_run": tuned.id if tuned else None})

    def stopping() -> bool:
        return bool(stop_event is not None and stop_event.is_set()) or run.stop_requested()

    adapter = PromptAdapter(base=base, run=tuned, answer_format=rows["answer_format"], scorer=rows["scorer"],
                            judge=judge, max_new_tokens=cfg.max_completion_length, folder=folder,
                            visitor=device.visitor_of(run.id), should_stop=stopping)
    reflection = ReflectionModel(cfg.reflection_backend, cfg.reflection_model, base_url=cfg.reflection_base_url,
                                 spent=before.get("reflection"), log=log)
    progress = _Progress(run, cfg.metric_calls, adapter, reflection, before)
    if (folder / "gepa").is_dir():
        log(f"Resuming the search from its saved state ({run.status().get('step') or 0} metric calls spent; GEPA "
            "scores its starting prompt again from the kept answers, answering nothing twice).")
    log(f"Optimising the system prompt of {tuned.id + ' (tuned)' if tuned else base}: {len(rows['train'])} train "
        f"rows, validation on {rows['val_label']}, scored by {rows['scorer']}; budget {cfg.metric_calls} metric "
        f"calls. Starting prompt: {rows['start']!r}")
    stoppers = [lambda state: stopping(), reflection.failed]
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
    except SearchStopped:  # between two chunks of answers: GEPA's state is that of the iteration's start
        best_so_far(run, rows)
        return {"stopped": True, "metric_calls": run.status().get("step") or 0, "budget": cfg.metric_calls}
    finally:
        run.merge_into("prompt", **progress.spent())
        reflection.close()
    if reflection.failure is not None:  # GEPA saved its state and stopped: the run fails with the reason
        raise GarageError(f"{reflection.failure} The candidates scored so far are kept: press Resume to go on.")
    summary = write_result(run, cfg, result, rows, progress.spent(), base=base, tuned=tuned)
    stopped = stopping() and result.total_metric_calls < cfg.metric_calls
    ended_by = None
    if not stopped and result.total_metric_calls < cfg.metric_calls:
        ended_by = "Ended at the reflection model's token or dollar limit."
    log(f"Best prompt (candidate {summary['best_index']}): validation score {summary['best_score']:.3f} against "
        f"the starting prompt's {summary['start_score']:.3f}.")
    return {"stopped": stopped, "ended_by": ended_by, "metric_calls": result.total_metric_calls,
            "budget": cfg.metric_calls}


def best_so_far(run, rows: dict) -> None:
    """A search stopped inside an iteration (GEPA returned no result): its best candidate scored so far is its
    result until it goes on, for Compare and the Train tab's button."""
    status = run.status()
    found = status.get("prompt") or {}
    top = found.get("top") or []
    if top and "start_score" in found:
        run.merge_into("prompt", best_prompt=top[0]["prompt"], best_score=top[0]["score"], best_index=top[0]["index"],
                       validation=rows["val_label"], metric_calls=status.get("step") or 0,
                       candidates=max(c["index"] for c in top) + 1)


def write_result(run, cfg, result, rows: dict, spent: dict, *, base: str, tuned) -> dict:
    """``prompt/result.json`` and the status' ``prompt`` summary from GEPA's result."""
    scores = [round(float(s), 4) for s in result.val_aggregate_scores]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the earliest of equals: the start on a tie
    candidates = [{"index": i, "prompt": c[COMPONENT], "score": scores[i], "rows": len(result.val_subscores[i]),
                   "parents": [p for p in (result.parents[i] or []) if p is not None]}
                  for i, c in enumerate(result.candidates)]
    full = {"base_model": base, "tuned_run": tuned.id if tuned else None, "validation": rows["val_label"],
            "train_rows": len(rows["train"]), "scorer": rows["scorer"], "answer_format": rows["answer_format"],
            "validation_rows": [fingerprint(row) for row in rows["val"]], "max_new_tokens": cfg.max_completion_length,
            "start_prompt": candidates[0]["prompt"], "start_score": scores[0], "best_index": best,
            "best_prompt": candidates[best]["prompt"], "best_score": scores[best],
            "metric_calls": result.total_metric_calls, **spent, "candidates": candidates}
    files.write_atomic(run.path / "prompt" / "result.json", json.dumps(full, indent=1))
    summary = {k: v for k, v in full.items() if k not in ("candidates", "validation_rows")} | {
        "candidates": len(candidates)}
    run.merge_into("prompt", **summary)
    return summary
