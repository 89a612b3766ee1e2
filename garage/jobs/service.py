"""The training API as plain functions: what the UI, gradio_client and the CLI call.

start_training(config, owner) -> run id; training_status(run id) -> dict;
stop_training / resume_training / delete_run (owner only); list_runs.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time

from garage import access, paths
from garage.config import PREFERENCE_METHODS, TrainConfig
from garage.data.rows import preference_rows
from garage.data.store import dataset_path
from garage.errors import GarageError
from garage.hub import auth
from garage.jobs import hf_jobs, votes
from garage.jobs.store import Run, shown_owner
from garage.jobs.worker import get_worker
from garage.llm.keys import check_server_key_use, key_users
from garage.offline_models import TINY_NAME
from garage.optimize import prompt_run
from garage.scoring.judge import check_judge_key
from garage.train import tracking
from garage.train.presets import preset_for

LATEST_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "reward", "reward_std", "kl",
               "completions/mean_length", "val_score", "best_val_score", "eval_rewards/accuracies",
               "eval_rewards/margins")
# Plots, each with series of one scale: metric key -> series name.
PLOTS = {
    "loss": {"loss": "train loss", "eval_loss": "eval loss", "kl": "KL"},
    "rewards": {"reward": "reward", "reward_std": "reward spread",  # + each rewards/<name>/mean
                "val_score": "validation score (latest prompt)", "best_val_score": "validation score (best prompt)",
                # preference tuning (TRL's names): the implicit rewards of the two answers, and their margin
                "rewards/chosen": "reward of the chosen answer", "rewards/rejected": "reward of the rejected answer",
                "rewards/margins": "margin (chosen - rejected)", "eval_rewards/margins": "margin on held-out pairs"},
    "learning_rate": {"learning_rate": "learning rate"},
}
STATUS_KEYS = ("id", "owner", "state", "phase", "model", "dataset", "method", "step", "total_steps", "elapsed",
               "eta", "tokens_per_second", "first_step_seconds", "parameters", "trainable_parameters",
               "rows_per_pass", "passes_per_step", "final_loss", "eval_loss", "evaluation", "reason", "notices",
               "created", "duration", "pushed", "job", "processes", "prompt", "preference_eval")


def config_from(values: dict, *, fill_preset: bool = True) -> TrainConfig:
    """A validated TrainConfig from form or API values, the model's preset filling what is not given."""
    values = {k: v for k, v in dict(values or {}).items() if v is not None}
    base = preset_for(str(values["model"]), values.get("method")) if fill_preset and values.get("model") else {}
    return TrainConfig.from_dict({**base, **values})


def start_training(config: dict | TrainConfig, owner: str, *, request=None, token=None) -> str:
    """Queue a run; ``request``: the visitor's (on ZeroGPU its pieces draw on their GPU quota); ``token``: their
    Hugging Face sign-in (``gr.OAuthToken``) or a pasted token, for a run on Hugging Face Jobs."""
    cfg = config if isinstance(config, TrainConfig) else config_from(config)
    access.refuse_server_folder(cfg.model)  # said now, not when the queued run loads it
    # On a shared Space a file path could name anyone's files (another user's datasets): saved datasets only.
    if cfg.dataset and (not access.server_paths_allowed() or "/" not in cfg.dataset
                        and not cfg.dataset.endswith(".jsonl")):
        dataset_path(owner, cfg.dataset)  # raises a clear error when the user has no such dataset
    if cfg.method == "prompt":
        check_prompt_start(cfg, owner)
    if cfg.init_run.strip():
        continue_from(cfg, owner)
    if cfg.method in PREFERENCE_METHODS:
        preference_rows(cfg, owner)  # a dataset of conversations, or single answers for dpo, said now
    check_tracker(cfg, owner)
    if cfg.method == "grpo" and "judge" in cfg.rewards:  # said now, not when the queued run reaches the judge
        check_judge_key(cfg, owner)  # on Hugging Face Jobs the same key goes with the job, as a secret
        if cfg.run_on == "hf-jobs":
            hf_jobs.judge_secrets(cfg, owner)  # refuses a shared Space's key for a visitor's own job
    return get_worker().submit(cfg, owner, request=request, token=_jobs_token(cfg, token))


def continue_from(cfg: TrainConfig, owner: str) -> None:
    """A run that continues another's adapter (init_run): that run is the caller's to use, has an adapter, and was
    trained on the same base; the new LoRA takes its shape (rank, alpha, layers) so the weights fit."""
    start = run_for(cfg.init_run, owner, "use")
    access.require_weights(start)
    before = start.config()
    if before.method in ("full", "prompt") or not start.adapter_dir.exists():
        raise GarageError(f"Run {start.id} ({before.method}) has no LoRA adapter to continue from: choose a lora, "
                          "qlora, grpo, dpo, orpo or kto run.")
    if before.model != cfg.model:
        raise GarageError(f"Run {start.id} trained an adapter for {before.model}, not {cfg.model}: choose "
                          f"{before.model} as the base model to continue from it.")
    if cfg.run_on == "hf-jobs":
        raise GarageError("Continuing from a run's adapter (init_run) trains on this machine for now: set run_on "
                          "to here, or start the job from the base model.")
    cfg.lora_r, cfg.lora_alpha, cfg.target_modules = before.lora_r, before.lora_alpha, list(before.target_modules)


def check_tracker(cfg: TrainConfig, owner: str) -> None:
    """Whether the run may log where report_to says, said before it is queued: the tracker is installed and has
    its key; on a shared Space trackio's database and the W&B key are the Space owner's."""
    tracking.check_available(cfg)
    if cfg.report_to == "trackio" and paths.shared() and owner not in key_users():
        raise GarageError("On this shared Space trackio logs into the Space's own database, which only its owner can "
                          "open: choose tensorboard (its logs come in your run's adapter zip), or wandb with a "
                          "Space of your own.")
    if cfg.report_to == "wandb":
        # the key may be WANDB_API_KEY or a `wandb login` on the server: either is the Space owner's
        if paths.shared() and owner not in key_users() and os.environ.get("WANDB_MODE") not in ("offline", "disabled") \
                and os.environ.get("GARAGE_SHARE_SERVER_KEYS") != "1":
            raise GarageError("Logging to Weights & Biases would spend this shared Space's W&B account, which its "
                              "owner keeps for themselves. Choose tensorboard (its logs come in your run's adapter "
                              "zip), or run Gemma Garage on your own machine or a duplicate of this Space. The "
                              "Space's owner can share the account with GARAGE_SHARE_SERVER_KEYS=1.")
        if cfg.run_on == "hf-jobs":
            hf_jobs.tracker_secrets(cfg, owner)


def optimize_prompt(config: dict | TrainConfig, owner: str, *, request=None) -> str:
    """Queue a prompt optimisation (GEPA): a run of ``method: prompt`` (``garage.optimize.prompt_run``)."""
    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
    return start_training(config_from({**values, "method": "prompt"}, fill_preset=False), owner, request=request)


def check_prompt_start(cfg: TrainConfig, owner: str) -> None:
    """What a prompt optimisation would spend or read that ``owner`` may not, said before it is queued; with a
    tuned_run, the config's model becomes that run's base (what the search answers with)."""
    own_machine = "Run Gemma Garage on your own machine or a duplicate of this Space, where the key is yours"
    check_server_key_use(owner, cfg.reflection_backend, cfg.reflection_base_url,
                         purpose="Prompt optimisation's reflection model", instead=own_machine)
    if cfg.reflection_backend == "local" and cfg.reflection_model != TINY_NAME:
        access.refuse_local_model_folder(TINY_NAME)
    if cfg.tuned_run.strip():
        tuned = run_for(cfg.tuned_run, owner, "use")
        if tuned.config().method == "prompt":
            raise GarageError(f"Run {tuned.id} is a prompt optimisation: it changed no weights. Name a fine-tuned "
                              "run as tuned_run, or leave it empty to optimise the base model's prompt.")
        access.require_weights(tuned)
        cfg.model = tuned.config().model
    if prompt_run.task_rows(cfg, owner)["scorer"] == "judge":  # an empty set, no held-out rows: said here too
        check_judge_key(cfg, owner, instead="Score by numbers (a set whose answers end in a number) or by word "
                        "agreement (no rubric) instead of by the judge")


def _jobs_token(cfg: TrainConfig, token=None) -> str | None:
    """For a run on Hugging Face Jobs: the caller's sign-in or pasted token, else (off a shared Space) HF_TOKEN or
    a saved login. None for a run here: no token travels where it is not needed."""
    return auth.resolve_token(token) if cfg.run_on == "hf-jobs" else None


def training_status(run_id: str, user: str | None = None) -> dict:
    """A run's status for anyone watching (progress, losses); what is the owner's alone (its dataset's name, where
    its files are, the repos it was pushed to, maybe private) only for ``user`` its owner (None: the CLI's own)."""
    run = get_worker().store.get(run_id)
    status = run.status()
    out = {key: status.get(key) for key in STATUS_KEYS}
    checkpoint = run.last_checkpoint()
    out["checkpoint"] = checkpoint.name if checkpoint else None
    out["yours"] = access.sees_private(status, user)
    if out["yours"]:
        output = run.output_dir()
        out.update(output=str(output) if output else None, command=reproduce_command(run),
                   votes=votes.tally(user, run_id) if user else None)
    else:
        out.update(pushed=[], output=None, command=None, job=None, prompt=None,  # a found prompt tells of the data
                   dataset=OWNERS_ONLY if out["dataset"] else None,
                   reason=REASON_OWNERS_ONLY if out["reason"] else None, notices=[])
    out["owner"] = shown_owner(out["owner"])
    out["latest"] = latest_metrics(run)
    return out


OWNERS_ONLY = "(its owner's)"
REASON_OWNERS_ONLY = "(shown to its owner: a reason names their data)"


# metrics.jsonl path -> (inode, bytes read, the last of those bytes, latest values so far): a run's status is
# polled every second while it trains, so each poll parses only the records appended since the one before.
_latest_seen: dict[str, tuple] = {}
_latest_lock = threading.Lock()


def _take_latest(latest: dict, line: bytes) -> None:
    try:
        record = json.loads(line)
    except ValueError:
        return  # a line cut short by a crash: skipped, as Run.metrics() does
    if isinstance(record, dict):
        latest.update({k: v for k, v in record.items() if k in LATEST_KEYS or k.startswith("rewards/")})


def latest_metrics(run) -> dict:
    """The newest logged value of each LATEST_KEYS / rewards/* metric: what a full read of run.metrics() gives."""
    path = run.path / "metrics.jsonl"
    try:
        with open(path, "rb") as fh:
            inode = os.fstat(fh.fileno()).st_ino
            with _latest_lock:
                seen_inode, offset, last, latest = _latest_seen.get(str(path), (None, 0, b"", {}))
            fh.seek(max(0, offset - len(last)))
            if seen_inode != inode or fh.read(len(last)) != last:  # a new or rewritten file: from the start
                offset, last, latest = 0, b"", {}
                fh.seek(0)
            new = fh.read()
    except FileNotFoundError:
        return {}
    latest = dict(latest)
    done = new.rfind(b"\n") + 1  # whole lines only: the last may still be being written
    for line in new[:done].splitlines():
        _take_latest(latest, line)
    if done:
        with _latest_lock:
            _latest_seen[str(path)] = (inode, offset + done, new[max(0, done - 64):done], latest)
    out = dict(latest)
    _take_latest(out, new[done:])
    return out


def stop_training(run_id: str, owner: str) -> dict:
    return {"id": run_id, "state": get_worker().stop(run_id, owner)}


def resume_training(run_id: str, owner: str, *, request=None, token=None) -> dict:
    worker = get_worker()
    worker.resume(run_id, owner, request=request, token=_jobs_token(worker.store.get(run_id).config(), token))
    return {"id": run_id, "state": "queued"}


def delete_run(run_id: str, owner: str, *, token=None) -> None:
    """``token``: the owner's sign-in, which cancels a Hugging Face Job the run may still have going."""
    path = get_worker().store.get(run_id).path / "metrics.jsonl"
    get_worker().delete(run_id, owner, token=auth.resolve_token(token))
    with _latest_lock:
        _latest_seen.pop(str(path), None)


def list_runs(owner: str | None = None) -> list[dict]:
    """Every run (any session may watch), newest first; ``mine`` marks the caller's, whose datasets are named."""
    rows = []
    for run in get_worker().store.runs():
        status = run.status()
        yours = access.sees_private(status, owner)
        rows.append({
            "id": run.id, "state": status.get("state"), "model": status.get("model"),
            "dataset": status.get("dataset") if yours else OWNERS_ONLY,
            "method": status.get("method"),
            "step": f"{status.get('step') or 0}/{status.get('total_steps') or '?'}",
            "final_loss": _round(status.get("final_loss")), "eval_loss": _round(status.get("eval_loss")),
            "duration_s": status.get("duration") or status.get("elapsed"),
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(status.get("created") or 0)),
            "mine": status.get("owner") == owner, "yours": yours,
        })
    return rows


def run_for(run_id: str, user: str | None, action: str) -> Run:
    """The run ``run_id`` (an id, never a path: this is what the UI and the API call) when ``user`` may do
    ``action`` with it (``garage.access``: change, publish, use)."""
    if not str(run_id or "").strip():
        raise GarageError("Choose a run first.")
    return access.require(action, get_worker().store.get(str(run_id).strip()), user)


def runs_with_weights(user: str | None, action: str) -> list[tuple[Run, dict]]:
    """(run, status) of the runs with weights that ``user`` may do ``action`` with, newest first: what Compare
    (use) and Publish (publish) list, by one rule."""
    found = []
    for run in get_worker().store.runs():
        status = run.status()
        if access.may(action, status, user) and access.has_weights(run, status):
            found.append((run, status))
    return found


def prompt_runs(user: str | None) -> list[tuple[Run, dict]]:
    """(run, status) of ``user``'s finished prompt optimisations (a best prompt found), newest first."""
    found = []
    for run in get_worker().store.runs():
        status = run.status()
        if access.may("use", status, user) and (status.get("prompt") or {}).get("best_prompt") \
                and status.get("state") in ("completed", "stopped"):
            found.append((run, status))
    return found


def best_prompt(run_id: str, user: str | None) -> str:
    """The best prompt a prompt optimisation of ``user``'s found."""
    prompt = (run_for(run_id, user, "use").status().get("prompt") or {}).get("best_prompt")
    if not prompt:
        raise GarageError(f"Run {run_id} has found no prompt yet: it is not a prompt optimisation, or it has not "
                          "scored a candidate.")
    return prompt


def reproduce_command(run) -> str:
    return f"python -m garage train {shlex.quote(str(run.config_path))}"


def metrics_version(run_id: str) -> list | None:
    """Changes whenever the run logs a metric (or its log is rewritten): a poll can skip an unchanged log."""
    try:
        stat = (get_worker().store.get(run_id).path / "metrics.jsonl").stat()
    except FileNotFoundError:
        return None
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


def run_metrics(run_id: str) -> list[dict]:
    """Every logged metrics record of a run (metrics.jsonl)."""
    return get_worker().store.get(run_id).metrics()


def plot_rows(records: list[dict], plot: str = "loss") -> list[dict]:
    """One plot's points from a run's metrics records as long rows (step, value, series): every point, no limit."""
    names = PLOTS[plot]
    rows = []
    for record in records:
        for key, value in record.items():
            series = names.get(key)
            if plot == "rewards" and key.startswith("rewards/") and key.endswith("/mean"):
                series = key[len("rewards/"):-len("/mean")]
            if series:
                rows.append({"step": record["step"], "value": value, "series": series})
    return rows


def _round(value):
    return round(value, 4) if isinstance(value, (int, float)) else value


def python_executable() -> str:
    return sys.executable
