"""Job configurations: one dataclass per job, the single source of truth.

Every field carries its own help text (and, where it applies, its choices and
UI group) in ``dataclasses.field(metadata=...)``. The Train tab's form, the
``config.yaml`` written into each run folder and the CLI all come from these
classes, so they cannot drift apart. Field names follow TRL's where TRL has one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from garage.errors import GarageError

METHODS = ("lora", "qlora", "full")


def option(default: Any, help: str, *, choices: tuple | None = None, group: str = "basic",
           minimum: float | None = None, maximum: float | None = None) -> Any:
    """A dataclass field with its help text and form hints attached."""
    meta = {"help": help, "choices": choices, "group": group, "minimum": minimum, "maximum": maximum}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines one fine-tuning run."""

    model: str = option("tiny-gemma-3", "Base model: a catalogue name, any Hub id, or a local folder.")
    dataset: str = option("", "Saved dataset name in your workspace, or a path to a .jsonl file of conversations.")
    method: str = option("lora", "lora: small adapter on 16-bit weights. qlora: adapter on 4-bit weights (GPU only). "
                         "full: update every weight.", choices=METHODS)
    max_seq_length: int = option(1024, "Longest sequence in tokens; longer conversations are truncated.",
                                 minimum=32, maximum=131072)
    num_train_epochs: float = option(3.0, "Passes over the training data (ignored when max_steps > 0).",
                                     minimum=0.01, maximum=100)
    max_steps: int = option(-1, "Total optimizer steps; -1 means use num_train_epochs.", minimum=-1, maximum=1_000_000)
    learning_rate: float = option(2e-4, "Peak learning rate. LoRA: 1e-4 to 3e-4. Full: 1e-5 to 5e-5.",
                                  minimum=0.0, maximum=1.0)
    lr_scheduler_type: str = option("linear", "How the learning rate decays after warm-up.",
                                    choices=("linear", "cosine", "constant", "constant_with_warmup"),
                                    group="advanced")
    warmup_ratio: float = option(0.03, "Fraction of steps spent warming the learning rate up.",
                                 minimum=0.0, maximum=0.5, group="advanced")
    per_device_train_batch_size: int = option(2, "Conversations per forward pass.", minimum=1, maximum=512)
    gradient_accumulation_steps: int = option(4, "Forward passes per optimizer step "
                                              "(effective batch = batch size x this).", minimum=1, maximum=512)
    lora_r: int = option(16, "LoRA rank: adapter capacity.", minimum=1, maximum=1024, group="lora")
    lora_alpha: int = option(16, "LoRA scaling (commonly equal to the rank).", minimum=1, maximum=2048, group="lora")
    lora_dropout: float = option(0.0, "Dropout inside the adapter.", minimum=0.0, maximum=0.9, group="lora")
    target_modules: list = option(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                  "Linear layers that get an adapter.", group="lora")
    train_on_responses_only: bool = option(True, "Learn only from the model's answers, not from the prompts.")
    packing: bool = option(False, "Pack short conversations together (faster on many short rows).",
                           group="advanced")
    eval_fraction: float = option(0.1, "Share of rows held out for evaluation (0 for none).",
                                  minimum=0.0, maximum=0.5)
    eval_steps: int = option(0, "Evaluate every N steps (0: once per logging interval x 10).",
                             minimum=0, maximum=1_000_000, group="advanced")
    save_steps: int = option(50, "Save a checkpoint every N steps (a stopped or interrupted run resumes from it).",
                             minimum=1, maximum=1_000_000, group="advanced")
    logging_steps: int = option(1, "Record loss every N steps.", minimum=1, maximum=10_000, group="advanced")
    seed: int = option(3407, "Random seed for a repeatable run.", group="advanced")
    gradient_checkpointing: bool = option(True, "Recompute activations to save memory (slower, far leaner).",
                                          group="advanced")
    weight_decay: float = option(0.01, "Weight decay of AdamW.", minimum=0.0, maximum=1.0, group="advanced")
    chunk_steps: int = option(0, "Run the job in pieces of N steps, each resuming from the last checkpoint "
                              "(ZeroGPU does this automatically; 0 = one piece).", minimum=0, maximum=1_000_000,
                              group="advanced")

    def validate(self) -> "TrainConfig":
        """Raise ``GarageError`` naming the first field that is out of range."""
        if not self.model.strip():
            raise GarageError("Choose a base model.")
        if not self.dataset.strip():
            raise GarageError("Choose a dataset: save one in the Data tab first.")
        for f in fields(self):
            value = getattr(self, f.name)
            choices, lo, hi = f.metadata["choices"], f.metadata["minimum"], f.metadata["maximum"]
            if choices and value not in choices:
                raise GarageError(f"{f.name} must be one of {', '.join(map(str, choices))}; got {value!r}.")
            if lo is not None and value < lo or hi is not None and value > hi:
                raise GarageError(f"{f.name} must be between {lo} and {hi}; got {value!r}.")
        if self.method != "full" and not self.target_modules:
            raise GarageError("target_modules is empty: LoRA needs at least one layer name (e.g. q_proj).")
        return self

    # --- YAML in and out -------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise GarageError(f"Unknown config field(s): {', '.join(unknown)}. Known: {', '.join(known)}.")
        values = {}
        for name, value in data.items():
            values[name] = _coerce(value, known[name])
        return cls(**values).validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise GarageError(f"Config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise GarageError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise GarageError(f"{path} must hold a mapping of field: value.")
        return cls.from_dict(data)


def _coerce(value: Any, f: dataclasses.Field) -> Any:
    """Convert form and YAML values (strings, floats for ints) to the field's type."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind is int:
            return int(float(value))
        if kind is float:
            return float(value)
        if kind is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return list(value)
        return str(value)
    except (TypeError, ValueError):
        raise GarageError(f"{f.name} must be a {kind.__name__}; got {value!r}.") from None


def field_specs(cls=TrainConfig) -> list[dict]:
    """Form hints for each field: name, default, help, choices, group, range."""
    specs = []
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        specs.append({"name": f.name, "default": default, "type": type(default).__name__, **f.metadata})
    return specs
