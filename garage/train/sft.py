"""Supervised fine-tuning, top to bottom: data -> model -> masking check -> TRL trainer -> saved weights.

``run_piece`` trains one piece of a run (the whole run unless it is chunked) and
returns what happened; ``garage.train.runner`` drives pieces and run states.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from garage import catalog
from garage.config import TrainConfig
from garage.data.rows import is_plain_text, split_rows, training_rows
from garage.device import free_memory, has_gpu
from garage.errors import GarageError, is_out_of_memory
from garage.models.loading import Loaded, add_lora, load_model
from garage.models.templates import reply_openings, turn_opener_id
from garage.train import pieces
from garage.train.pieces import PieceResult
from garage.train.shaping import plan_shape, world_size

IGNORE = -100


def turn_markers(model_name: str, tokenizer) -> tuple[str, str] | tuple[None, None]:
    """Where user turns and model turns begin in this model's template. A reply's opening that goes past the
    family's marker (Gemma 4's empty thought channel) is prompt, not answer: the answer starts after it."""
    instruction, response = _family_markers(model_name, tokenizer)
    openings = reply_openings(tokenizer) if response else None
    if openings and openings[0] == openings[1] and openings[1].startswith(response):
        response = openings[1]  # only what chat prompts with too is masked as prompt: the model never writes it
    return instruction, response


def _family_markers(model_name: str, tokenizer) -> tuple[str, str] | tuple[None, None]:
    info = catalog.resolve(model_name)
    if info.family in catalog.TURN_MARKERS:
        return catalog.TURN_MARKERS[info.family]
    template = getattr(tokenizer, "chat_template", "") or ""
    for family, markers in catalog.TURN_MARKERS.items():
        if markers[1].split("\n")[0] in template:
            return markers
    return None, None  # let Unsloth read them off the template


def masking_report(dataset, max_length: int) -> dict:
    """Count rows whose labels are all masked, and why (cut by max length, or no response marker)."""
    total = len(dataset)
    empty = [i for i, labels in enumerate(dataset["labels"]) if all(x == IGNORE for x in labels)]
    truncated = sum(1 for i in empty if len(dataset[i]["input_ids"]) >= max_length)
    return {"rows": total, "untrainable": len(empty), "truncated": truncated,
            "no_marker": len(empty) - truncated, "untrainable_rows": empty}


def describe_masking(report: dict, response_part: str | None) -> str:
    parts = [f"{report['untrainable']} of {report['rows']} rows have no trainable token"]
    if report["truncated"]:
        parts.append(f"{report['truncated']} were cut at max_seq_length before the answer began "
                     "(raise max_seq_length)")
    if report["no_marker"]:
        marker = repr(response_part) if response_part else "the model's turn marker"
        parts.append(f"{report['no_marker']} do not contain {marker} after formatting "
                     "(chat template mismatch, or a conversation without an assistant answer)")
    return "; ".join(parts) + "."


def build_trainer(cfg: TrainConfig, loaded: Loaded, train_rows: list[dict], eval_rows: list[dict],
                  output_dir: Path, callbacks: list, log=print, start: Path | None = None):
    """A TRL SFTTrainer for the config, with responses-only masking and the masking check applied; ``start``: an
    adapter folder the LoRA starts from (init_run)."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = loaded.model if cfg.method == "full" else add_lora(loaded, cfg, start)
    bf16 = has_gpu() and torch.cuda.is_bf16_supported()
    shape = plan_shape(cfg, model, fused_loss=loaded.backend == "unsloth" and has_gpu())
    eval_steps = cfg.eval_steps or max(1, cfg.logging_steps * 10)
    args = SFTConfig(
        output_dir=str(output_dir), max_length=cfg.max_seq_length, packing=cfg.packing,
        num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio in transformers 5
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=shape.rows_per_pass, gradient_accumulation_steps=shape.passes_per_step,
        # evaluation averages per-batch mean losses, so its batch stays as configured: eval_loss comparable
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed,
        data_seed=cfg.seed, eval_strategy="steps" if eval_rows else "no", eval_steps=eval_steps,
        report_to="none", disable_tqdm=True, bf16=bf16, fp16=False,
        include_num_input_tokens_seen="non_padding", dataset_num_proc=None,
        gradient_checkpointing=False,  # the loader already set it up (Unsloth's mode)
        optim="adamw_8bit" if cfg.method == "qlora" and has_gpu() else "adamw_torch",
        # several processes (garage.train.processes): without use_cpu, CPU processes each train alone. Every
        # weight of a LoRA gets a gradient, so DDP need not look for unused ones; a full fine-tune of a multimodal
        # Gemma also trains towers that text never reaches, which DDP must be told to expect
        use_cpu=not has_gpu(), ddp_find_unused_parameters=cfg.method == "full",
    )
    field = "text" if is_plain_text(train_rows) else "messages"
    trainer = SFTTrainer(
        model=model, args=args, processing_class=loaded.tokenizer,
        train_dataset=Dataset.from_list([{field: r[field]} for r in train_rows]),
        eval_dataset=Dataset.from_list([{field: r[field]} for r in eval_rows]) if eval_rows else None,
        callbacks=callbacks,
    )
    pieces.quiet(trainer)
    if field == "text":
        log("Plain text: training on every token (continued pre-training, no chat template); "
            "train_on_responses_only applies to conversations only.")
    elif cfg.train_on_responses_only:
        apply_responses_only(trainer, cfg, loaded, log)
    if cfg.packing and not trainer.args.packing:
        why = ("without a GPU, where attention cannot keep packed rows apart (no FlashAttention)" if not has_gpu()
               else "for this model or setup")
        log(f"NOTICE: packing is off for this run: Unsloth turned it off {why}. Rows train in padded batches, one "
            "conversation a row, so a step holds fewer tokens than packed rows would.")
    if world_size() > 1:
        log(describe_split(shape, cfg, world_size()))
    elif shape.rows_per_pass != cfg.per_device_train_batch_size:
        log(describe_shape(shape, cfg, len(trainer.train_dataset)))
    return trainer


def describe_shape(shape, cfg: TrainConfig, rows: int) -> str:
    """The log's line on batch shaping, in the user's terms."""
    text = (f"Batch shaping: each optimizer step's {shape.rows_per_step} rows run as {shape.passes_per_step} "
            f"pass(es) of {shape.rows_per_pass} rows instead of {cfg.gradient_accumulation_steps} passes of "
            f"{cfg.per_device_train_batch_size} (per_device_train_batch_size x gradient_accumulation_steps): the "
            "same rows and loss per step, fewer passes. Advanced > batch_shaping off keeps your passes.")
    if rows < shape.rows_per_step:
        text += (f" This dataset has {rows} training rows, fewer than a step's {shape.rows_per_step}: each step "
                 "takes the rows an epoch has left.")
    return text


def describe_split(shape, cfg: TrainConfig, count: int) -> str:
    """The log's line on how a step's rows are shared by ``count`` processes."""
    configured = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    text = (f"Each of the {count} processes trains {shape.passes_per_step} pass(es) of {shape.rows_per_pass} rows a "
            f"step: {shape.rows_per_step * count} rows a step")
    if shape.rows_per_step * count == configured:
        return text + ", as configured, so the loss curve is one process's."
    return text + (f", not the configured {configured} (per_device_train_batch_size x gradient_accumulation_steps), "
                   f"which does not divide by {count}: make it a multiple of {count} to keep one process's curve.")


def apply_responses_only(trainer, cfg: TrainConfig, loaded: Loaded, log=print) -> dict:
    """Mask prompts out of the loss (Unsloth's masking), then check training still has something to learn.

    Unsloth would silently drop fully masked rows, or fail with a generic error when all
    are masked; we count them first and say how many and why.
    """
    from unsloth.chat_templates import train_on_responses_only

    instruction, response = turn_markers(cfg.model, loaded.tokenizer)
    mask = without_turn_openers(train_on_responses_only(None, instruction_part=instruction, response_part=response,
                                                        tokenizer=loaded.tokenizer, return_function=True),
                                turn_opener_id(loaded.tokenizer))
    trainer.train_dataset = trainer.train_dataset.map(mask, batched=True, desc="Masking prompts")
    report = masking_report(trainer.train_dataset, cfg.max_seq_length)
    if report["untrainable"] == report["rows"]:
        raise GarageError("Nothing to train on: " + describe_masking(report, response))
    if report["untrainable"]:
        log("WARNING: " + describe_masking(report, response) + " They are left out of training.")
        trainer.train_dataset = trainer.train_dataset.select(_keep(report))
    else:
        log(f"Masking check: all {report['rows']} rows have trainable answer tokens.")
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = trainer.eval_dataset.map(mask, batched=True, desc="Masking prompts")
        eval_report = masking_report(trainer.eval_dataset, cfg.max_seq_length)
        keep = _keep(eval_report)
        trainer.eval_dataset = trainer.eval_dataset.select(keep) if keep else None
        if not keep:
            trainer.args.eval_strategy = "no"
            log("WARNING: no eval row has a trainable answer; evaluation is off for this run.")
    return report


def without_turn_openers(mask, opener: int | None):
    """Unsloth's masking, then the turn-opening token masked too: with ChatML templates Unsloth 2026.10 leaves the
    next user turn's <|im_start|> in the trained span, teaching the model to start a turn it should end."""
    if opener is None:
        return mask

    def masked(batch):
        out = mask(batch)
        out["labels"] = [[IGNORE if token == opener else label for token, label in zip(ids, labels)]
                         for ids, labels in zip(batch["input_ids"], out["labels"])]
        return out

    return masked


def _keep(report: dict) -> list[int]:
    return sorted(set(range(report["rows"])) - set(report["untrainable_rows"]))


def parameter_counts(model) -> dict:
    """All and trainable parameters (4-bit weights count as stored), for the run's status and MFU."""
    params = list(model.parameters())
    return {"parameters": sum(p.numel() for p in params),
            "trainable_parameters": sum(p.numel() for p in params if p.requires_grad)}


def run_piece(run, cfg: TrainConfig, owner: str, stop_event: threading.Event, *,
              piece_steps: int = 0, log=print) -> PieceResult:
    """Train from the last checkpoint (if any) for ``piece_steps`` steps, or to the end when 0.

    Batch shaping's memory bound is generous, but should its larger passes still run out of memory, the piece
    goes on in the configured passes from the last checkpoint, and so do the run's later pieces.
    """
    if run.status().get("shaping_ran_out"):
        cfg = dataclasses.replace(cfg, batch_shaping=False)
    try:
        return _train_piece(run, cfg, owner, stop_event, piece_steps, log)
    except Exception as exc:
        status = run.status()
        shaped = status.get("passes_per_step") not in (None, cfg.gradient_accumulation_steps)
        # several processes: the one that ran out cannot start over alone while the others wait in an exchange
        if not (cfg.batch_shaping and shaped and is_out_of_memory(exc)) or world_size() > 1:
            raise
    # out of the except block, the error's frames (which hold the model and the trainer) are gone
    log(f"WARNING: out of memory in passes of {status.get('rows_per_pass')} rows (batch shaping); going on in the "
        f"configured {cfg.gradient_accumulation_steps} passes of {cfg.per_device_train_batch_size} rows from the "
        "last checkpoint.")
    run.update(shaping_ran_out=True)
    free_memory()
    return _train_piece(run, dataclasses.replace(cfg, batch_shaping=False), owner, stop_event, piece_steps, log)


def _train_piece(run, cfg: TrainConfig, owner: str, stop_event: threading.Event, piece_steps: int,
                 log) -> PieceResult:
    rows = training_rows(cfg, owner)
    train_rows, eval_rows = split_rows(rows, cfg.eval_fraction, cfg.seed)
    loaded = load_model(cfg.model, method=cfg.method, max_seq_length=cfg.max_seq_length,
                        chat=not is_plain_text(rows), log=log)
    if loaded.notices:
        run.update(notices=loaded.notices)
    checkpoint, start_step, callback = pieces.begin(run, cfg, rows, stop_event, piece_steps, log)
    start = pieces.start_adapter(run, cfg)
    trainer = build_trainer(cfg, loaded, train_rows, eval_rows, run.checkpoints_dir, [callback], log=log,
                            start=start)
    run.update(**parameter_counts(trainer.model), rows_per_pass=trainer.args.per_device_train_batch_size,
               passes_per_step=trainer.args.gradient_accumulation_steps)
    log(f"Training {cfg.model} ({cfg.method}, backend {loaded.backend}) on {len(trainer.train_dataset)} rows"
        + (f", starting from run {cfg.init_run}'s adapter" if start else "")
        + (f", resuming from {checkpoint.name}" if checkpoint else "") + ".")
    pieces.train(run, cfg, trainer, checkpoint)
    return pieces.finish(run, cfg, trainer, loaded, callback, start_step, log)
