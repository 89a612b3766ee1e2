"""Every preset in one place: the settings a run starts from, by model size and method, and the GSM8K one.

    size_preset(model)            LoRA settings that suit the model's size (the test model has its own)
    grpo_preset(model)            GRPO's: a far smaller learning rate, generations, lengths (and DPO, ORPO, KTO's
                                  learning rates and beta, in preset_for)
    preset_for(model, method)     what a run of that model and method starts from (what the API fills in)
    full_preset(model, method)    the same over every field any preset sets (what a form switched to it shows)
    method_presets(model)         each method's full preset, so a form can say what each field becomes
    preset_moves(model, method, current)  the fields a method pick moves (those still at some preset's value)
    gsm8k_preset(model, owner)    GRPO on the built-in GSM8K subset (saved into the owner's workspace)
"""

from __future__ import annotations

import functools
import math

from garage import catalog
from garage.config import METHODS, TrainConfig, field_specs
from garage.data import gsm8k
from garage.offline_models import TINY_NAME

TINY_PRESET = {"learning_rate": 2e-3, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
               "lora_r": 16, "lora_alpha": 32, "max_seq_length": 256, "num_train_epochs": 30.0,
               "eval_fraction": 0.0, "save_steps": 50, "gradient_checkpointing": False}


def size_preset(model: str) -> dict:
    """Hyper-parameters that are a sane start for a model of this size."""
    info = catalog.resolve(model or TINY_NAME)
    if info.name == TINY_NAME:  # the test model: memorises a handful of pairs in about 30 steps
        return dict(TINY_PRESET)
    params_b = info.params_b
    if params_b < 0.5:
        return {"learning_rate": 2e-4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                "lora_r": 16, "lora_alpha": 32, "max_seq_length": 2048}
    if params_b < 3:
        return {"learning_rate": 2e-4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
                "lora_r": 16, "lora_alpha": 16, "max_seq_length": 2048}
    if params_b < 10:
        return {"learning_rate": 1e-4, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
                "lora_r": 16, "lora_alpha": 16, "max_seq_length": 2048}
    return {"learning_rate": 1e-4, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8,
            "lora_r": 16, "lora_alpha": 16, "max_seq_length": 1024}
def grpo_preset(model: str) -> dict:
    """GRPO hyper-parameters that are a sane start for ``model``'s size (LoRA, small learning rate)."""
    info = catalog.resolve(model)
    n = info.params_b
    values = {"method": "grpo", "learning_rate": 5e-6, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
              "weight_decay": 0.1, "beta": 0.04, "temperature": 1.0, "logging_steps": 1, "save_steps": 50,
              "eval_fraction": 0.0, "lora_dropout": 0.0}
    if n < 0.01:  # the tiny test model: short everything, a learning rate it can feel
        # its tokenizer is coarse: GSM8K's prompts with their system prompt run to ~420 tokens (256 left out 124 of
        # the first 200 prompts)
        values.update(learning_rate=5e-5, num_generations=4, max_completion_length=32, max_seq_length=512,
                      per_device_train_batch_size=4, gradient_accumulation_steps=1, lora_r=16, lora_alpha=32,
                      gradient_checkpointing=False)
    elif n < 3:  # 270M to 2B: the same shape; recompute activations from about 1B up
        values.update(num_generations=8, max_completion_length=256, max_seq_length=768,
                      per_device_train_batch_size=8, gradient_accumulation_steps=1, lora_r=32, lora_alpha=64,
                      gradient_checkpointing=n >= 0.5)
    elif n < 10:
        values.update(num_generations=6, max_completion_length=384, max_seq_length=1024,
                      per_device_train_batch_size=6, gradient_accumulation_steps=2, lora_r=16, lora_alpha=32,
                      gradient_checkpointing=True)
    else:
        values.update(num_generations=4, max_completion_length=384, max_seq_length=1024,
                      per_device_train_batch_size=4, gradient_accumulation_steps=2, lora_r=16, lora_alpha=32,
                      gradient_checkpointing=True)
    return values


# Preference tuning moves a model that already answers: a tenth of the LoRA learning rate for DPO and KTO (the
# tiny test model flipped all four of its answers at 2e-4 and broke some at 1e-3), a quarter for ORPO, whose own
# answer loss keeps it fluent; beta 0.1 for each, TRL's default and the papers'.
PREFERENCE_LEARNING_RATE = {"dpo": 0.1, "kto": 0.1, "orpo": 0.25}


def preset_for(model: str, method: str | None) -> dict:
    """The settings a run of ``model`` with ``method`` starts from: the model's size preset (LoRA's), a tenth of its
    learning rate for a full fine-tune, for GRPO its own (RL wants a far smaller learning rate, generations,
    lengths), and for preference tuning a share of it (PREFERENCE_LEARNING_RATE) with beta 0.1."""
    values = size_preset(model)
    if method == "full" and "learning_rate" in values:
        values["learning_rate"] = values["learning_rate"] / 10
    if method == "grpo":
        values.update(grpo_preset(model or TINY_NAME))
    if method in PREFERENCE_LEARNING_RATE and "learning_rate" in values:
        values.update(learning_rate=values["learning_rate"] * PREFERENCE_LEARNING_RATE[method], beta=0.1)
    if method == "kto" and values.get("per_device_train_batch_size", 2) < 2:  # its KL term needs two rows a batch
        values.update(per_device_train_batch_size=2,
                      gradient_accumulation_steps=max(1, values.get("gradient_accumulation_steps", 1) // 2))
    return values


def full_preset(model: str, method: str | None) -> dict:
    """``preset_for`` over every field some model's or method's preset sets, the rest of those at TrainConfig's
    defaults: a form switched to another model or method keeps nothing of the last one's preset (the test model's
    30 epochs stayed on a 1B's form), as a run started through the API would not."""
    defaults = {spec["name"]: spec["default"] for spec in field_specs(TrainConfig)}
    return {name: defaults[name] for name in _preset_fields()} | preset_for(model, method)


@functools.lru_cache(maxsize=1)
def _preset_fields() -> frozenset:
    return frozenset().union(*(preset_for(name, method) for name in catalog.CATALOG for method in METHODS)) - {
        "method"}


def method_presets(model: str) -> dict[str, dict]:
    """Each method's preset for ``model`` over the same fields, so moving from one method to another can say what
    each field becomes."""
    return {method: {k: v for k, v in full_preset(model, method).items() if k != "method"} for method in METHODS}


def preset_moves(model: str, method: str, current: dict) -> dict:
    """The fields that move to ``method``'s preset: those still at some method's preset value (a value the person
    typed stays)."""
    presets = method_presets(model or TINY_NAME)
    target = presets.get(method, {})
    return {name: value for name, value in target.items() if name in current
            and not _same(current[name], value) and any(_same(current[name], p[name]) for p in presets.values())}


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def gsm8k_preset(model: str = "gemma-3-1b-it", owner: str | None = None) -> dict:
    """TrainConfig values for GRPO on GSM8K: system prompt, answer format, rewards, evaluation, GRPO defaults.

    With ``owner``, the GSM8K train subset is saved into that user's workspace as ``gsm8k-train`` (the ``dataset``
    the values name); evaluation uses the built-in test subset (``eval_dataset: gsm8k``).
    """
    if owner:
        gsm8k.save_to_workspace(owner)
    return {
        "model": model,
        "dataset": gsm8k.DATASET_NAME,
        "method": "grpo",
        **grpo_preset(model),
        "system_prompt": gsm8k.SYSTEM_PROMPT,
        "answer_format": gsm8k.ANSWER_FORMAT,
        "rewards": ["correctness", "format"],
        "reward_weights": [1.0, 0.5],
        "eval_fraction": 0.0,
        "eval_dataset": gsm8k.EVAL_NAME,
        "eval_samples": 100,
        "max_steps": 100,
    }
