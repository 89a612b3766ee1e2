"""What every training method's piece shares: the contract the runner calls, and the steps around the trainer.

A method is a module with ``run_piece(run, cfg, owner, stop_event, *, piece_steps=0, log=print) -> PieceResult``
(``garage.train.sft``, ``garage.train.grpo``): it trains from the run's last checkpoint for ``piece_steps``
optimizer steps (to the end when 0) and says how the piece ended. Around its own trainer it uses these:

    begin(run, cfg, rows, stop_event, piece_steps, log)   the checkpoint to resume, its step, the run's callback
    start_adapter(run, cfg)                                the adapter a LoRA starts from (init_run), if any
    train(run, cfg, trainer, checkpoint)                   train (resuming), counting the seconds it took, logging
                                                           to the run's tracker (garage.train.tracking)
    finish(run, cfg, trainer, loaded, callback, start_step, log)  save the weights if done or stopped; the result
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from garage.errors import GarageError
from garage.models.loading import load_adapter_weights
from garage.train import tracking


@dataclass
class PieceResult:
    finished: bool          # reached max_steps
    stopped: bool           # the user asked to stop
    step: int
    total_steps: int
    nan: bool = False


def checkpoint_step(checkpoint: Path | None) -> int:
    return int(checkpoint.name.split("-")[-1]) if checkpoint else 0


def note_dataset_change(run, cfg, rows: list, checkpoint: Path | None, log=print) -> None:
    """Remember what the run trains on; resuming on other rows (the dataset was saved again since) is said."""
    fingerprint = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]
    before = run.status().get("dataset_fingerprint")
    if checkpoint is not None and before and before != fingerprint:
        note = (f"The dataset {cfg.dataset!r} changed after this run started ({len(rows)} rows now): the resumed run "
                f"continues from {checkpoint.name} on the new rows, and its step count follows them.")
        log(f"WARNING: {note}")
        run.update(notices=list(run.status().get("notices") or []) + [note])
    if before != fingerprint:
        run.update(dataset_fingerprint=fingerprint)


def begin(run, cfg, rows: list, stop_event: threading.Event | None, piece_steps: int, log=print):
    """(checkpoint to resume from or None, its step, the RunCallback that records the piece and ends it)."""
    from garage.train.callbacks import RunCallback  # transformers: imported on the worker, after Unsloth

    checkpoint = run.last_checkpoint()
    note_dataset_change(run, cfg, rows, checkpoint, log)
    start_step = checkpoint_step(checkpoint)
    callback = RunCallback(run, stop_event, piece_end_step=start_step + piece_steps if piece_steps else None,
                           elapsed_before=float(run.status().get("elapsed") or 0.0))
    return checkpoint, start_step, callback


def start_adapter(run, cfg) -> Path | None:
    """The adapter folder a run's LoRA starts from (init_run), if any. Every piece starts there, a resumed one
    too, before its checkpoint's weights are loaded over it: DPO and KTO copy the starting adapter as their
    reference, which must be the same in every piece."""
    if not cfg.init_run.strip():
        return None
    try:
        start = run.sibling(cfg.init_run)
    except GarageError:
        raise GarageError(f"Run {cfg.init_run}, whose adapter this run continues (init_run), is gone (deleted?): "
                          "start a new run from the base model or from another run.") from None
    return start.adapter_dir


def quiet(trainer) -> None:
    """Progress goes to metrics.jsonl and status.json, not as dicts printed to stdout."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback  # on the worker only

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)


def train(run, cfg, trainer, checkpoint: Path | None) -> None:
    """``trainer.train`` from ``checkpoint``, its seconds added to the run's ``train_seconds``, its metrics also
    logged where ``cfg.report_to`` says."""
    tracking.attach(trainer, cfg, run)
    if checkpoint is not None and (checkpoint / "ref").is_dir():
        # DPO / KTO keep their reference adapter in the checkpoint's ref/; transformers' resume then loads only the
        # adapters in subfolders, leaving the trained one (at the checkpoint's root) as the piece began: load it here
        load_adapter_weights(trainer.model, checkpoint)
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        tracking.detach(cfg)
    run.update(train_seconds=round(float(run.status().get("train_seconds") or 0) + time.perf_counter() - started, 3))


def finish(run, cfg, trainer, loaded, callback, start_step: int, log=print) -> PieceResult:
    """The weights saved when the run finished or was stopped; the piece's end logged; how it ended."""
    state = trainer.state
    finished = state.global_step >= state.max_steps and not callback.stopped_by_user and not callback.nan_seen
    if finished or callback.stopped_by_user:
        save_outputs(cfg, trainer, loaded, run)
    log(describe_piece_end(run, start_step, state))
    return PieceResult(finished=finished, stopped=callback.stopped_by_user, step=state.global_step,
                       total_steps=state.max_steps, nan=callback.nan_seen)


def save_outputs(cfg, trainer, loaded, run) -> Path:
    """Save the adapter (LoRA / QLoRA) or the full model, with the tokenizer and its chat template."""
    target = run.model_dir if cfg.method == "full" else run.adapter_dir
    if not trainer.is_world_process_zero():  # several processes hold the same weights: one writes them
        return target
    target.mkdir(parents=True, exist_ok=True)
    # the trained adapter alone: DPO and KTO keep a frozen copy of the starting one beside it ("ref")
    adapters = ["default"] if "ref" in (getattr(trainer.model, "peft_config", None) or {}) else None
    trainer.model.save_pretrained(str(target), **({"selected_adapters": adapters} if adapters else {}))
    loaded.tokenizer.save_pretrained(str(target))
    generation = getattr(trainer.model, "generation_config", None)
    if generation is not None and cfg.method == "full":
        generation.save_pretrained(str(target))
    return target


def describe_piece_end(run, start_step: int, state) -> str:
    """The log's line at a piece's end, with the mean of the losses logged in it (transformers' training_loss
    divides a resumed piece's sum by every step of the run)."""
    losses = [m["loss"] for m in run.metrics() if "loss" in m and start_step < m.get("step", 0) <= state.global_step]
    mean = f" (average train loss over the piece {sum(losses) / len(losses):.4f})" if losses else ""
    return f"Piece ended at step {state.global_step}/{state.max_steps}{mean}."
