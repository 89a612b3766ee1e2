"""The training API as plain functions: what the UI, gradio_client and the CLI call.

start_training(config, owner) -> run id; training_status(run id) -> dict;
stop_training / resume_training / delete_run (owner only); list_runs.
"""

from __future__ import annotations

import shlex
import sys
import time

from garage import catalog, paths
from garage.config import TrainConfig
from garage.jobs.store import shown_owner
from garage.jobs.worker import get_worker

LATEST_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "reward", "reward_std", "kl",
               "completions/mean_length")
# Plots, each with series of one scale: metric key -> series name.
PLOTS = {
    "loss": {"loss": "train loss", "eval_loss": "eval loss", "kl": "KL"},
    "rewards": {"reward": "reward", "reward_std": "reward spread"},  # + each rewards/<name>/mean
    "learning_rate": {"learning_rate": "learning rate"},
}
STATUS_KEYS = ("id", "owner", "state", "model", "dataset", "method", "step", "total_steps", "elapsed", "eta",
               "tokens_per_second", "final_loss", "eval_loss", "reason", "notices", "created", "duration")


def config_from(values: dict, *, fill_preset: bool = True) -> TrainConfig:
    """A validated TrainConfig from form or API values, the model's preset filling what is not given."""
    values = {k: v for k, v in dict(values or {}).items() if v is not None}
    base = {}
    if fill_preset and values.get("model"):
        base = dict(catalog.resolve(str(values["model"])).defaults)
        if values.get("method") == "grpo":  # RL wants its own learning rate, generations, lengths
            from garage.train.grpo import grpo_preset

            base.update(grpo_preset(str(values["model"])))
    return TrainConfig.from_dict({**base, **values})


def start_training(config: dict | TrainConfig, owner: str) -> str:
    cfg = config if isinstance(config, TrainConfig) else config_from(config)
    # On a shared Space a file path could name anyone's files (another user's datasets): saved datasets only.
    if cfg.dataset and (paths.shared() or "/" not in cfg.dataset and not cfg.dataset.endswith(".jsonl")):
        from garage.data.store import dataset_path

        dataset_path(owner, cfg.dataset)  # raises a clear error when the user has no such dataset
    return get_worker().submit(cfg, owner)


def training_status(run_id: str) -> dict:
    run = get_worker().store.get(run_id)
    status = run.status()
    out = {key: status.get(key) for key in STATUS_KEYS}
    out["owner"] = shown_owner(out["owner"])
    metrics = run.metrics()
    latest = {}
    for record in metrics:
        latest.update({k: v for k, v in record.items() if k in LATEST_KEYS or k.startswith("rewards/")})
    out["latest"] = latest
    out["checkpoint"] = (run.last_checkpoint().name if run.last_checkpoint() else None)
    out["output"] = str(run.output_dir()) if run.output_dir() else None
    out["command"] = reproduce_command(run)
    return out


def stop_training(run_id: str, owner: str) -> dict:
    return {"id": run_id, "state": get_worker().stop(run_id, owner)}


def resume_training(run_id: str, owner: str) -> dict:
    get_worker().resume(run_id, owner)
    return {"id": run_id, "state": "queued"}


def delete_run(run_id: str, owner: str) -> None:
    get_worker().delete(run_id, owner)


def list_runs(owner: str | None = None) -> list[dict]:
    """Every run (any session may watch), newest first; ``mine`` marks the caller's."""
    rows = []
    for run in get_worker().store.runs():
        status = run.status()
        rows.append({
            "id": run.id, "state": status.get("state"), "model": status.get("model"),
            "dataset": status.get("dataset"), "method": status.get("method"),
            "step": f"{status.get('step') or 0}/{status.get('total_steps') or '?'}",
            "final_loss": _round(status.get("final_loss")), "eval_loss": _round(status.get("eval_loss")),
            "duration_s": status.get("duration") or status.get("elapsed"),
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(status.get("created") or 0)),
            "mine": status.get("owner") == owner,
        })
    return rows


def active_run_of(owner: str) -> str | None:
    """The owner's newest queued or running run: what a reloaded page re-attaches to."""
    for run in get_worker().store.runs():
        status = run.status()
        if status.get("owner") == owner and status.get("state") in ("queued", "running"):
            return run.id
    return None


def reproduce_command(run) -> str:
    return f"python -m garage train {shlex.quote(str(run.config_path))}"


def metrics_long(run_id: str, plot: str = "loss") -> list[dict]:
    """One plot's metrics as long rows (step, value, series): every logged point, no limit."""
    names = PLOTS[plot]
    rows = []
    for record in get_worker().store.get(run_id).metrics():
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
