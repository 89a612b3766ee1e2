"""Preference tuning of a LoRA adapter: DPO and KTO (TRL's trainers), ORPO (TRL's experimental one).

The rows are TRL's conversational preference rows (garage.data.preferences), which its trainers format with the
model's own chat template. On a GPU, Unsloth patches these trainers when it is imported (the runner imports it
first), as it does SFT's and GRPO's.

The model DPO and KTO measure their rewards against (the reference) is the one they start from: TRL keeps a
frozen copy of the starting adapter beside the trained one. A new adapter starts as the base model; a run continued
from another's (``init_run``, an SFT run's say) starts as that run's model, the usual SFT-then-DPO recipe. ORPO
needs no reference: it adds the odds of the chosen answer over the rejected one to the chosen answer's own loss, so
it can start from the base model alone.

What the run's plot shows (TRL's names): the loss; the rewards of the chosen and the rejected answers, their margin
and the share of pairs whose chosen answer gets the higher reward (``rewards/accuracies``); with held-out pairs
(``eval_fraction``), the same on them (``eval_rewards/accuracies``: how often the tuned model now prefers the
chosen answer on pairs it never trained on).
"""

from __future__ import annotations

import os
import threading

from garage.config import TrainConfig
from garage.data.preferences import unpaired
from garage.data.rows import preference_rows, split_rows
from garage.device import has_gpu
from garage.errors import GarageError
from garage.models.loading import Loaded, add_lora, load_model, patch_trl_for_cpu
from garage.train import pieces
from garage.train.pieces import PieceResult
from garage.train.shaping import Shape, split, world_size
from garage.train.sft import describe_split, parameter_counts


def trainer_classes(method: str):
    """(config class, trainer class) of ``method``; imported on the worker, after Unsloth."""
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    # ORPO is among TRL's experimental trainers, whose import warns that their API may change: TRL is pinned here
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOConfig, ORPOTrainer


def build_trainer(cfg: TrainConfig, loaded: Loaded, train_rows: list[dict], eval_rows: list[dict], output_dir,
                  callbacks: list, start=None, log=print):
    """The method's TRL trainer on a LoRA adapter (new, or from ``start``: another run's adapter folder)."""
    import torch
    from datasets import Dataset

    from garage.train.callbacks import EvaluateAtTheEnd  # transformers: imported on the worker, after Unsloth

    config_class, trainer_class = trainer_classes(cfg.method)
    # several processes share a step's rows, so that it holds the rows it holds on one (no batch shaping: its
    # memory model counts one sequence a row, a pair is two)
    shape = split(Shape(cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps), world_size())
    if cfg.method == "kto" and shape.rows_per_pass < 2:
        raise GarageError(f"kto on {world_size()} processes passes {shape.rows_per_pass} row at a time, and its KL "
                          "term needs 2: raise per_device_train_batch_size to twice the number of GPUs.")
    if world_size() > 1:
        log(describe_split(shape, cfg, world_size()))
    model = add_lora(loaded, cfg, start)
    bf16 = has_gpu() and torch.cuda.is_bf16_supported()
    args = config_class(
        output_dir=str(output_dir), num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, per_device_train_batch_size=shape.rows_per_pass,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=shape.passes_per_step, beta=cfg.beta, max_length=cfg.max_seq_length,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed,
        data_seed=cfg.seed, eval_strategy="steps" if eval_rows else "no",
        eval_steps=cfg.eval_steps or max(1, cfg.logging_steps * 10), report_to="none", disable_tqdm=True,
        bf16=bf16, fp16=False, gradient_checkpointing=False,  # the loader set it up (Unsloth's mode)
        optim="adamw_8bit" if cfg.load_in_4bit and has_gpu() else "adamw_torch", use_cpu=not has_gpu(),
        dataset_num_proc=None, remove_unused_columns=False,  # the collators read prompt / chosen / rejected
    )
    trainer = trainer_class(
        model=model, args=args, processing_class=loaded.tokenizer, train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        callbacks=callbacks + ([EvaluateAtTheEnd()] if eval_rows else []),
    )
    pieces.quiet(trainer)
    return trainer


def run_piece(run, cfg: TrainConfig, owner: str, stop_event: threading.Event, *,
              piece_steps: int = 0, log=print) -> PieceResult:
    """Train from the last checkpoint (if any) for ``piece_steps`` steps, or to the end when 0."""
    rows = preference_rows(cfg, owner)
    train_rows, eval_rows = split_rows(rows, cfg.eval_fraction, cfg.seed)  # pairs first: no half of one held out
    if cfg.method == "kto":
        train_rows, eval_rows = unpaired(train_rows, cfg.seed), unpaired(eval_rows, cfg.seed)
    loaded = load_model(cfg.model, method="qlora" if cfg.load_in_4bit else "lora",
                        max_seq_length=cfg.max_seq_length, log=log)
    patch_trl_for_cpu()  # their log-probs go through TRL's fused head too, Triton-only without this
    if loaded.notices:
        run.update(notices=loaded.notices)
    checkpoint, start_step, callback = pieces.begin(run, cfg, rows, stop_event, piece_steps, log)
    start = pieces.start_adapter(run, cfg)
    trainer = build_trainer(cfg, loaded, train_rows, eval_rows, run.checkpoints_dir, [callback], start, log)
    run.update(**parameter_counts(trainer.model), rows_per_pass=trainer.args.per_device_train_batch_size,
               passes_per_step=trainer.args.gradient_accumulation_steps)
    what = "pairs" if cfg.method != "kto" else "labelled answers"
    log(f"{cfg.method.upper()} on {cfg.model} (backend {loaded.backend}): {len(train_rows)} {what}"
        + (f", {len(eval_rows)} held out" if eval_rows else "")
        + (f", starting from run {cfg.init_run}'s adapter" if start else "")
        + (f", resuming from {checkpoint.name}" if checkpoint else "") + ".")
    pieces.train(run, cfg, trainer, checkpoint)
    piece = pieces.finish(run, cfg, trainer, loaded, callback, start_step, log)
    if piece.finished and eval_rows:
        run.update(preference_eval=held_out_preference(trainer.state.log_history, len(eval_rows), log))
    return piece


def held_out_preference(history: list[dict], rows: int, log=print) -> dict:
    """The held-out rows at the last step (EvaluateAtTheEnd): how often the tuned model's reward (its
    log-probability against the starting model's, TRL's ``rewards/accuracies``) puts the chosen answer above the
    rejected one, and by what mean margin. KTO, whose held-out rows are single answers, has the margin alone."""
    last = next((record for record in reversed(history) if "eval_rewards/margins" in record), {})
    found = {"rows": rows, "prefers_chosen": last.get("eval_rewards/accuracies"),
             "margin": last.get("eval_rewards/margins")}
    if found["prefers_chosen"] is not None:
        log(f"On {rows} held-out rows the tuned model prefers the chosen answer in {found['prefers_chosen']:.0%} "
            f"(mean reward margin {found['margin']:.3f}).")
    return found
