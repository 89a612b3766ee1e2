"""GRPO, top to bottom: prompts -> model + LoRA -> rewards -> TRL's GRPOTrainer -> adapter -> evaluation.

Same worker, run folder, callback, pieces and states as SFT (``garage.train.sft``):
``run_piece`` keeps the contract of ``garage.train.pieces``, and the runner calls it
when ``method`` is ``grpo``. TRL logs the reward, its spread, each reward's curve
(``rewards/<name>/mean``), the KL, the completion lengths and the loss; the run's
callback writes every one of them to ``metrics.jsonl``.

Where it runs: on a GPU, Unsloth patches TRL's trainers when it is imported, so the
``GRPOTrainer`` here is Unsloth's. Unsloth's CPU backend trains SFT only: without a GPU
this is TRL's own GRPOTrainer on the model Unsloth loaded, with a PEFT LoRA adapter and
unsloth_zoo's CPU twin of TRL's Triton log-prob kernel (both said in the run's notices).
"""

from __future__ import annotations

import math
import threading
import traceback

from garage.config import TrainConfig
from garage.data.rows import prompt_rows, split_rows, training_conversations
from garage.device import free_memory, has_gpu
from garage.errors import GarageError
from garage.evaluation.evaluate import evaluate
from garage.models.loading import Loaded, add_lora, load_model, patch_trl_for_cpu
from garage.scoring.judge import Judge
from garage.scoring.rewards import reward_functions, rows_with_a_stated_number
from garage.train import pieces
from garage.train.pieces import PieceResult

CPU_NOTICE = ("GRPO without a GPU: Unsloth's CPU backend trains SFT only, so this run uses TRL's own GRPOTrainer "
              "on the model Unsloth loaded, with a PEFT LoRA adapter and a CPU log-prob kernel. It works, slowly: "
              "use a GPU for real models.")


# --- data ------------------------------------------------------------------------

def load_prompts(cfg: TrainConfig, owner: str, log=print) -> list[dict]:
    """The run's training prompts (and reference answers), checked against its rewards.

    Rows held out by ``eval_fraction`` (the same split as SFT's) are left for ``evaluate``.
    """
    train, held_out = split_rows(training_conversations(cfg, owner), cfg.eval_fraction, cfg.seed)
    rows = prompt_rows(train, cfg.system_prompt)
    if not rows:
        raise GarageError(f"Dataset {cfg.dataset!r} has no prompts: GRPO needs conversations with a user turn.")
    if "correctness" in cfg.rewards:
        usable = len(rows_with_a_stated_number(rows)[0])
        if usable == 0:
            raise GarageError(f"The correctness reward needs reference answers that state a final number ('#### 42', "
                              f"'The answer is 42', or 42 alone), and none of the {len(rows)} rows of "
                              f"{cfg.dataset!r} does (a sentence's last number is not taken for its answer). For "
                              "free-text answers use the judge reward (with a rubric), or end each answer with "
                              "'#### ' and its number.")
        if usable < len(rows):
            log(f"WARNING: {len(rows) - usable} of {len(rows)} rows state no final number; the correctness reward "
                "skips them.")
    if "format" in cfg.rewards and not asks_for_format(rows, cfg.answer_format):
        log(f"WARNING: the format reward pays for answers written as {cfg.answer_format!r}, and no prompt asks for "
            "that (see system_prompt): until a completion happens to use it, every completion scores 0 and there "
            "is nothing to learn from. Say it in system_prompt, as the GSM8K preset does.")
    return rows


def asks_for_format(rows: list[dict], answer_format: str) -> bool:
    """Whether the prompts (system prompt included) mention the answer template's marker (e.g. '####')."""
    marker = (answer_format or "").split("{answer}")[0].strip() or (answer_format or "").split("{answer}")[-1].strip()
    return not marker or any(marker in str(m.get("content", "")) for r in rows for m in r["prompt"])


def drop_long_prompts(rows: list[dict], tokenizer, limit: int, log=print) -> list[dict]:
    """Leave out prompts longer than ``limit`` tokens (max_seq_length - max_completion_length)."""
    if limit <= 0:
        raise GarageError("max_completion_length must be smaller than max_seq_length, so a prompt fits as well.")
    kept = []
    for row in rows:
        try:
            ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"]
        except Exception as exc:  # noqa: BLE001 - e.g. a multimodal processor: let TRL format the prompts
            log(f"NOTICE: prompt lengths not checked ({type(exc).__name__}); long prompts are not left out.")
            return rows
        if len(ids) <= limit:
            kept.append(row)
    if not kept:
        raise GarageError(f"Every prompt is longer than {limit} tokens (max_seq_length - max_completion_length): "
                          "raise max_seq_length or lower max_completion_length.")
    if len(kept) < len(rows):
        log(f"WARNING: {len(rows) - len(kept)} of {len(rows)} prompts are longer than {limit} tokens "
            "(max_seq_length - max_completion_length) and are left out.")
    return kept


# --- trainer ---------------------------------------------------------------------

def generation_batch(cfg: TrainConfig) -> tuple[int, str | None]:
    """Completions generated per round: whole prompt groups, a multiple of the per-device batch."""
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if per_step % cfg.num_generations == 0:
        return per_step, None
    size = per_step * cfg.num_generations // math.gcd(per_step, cfg.num_generations)
    return size, (f"per_device_train_batch_size x gradient_accumulation_steps = {per_step} completions is not a "
                  f"multiple of num_generations = {cfg.num_generations}; generating {size} completions "
                  f"({size // cfg.num_generations} prompts) per round instead.")


def trainer_backend() -> str:
    from trl import GRPOTrainer

    name = f"{GRPOTrainer.__module__}.{GRPOTrainer.__name__}".lower()
    return "unsloth" if "unsloth" in name else "trl"


def build_trainer(cfg: TrainConfig, loaded: Loaded, rows: list[dict], output_dir, callbacks: list,
                  reward_funcs: list, reward_weights: list[float], log=print):
    """A TRL GRPOTrainer for the config, on a LoRA adapter."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model = add_lora(loaded, cfg)
    bf16 = has_gpu() and torch.cuda.is_bf16_supported()
    generation_batch_size, note = generation_batch(cfg)
    if note:
        log(f"NOTICE: {note}")
    args = GRPOConfig(
        output_dir=str(output_dir), num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, generation_batch_size=generation_batch_size,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, beta=cfg.beta, reward_weights=list(reward_weights),
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed,
        data_seed=cfg.seed, eval_strategy="no", report_to="none", disable_tqdm=True, bf16=bf16, fp16=False,
        gradient_checkpointing=False,  # the loader already set it up (Unsloth's mode)
        optim="adamw_torch", log_completions=False, remove_unused_columns=False,
    )
    dataset = Dataset.from_list([{"prompt": r["prompt"], "reference": r["reference"] or ""} for r in rows])
    trainer = GRPOTrainer(model=model, args=args, processing_class=loaded.tokenizer, reward_funcs=reward_funcs,
                          train_dataset=dataset, callbacks=callbacks)
    pieces.quiet(trainer)
    return trainer


# --- one piece ---------------------------------------------------------------------

def run_piece(run, cfg: TrainConfig, owner: str, stop_event: threading.Event, *,
              piece_steps: int = 0, log=print) -> PieceResult:
    """Train from the last checkpoint (if any) for ``piece_steps`` steps, or to the end when 0."""
    rows = load_prompts(cfg, owner, log=log)
    loaded = load_model(cfg.model, method=cfg.method, max_seq_length=cfg.max_seq_length, log=log)
    patch_trl_for_cpu()  # GRPO computes log-probs through TRL's fused head too
    backend = trainer_backend()
    notices = list(loaded.notices)
    if not has_gpu():
        notices.append(CPU_NOTICE)
        log(f"NOTICE: {CPU_NOTICE}")
    elif backend != "unsloth":
        notices.append("Unsloth did not patch TRL's GRPOTrainer here; this run uses TRL's own (slower, same result).")
    if notices:
        run.update(notices=notices)
    rows = drop_long_prompts(rows, loaded.tokenizer, cfg.max_seq_length - cfg.max_completion_length, log=log)
    per_round = generation_batch(cfg)[0] // cfg.num_generations
    if len(rows) < per_round:
        raise GarageError(f"GRPO samples {per_round} prompts per round ((per_device_train_batch_size x "
                          f"gradient_accumulation_steps) / num_generations) but only {len(rows)} are usable: add "
                          "prompts, or lower the batch size or gradient accumulation.")

    judge = None
    if "judge" in cfg.rewards:
        judge = Judge.from_config(cfg, owner=owner, cache_path=run.path / "judge_cache.jsonl", log=log)
    try:
        funcs, weights = reward_functions(cfg, judge=judge)
        checkpoint, start_step, callback = pieces.begin(run, cfg, rows, stop_event, piece_steps, log)
        trainer = build_trainer(cfg, loaded, rows, run.checkpoints_dir, [callback], funcs, weights, log=log)
        rewards = ", ".join(f"{name} x{w:g}" for name, w in zip(cfg.rewards, weights))
        log(f"GRPO on {cfg.model} ({'Unsloth' if backend == 'unsloth' else 'TRL'} GRPOTrainer, model backend "
            f"{loaded.backend}): {len(rows)} prompts, {cfg.num_generations} completions each, rewards {rewards}"
            + (f", resuming from {checkpoint.name}" if checkpoint else "") + ".")
        pieces.train(run, cfg, trainer, checkpoint)
        state = trainer.state
        if state.global_step < state.max_steps and not callback.stopped_by_user and not callback.nan_seen \
                and state.global_step <= start_step:
            raise GarageError(f"Training made no progress from step {start_step} of {state.max_steps}: the data "
                              "gave no full batch of prompts.")
        piece = pieces.finish(run, cfg, trainer, loaded, callback, start_step, log)
        if judge is not None:
            stats = judge.stats.snapshot()
            log(f"Judge: {stats['requests']} requests, {stats['scored']} answers scored, {stats['cache_hits']} from "
                f"the cache, {stats['failed_groups']} groups scored 0 after failures.")
            run.update(judge=stats)
    finally:
        if judge is not None:
            judge.close()
    if piece.finished and cfg.eval_samples > 0:
        del trainer, loaded
        free_memory()
        evaluate_after_training(run, cfg, owner, log=log)
    return piece


def evaluate_after_training(run, cfg: TrainConfig, owner: str, log=print) -> dict | None:
    """Base against tuned on ``eval_samples`` held-out prompts; saved as the run's evaluation.json.

    A failing evaluation does not fail the trained run: it is logged and noted.
    """
    run.update(phase=f"evaluating base and tuned ({cfg.eval_samples} prompts)")  # anyone watching sees the phase
    log(f"Evaluating base and tuned on {cfg.eval_samples} held-out prompts "
        f"({cfg.eval_dataset or 'this run’s held-out rows'}).")
    try:
        report = evaluate(run, cfg.eval_dataset or None, cfg.eval_samples, owner=owner,
                          max_new_tokens=max(cfg.max_completion_length, 16), log=log)
    except Exception as exc:  # noqa: BLE001 - the training result stands either way
        log(traceback.format_exc())
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        log(f"WARNING: the evaluation after training failed: {reason}")
        notices = list(run.status().get("notices") or [])
        run.update(notices=notices + [f"The evaluation after training failed: {reason}"])
        return None
    log(f"Evaluation: {report['summary']}")
    return report
