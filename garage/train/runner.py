"""Run one training job from its run folder to a final state.

States: running -> completed | failed (one line of reason) | stopped. A run is
trained in pieces when ``chunk_steps`` is set or on a ZeroGPU Space: each piece
is one bounded GPU call that resumes from the previous piece's checkpoint, so the
step count and the loss curve are those of a run in one piece.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import traceback

from garage import device
from garage.errors import GarageError, is_out_of_memory
from garage.models.loading import import_unsloth
from garage.secrecy import scrub_secrets
from garage.config import PREFERENCE_METHODS
from garage.train import grpo, preference, processes, sft
from garage.train.pieces import PieceResult

LIBRARY_LOGGERS = ("transformers", "trl", "peft", "unsloth", "unsloth_zoo", "datasets", "accelerate")
ZEROGPU_PIECE_STEPS = 60  # steps per @spaces.GPU call when the user did not choose
# GPU seconds a piece asks for: ZeroGPU weighs them against the visitor's quota and ends a call that runs over.
# (loading and compiling, each step): 60 SFT steps 240 s; a preference row is two sequences, and its final
# evaluation on held-out rows a few steps more
PIECE_SECONDS = {"sft": (90, 2.5), "grpo": (120, 10.0), "preference": (120, 5.0)}


# Library warnings that alarm more than they should, and what they mean for the run (appended in the log).
EXPLAINED = {
    "Token indices sequence length is longer than the specified maximum sequence length":
        " (the tokenizer's own limit, not training's: training cuts conversations to max_seq_length, and the Data "
        "tab's preview counts those it cuts)",
    "The tokenizer has new PAD/BOS/EOS tokens that differ from the model config":
        " (harmless: the model now uses the tokenizer's special tokens, as it should)",
}


class _RunLogHandler(logging.Handler):
    """Library warnings (transformers, TRL, PEFT, Unsloth, datasets) emitted by this thread go to the run log."""

    def __init__(self, run):
        super().__init__(level=logging.WARNING)
        self.run, self.thread = run, threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            message = record.getMessage()
            meaning = next((note for start, note in EXPLAINED.items() if message.startswith(start)), "")
            self.run.log(f"{record.levelname.lower()} [{record.name}] {message}{meaning}")


@contextlib.contextmanager
def library_logs_to(run):
    handler = _RunLogHandler(run)
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def execute(run, stop_event: threading.Event) -> str:
    """Train the run; return its final state. Never raises: failures end up in status.json."""
    with library_logs_to(run):
        return _execute(run, stop_event)


def _execute(run, stop_event: threading.Event) -> str:
    status = run.status()
    owner = status.get("owner", "local")
    run.update(state="running", started=status.get("started") or time.time(), reason=None,
               phase="loading the model and the data")
    try:
        cfg = run.config()
        piece_steps = cfg.chunk_steps or (ZEROGPU_PIECE_STEPS if device.on_zerogpu() else 0)
        if device.on_zerogpu():
            train_piece = _zerogpu_piece
        elif cfg.gpus > 1 and cfg.run_on == "here":
            processes.check(cfg)  # the GPUs may have gone since Start (another app, CUDA_VISIBLE_DEVICES)
            train_piece = processes.train_piece
        else:
            train_piece = _piece_here(cfg)
        while True:
            result = train_piece(run, cfg, owner, stop_event, piece_steps)
            if result.nan:
                return fail_run(run, f"The loss became NaN at step {result.step}: lower the learning rate "
                                  f"(now {cfg.learning_rate}) or check the data for empty or garbled rows.")
            if result.stopped:
                run.log(f"Stopped by the user at step {result.step}.")
                return end_run(run, "stopped", reason=f"Stopped at step {result.step} of {result.total_steps}.")
            if result.finished:
                return end_run(run, "completed")
            if stop_event.is_set() or run.stop_requested():
                return end_run(run, "stopped", reason=f"Stopped at step {result.step} of {result.total_steps}.")
            if device.on_zerogpu() and not run.status().get("quota_noted"):
                note_quota(run, cfg, result, piece_steps)
            run.log(f"Piece done at step {result.step}; continuing from its checkpoint.")
    except GarageError as exc:
        return fail_run(run, str(exc))
    except Exception as exc:  # the full trace goes to the log, one line to the user
        run.log(traceback.format_exc())
        return fail_run(run, explain_failure(exc))


def piece_function(method: str):
    """The ``run_piece`` that trains ``method`` (the contract in ``garage.train.pieces``), Unsloth imported first:
    before transformers and TRL, so its patches apply."""
    import_unsloth()
    if method in PREFERENCE_METHODS:
        return preference.run_piece
    return grpo.run_piece if method == "grpo" else sft.run_piece


def _piece_here(cfg):
    """Pieces in this process."""
    run_piece = piece_function(cfg.method)
    return lambda run, cfg, owner, stop_event, steps: run_piece(run, cfg, owner, stop_event, piece_steps=steps,
                                                                 log=run.log)


def piece_seconds(cfg, piece_steps: int) -> int:
    kind = "preference" if cfg.method in PREFERENCE_METHODS else "grpo" if cfg.method == "grpo" else "sft"
    start, per_step = PIECE_SECONDS[kind]
    return int(start + per_step * piece_steps)


# ZeroGPU's daily quota a visitor's GPU calls draw on (Hugging Face's pricing page, 2026: 25 minutes for a PRO
# account, a fifth of that for a free one; what is used comes back over hours, half of it in about 5).
ZEROGPU_MINUTES_A_DAY = {"a PRO account": 25, "a free account": 5}


def quota_notice(cfg, result: PieceResult, piece_steps: int) -> str | None:
    """What the rest of a run on ZeroGPU will ask of the visitor's quota, once the first piece told its steps;
    None when it fits a free account's day."""
    left = result.total_steps - result.step
    if left <= 0:
        return None
    pieces = math.ceil(left / piece_steps)
    minutes = sum(piece_seconds(cfg, min(piece_steps, left - done)) for done in range(0, left, piece_steps)) / 60
    if minutes <= min(ZEROGPU_MINUTES_A_DAY.values()):
        return None
    quotas = ", ".join(f"{name} {value} minutes" for name, value in ZEROGPU_MINUTES_A_DAY.items())
    return (f"This run needs about {minutes:.0f} more minutes of ZeroGPU time ({left} steps in {pieces} pieces); "
            f"ZeroGPU gives {quotas} a day. When your quota runs out the run stops at its last checkpoint and "
            "Resume goes on later; or train it in one go on Hugging Face Jobs (run_on: hf-jobs, under 'Where it "
            "trains').")


def note_quota(run, cfg, result: PieceResult, piece_steps: int) -> None:
    notice = quota_notice(cfg, result, piece_steps)
    run.update(quota_noted=True)
    if notice:
        run.log(f"NOTICE: {notice}")
        run.append_to("notices", notice)


def piece_elsewhere(run, cfg, owner: str, piece_steps: int) -> PieceResult | device.Failed:
    """One piece in a process other than the worker's (ZeroGPU's GPU call, or one of several GPUs' processes,
    ``garage.train.rank``): its PieceResult, or Failed with the reason (the trace in the run log). Stop requests
    reach it through the run folder (``run.stop_requested``), not a thread event."""
    try:
        run_piece = piece_function(cfg.method)  # Unsloth imported here: never in the main process on ZeroGPU
        with library_logs_to(run):
            return run_piece(run, cfg, owner, None, piece_steps=piece_steps, log=run.log)
    except GarageError as exc:
        return device.Failed(str(exc))
    except Exception as exc:  # noqa: BLE001 - said to the user as Failed, the trace in the run log
        run.log(scrub_secrets(traceback.format_exc()))
        return device.Failed(explain_failure(exc))


def _zerogpu_piece(run, cfg, owner, stop_event, piece_steps):
    """A piece in a GPU call, as the visitor who started the run (their quota); a GPU ZeroGPU would not give fails
    the run saying it can go on."""
    try:
        return device.call(piece_elsewhere, run, cfg, owner, piece_steps, seconds=piece_seconds(cfg, piece_steps),
                           visitor=device.visitor_of(run.id))
    except device.NoGpu as exc:
        raise GarageError(f"{exc} The run keeps its last checkpoint: press Resume to go on from there.") from None


def explain_failure(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if is_out_of_memory(exc):
        return ("Out of memory. Lower per_device_train_batch_size or max_seq_length, turn on "
                "gradient_checkpointing, or use QLoRA / a smaller model.")
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:400] + " (full trace in the run log)"


def _summary(run) -> dict:
    metrics = run.metrics()
    train = [m["loss"] for m in metrics if "loss" in m]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    return {"final_loss": train[-1] if train else None, "eval_loss": evals[-1] if evals else None}


def end_run(run, state: str, reason: str | None = None) -> str:
    started = run.status().get("started") or time.time()
    run.update(state=state, reason=reason, finished=time.time(), duration=round(time.time() - started, 1),
               phase=None, **_summary(run))
    run.log(f"Run {state}." + (f" {reason}" if reason else ""))
    return state


def fail_run(run, reason: str) -> str:
    run.log(f"FAILED: {reason}")
    return end_run(run, "failed", reason=reason)
