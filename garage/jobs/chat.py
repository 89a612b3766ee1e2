"""What Compare does with a user's runs: chat, eval rows and the accuracy evaluation, each on the device.

Each call resolves the run and checks the caller may use it (``garage.access``: a tuned model recites its owner's
training rows), checks the GPU has room next to a training job, and runs the work where the GPU is (one ZeroGPU
call on a ZeroGPU Space). ``user`` None is the command line, the machine's own.
"""

from __future__ import annotations

import json

from garage import access, catalog, device, files
from garage.errors import GarageError
from garage.evaluation import methods
from garage.evaluation.evaluate import evaluate as run_evaluation
from garage.infer import compare
from garage.infer.engine import GenSettings, get_engine
from garage.jobs import service
from garage.jobs.worker import get_worker
from garage.offline_models import TINY_NAME

EVALUATE_SECONDS = 300  # GPU seconds an evaluation asks for on ZeroGPU


def usable_run(run_id: str | None, user: str | None):
    """The run ``user`` may chat with (with weights), or None for the base model alone."""
    if not run_id:
        return None
    return service.run_for(run_id, user, "use")


def check_gpu_room(base_model: str) -> None:
    """Chatting never breaks a training job: if the GPU lacks room while a job trains, say when it frees up."""
    if not device.has_gpu():
        return
    import torch  # only where a GPU is, and the worker has loaded torch already

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


def stream(prompt: str, run_id: str | None, user: str | None, **kwargs):
    """Compare's stream for ``user``: (base text, tuned text) while both grow; returns the two Answers."""
    run = usable_run(run_id, user)
    check_gpu_room(run.config().model if run is not None else TINY_NAME)
    return (yield from compare.stream_on_device(prompt, run, **kwargs))


def chat(prompt: str, run_id: str | None, user: str | None, *, system_prompt: str = "",
         settings: GenSettings | None = None) -> dict:
    """Both full answers for one prompt."""
    run = usable_run(run_id, user)
    check_gpu_room(run.config().model if run is not None else TINY_NAME)
    return device.call(compare.chat_compare, prompt, run, system_prompt=system_prompt, settings=settings,
                       seconds=60)


def eval_examples(run_id: str, user: str | None, n: int = 5) -> list[dict]:
    """Base answer, tuned answer and reference for ``n`` of the run's eval rows (greedy)."""
    if not run_id:
        raise GarageError("Pick a fine-tuned run to compare on its eval rows.")
    return device.call(compare.eval_examples, usable_run(run_id, user), int(n))


def evaluate(run_or_model: str, user: str | None, dataset: str = "", n: int = 50) -> dict:
    """Accuracy of a run's base and tuned model (or of a model alone) on a held-out set; a named dataset is the
    caller's, and a run's report is written into it."""
    if not run_or_model:
        raise GarageError("Pick a fine-tuned run to evaluate.")
    try:
        target = get_worker().store.get(run_or_model)
    except GarageError:
        target = run_or_model  # a model name: evaluated alone
    else:
        access.require("use", target, user)
    return device.call(run_evaluation, target, dataset or None, int(n), owner=user or "local",
                       seconds=EVALUATE_SECONDS)


def compare_methods(run_ids: list[str], user: str | None, dataset: str, n: int = 50, base_model: str = "") -> dict:
    """Which helped, on one held-out set: the base model, each prompt run's best prompt (on the model it was found
    for), each fine-tuned run, and each fine-tuned run under each prompt found for its base model; ``user``'s runs.
    The table is kept in each fine-tuned run's folder (``methods.json``), for its model card."""
    runs = [service.run_for(run_id, user, "use") for run_id in dict.fromkeys(r for r in run_ids if r)]
    entries = method_entries(runs, user, base_model.strip())
    chosen_on, searched_format = set(), None  # rows a prompt was chosen on: its score there is not held-out
    for run in runs:
        if run.config().method == "prompt":
            result = prompt_result(run)
            chosen_on.update(result.get("validation_rows") or [])
            searched_format = searched_format or result.get("answer_format")
    table = methods.compare(entries, dataset, int(n), owner=user or "local", exclude=chosen_on,
                            answer_format=searched_format)
    for run in runs:
        if run.config().method != "prompt" and access.owns(run.status(), user):
            files.write_atomic(run.path / "methods.json", json.dumps(table, indent=1))
    return table


def method_entries(runs: list, user: str | None, base_model: str = "") -> list[dict]:
    """The table's entries for ``user``'s ``runs`` (checked as theirs already), with what each cost to make."""
    prompts = [(run, run.status().get("prompt") or {}) for run in runs if run.config().method == "prompt"]
    tuned = [run for run in runs if run.config().method != "prompt"]
    for run in tuned:
        access.require_weights(run)
    for run, found in prompts:
        if not found.get("best_prompt"):
            raise GarageError(f"Prompt run {run.id} has found no prompt yet ({run.status().get('state')}).")
    base = base_model or next((r.config().model for r in tuned), None) or next(
        (found["base_model"] for _, found in prompts), None)
    if not base:
        raise GarageError("Name a base model, or pick a run.")
    nothing = {"gpu_seconds": 0.0, "llm_calls": 0, "llm_tokens": 0, "dollars": 0.0}  # the base is not made
    entries = [{"method": "base", "label": base, "base": base, "run": None, "system_prompt": None, "cost": nothing}]
    by_id = {run.id: run for run in tuned}
    for run, found in prompts:
        target = by_id.get(found.get("tuned_run")) or (service.run_for(found["tuned_run"], user, "use")
                                                       if found.get("tuned_run") else None)
        entries.append({"method": "tuned + optimised prompt" if target else "base + optimised prompt",
                        "label": f"{target.id if target else found['base_model']} + prompt of {run.id}",
                        "base": found["base_model"], "run": target, "system_prompt": found["best_prompt"],
                        "cost": added(training_cost(target), prompt_cost(found)) if target else prompt_cost(found)})
    for run in tuned:
        cfg, cost = run.config(), training_cost(run)
        entries.append({"method": "GRPO" if cfg.method == "grpo" else f"SFT ({cfg.method})", "label": run.id,
                        "base": cfg.model, "run": run, "system_prompt": None, "cost": cost})
        for prompt_run, found in prompts:  # a prompt found for the base model, tried on the tuned one
            if not found.get("tuned_run") and found["base_model"] == cfg.model:
                entries.append({"method": "tuned + optimised prompt", "label": f"{run.id} + prompt of "
                                f"{prompt_run.id}", "base": cfg.model, "run": run,
                                "system_prompt": found["best_prompt"], "cost": added(cost, prompt_cost(found))})
    return entries


def added(*costs: dict) -> dict:
    """Costs summed key by key; None where a part does not know its share (a partial sum would pass for the whole)."""
    keys = {key for cost in costs for key in cost}
    return {key: (None if any(c.get(key) is None for c in costs) else sum(c[key] for c in costs)) for key in keys}


def training_cost(run) -> dict:
    """GPU seconds a run's training took (its seconds of training on each of its GPUs), and its LLM spend: none,
    or unknown for a GRPO run with the judge reward (the judge's calls are not counted yet)."""
    status, cfg = run.status(), run.config()
    seconds = status.get("train_seconds")
    judged = cfg.method == "grpo" and "judge" in cfg.rewards
    return {"gpu_seconds": None if seconds is None else round(seconds * (status.get("processes") or 1), 2),
            "llm_calls": None if judged else 0, "llm_tokens": None if judged else 0,
            "dollars": None if judged else 0.0}


def prompt_result(run) -> dict:
    """A prompt run's result.json (its candidates and the rows it chose on); empty before it has one."""
    try:
        return json.loads((run.path / "prompt" / "result.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def prompt_cost(found: dict) -> dict:
    """What a prompt search cost: its answering seconds, its reflection model's calls, tokens and dollars."""
    reflection = found.get("reflection") or {}
    tokens = None if reflection.get("input_tokens") is None else reflection["input_tokens"] + reflection["output_tokens"]
    return {"gpu_seconds": found.get("gpu_seconds"), "llm_calls": reflection.get("calls"), "llm_tokens": tokens,
            "dollars": reflection.get("dollars")}
