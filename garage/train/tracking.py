"""Experiment tracking (``report_to``): a run's metrics also logged to trackio, TensorBoard or Weights & Biases.

The app's own plots read ``metrics.jsonl`` (garage.train.callbacks) whatever is chosen here; a tracker is a copy
for the tools people already use. transformers' own callbacks do the logging. What this module adds is one tracked
run per Gemma Garage run: a run trains in pieces (chunk_steps, ZeroGPU, Stop and Resume, an app restart), each with
a trainer of its own, and each piece goes on logging into the same tracked run: trackio resumes the run named by
our run id, W&B the run whose id is ours, and TensorBoard reads every piece's event file in the run folder's
``tensorboard/`` as one run.

Where the logs live: trackio in its own database (``TRACKIO_DIR``, by default under HF_HOME: ``trackio show``
opens it, offline); TensorBoard in the run folder (in the adapter zip, and on the Hub with a Jobs result); W&B on
wandb.ai with the server's WANDB_API_KEY or ``wandb login`` (garage.jobs.service refuses it on a shared Space for
anyone but its owner), its local files in the run folder's ``wandb/`` (all of it with WANDB_MODE=offline).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from garage import paths
from garage.errors import GarageError

TRACKERS_PACKAGE = {"trackio": "trackio", "tensorboard": "tensorboard", "wandb": "wandb"}


def attach(trainer, cfg, run) -> None:
    """Before ``trainer.train``: the tracker's callback added, named after the run, in its project."""
    if cfg.report_to == "none":
        return
    # transformers' callbacks name the tracked run after args.run_name and trackio's project after args.project
    trainer.args.run_name = run.id
    trainer.args.project = cfg.tracking_project
    trainer.args.trackio_static_space_id = False  # no Space created on the Hub for the logs: they stay local
    trainer.add_callback(_callback(cfg, run, trainer.is_world_process_zero()))


def detach(cfg) -> None:
    """After a piece (finished, stopped or failed): W&B's run closed, so the next piece, maybe in another process,
    resumes it by id. trackio and TensorBoard close at the end of ``train`` themselves."""
    if cfg.report_to != "wandb":
        return
    import wandb  # a run that logs to W&B only

    if wandb.run is not None:
        wandb.finish()


def _callback(cfg, run, main_process: bool):
    # transformers' integrations import their tracker: only for a run that logs to one, on the worker
    from transformers.integrations import TensorBoardCallback, TrackioCallback, WandbCallback

    if cfg.report_to == "tensorboard":
        callback = TensorBoardCallback()
        callback.logging_dir = str(tensorboard_dir(run))  # opened by the main process at train begin
        return callback
    if cfg.report_to == "trackio":
        return TrackioCallback()
    if main_process:  # W&B: our run opened first, so WandbCallback logs into it instead of a new one a piece
        import wandb

        if wandb.run is not None and wandb.run.id != run.id:
            wandb.finish()  # another run's, left open by a piece that crashed
        if wandb.run is None:
            wandb.init(project=cfg.tracking_project, id=run.id, name=run.id, resume="allow", dir=str(run.path),
                       config=cfg.to_dict())
    return WandbCallback()


def tensorboard_dir(run) -> Path:
    return Path(run.path) / paths.TENSORBOARD


def check_available(cfg) -> None:
    """Raise ``GarageError`` saying what to install or set when ``report_to`` cannot log (said at Start)."""
    if cfg.report_to == "none":
        return
    package = TRACKERS_PACKAGE[cfg.report_to]
    if importlib.util.find_spec(package) is None:
        raise GarageError(f"report_to: {cfg.report_to} needs the {package} package, which this machine does not "
                          f"have: pip install {package} (it is in requirements.txt), or set report_to to none.")
    if cfg.report_to == "wandb" and not wandb_can_log():
        raise GarageError("report_to: wandb needs a Weights & Biases key on this machine: set WANDB_API_KEY (or run "
                          "`wandb login`), or set WANDB_MODE=offline to keep its logs in the run folder; or choose "
                          "trackio or tensorboard, which need no account.")


def wandb_can_log() -> bool:
    """A key W&B will find (its environment variable or a ``wandb login``), or offline mode, which needs none."""
    if os.environ.get("WANDB_API_KEY", "").strip() or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    netrc = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
