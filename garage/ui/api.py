"""API-only endpoints (no component of their own), for gradio_client and scripts.

Each takes plain JSON values; the caller's identity comes from the request, as in the UI.
"""

from __future__ import annotations

import gradio as gr

from garage.jobs import service
from garage.ui.session import user_errors, user_of


def start_training(config: dict, request: gr.Request, profile: gr.OAuthProfile | None = None,
                   oauth: gr.OAuthToken | None = None) -> str:
    """A TrainConfig as a dict (unset fields take the model's preset) in; the new run id out. A run with run_on
    hf-jobs starts a Hugging Face Job on the signed-in caller's account (off a Space: HF_TOKEN or a saved login)."""
    return service.start_training(config, user_of(request, profile), request=request, token=oauth)


def optimize_prompt(config: dict, request: gr.Request, profile: gr.OAuthProfile | None = None) -> str:
    """Optimise a system prompt with GEPA (no training): a TrainConfig as a dict (method prompt is implied: model or
    tuned_run, dataset, eval_dataset, val_rows, metric_calls, reflection_*); the new run id out. Follow it with
    training_status (its ``prompt``: the best prompt and its score), stop_training and resume_training."""
    return service.optimize_prompt(config, user_of(request, profile), request=request)


def training_status(run_id: str, request: gr.Request = None, profile: gr.OAuthProfile | None = None) -> dict:
    """State, step, total, latest metrics, reason if failed, output folder, reproducing command; for your own
    runs also where they were pushed."""
    return service.training_status(run_id, user_of(request, profile))


def stop_training(run_id: str, request: gr.Request, profile: gr.OAuthProfile | None = None) -> dict:
    """Stop a queued or running run of yours (takes effect within one optimizer step)."""
    return service.stop_training(run_id, user_of(request, profile))


def resume_training(run_id: str, request: gr.Request, profile: gr.OAuthProfile | None = None,
                    oauth: gr.OAuthToken | None = None) -> dict:
    """Resume an interrupted, stopped or failed run of yours from its last checkpoint (on Hugging Face Jobs: a new
    job, from the checkpoint the last one pushed)."""
    return service.resume_training(run_id, user_of(request, profile), request=request, token=oauth)


def list_runs(request: gr.Request, profile: gr.OAuthProfile | None = None) -> list:
    """Every run, newest first; ``mine`` marks yours."""
    return service.list_runs(user_of(request, profile))


def training_metrics(run_id: str) -> list:
    """Every logged metrics record of a run (metrics.jsonl)."""
    return service.run_metrics(run_id)


READ_ONLY = (training_status, list_runs, training_metrics)  # cheap disk reads: never queued behind work


def register() -> None:
    for func in (start_training, optimize_prompt, training_status, stop_training, resume_training, list_runs,
                 training_metrics):
        gr.api(user_errors(func), api_name=func.__name__, concurrency_limit=None if func in READ_ONLY else "default")
