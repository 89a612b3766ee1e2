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

METHODS = ("lora", "qlora", "full", "grpo", "dpo", "orpo", "kto", "prompt")
PREFERENCE_METHODS = ("dpo", "orpo", "kto")  # garage.train.preference: a LoRA adapter from preference data
REWARDS = ("correctness", "format", "length", "judge")  # garage.scoring.rewards has each one
TRACKERS = ("none", "trackio", "tensorboard", "wandb")  # garage.train.tracking: where a run's metrics also go
PLACES = ("here", "hf-jobs")  # where a run trains: this machine's worker, or a Hugging Face Job (garage.jobs.hf_jobs)


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
                         "full: update every weight. grpo: reinforcement learning of a LoRA adapter from rewards "
                         "(prompts from the dataset, settings in the GRPO group). dpo / orpo / kto: preference tuning of a LoRA "
                         "adapter (a preference dataset: prompt / chosen / rejected pairs, or KTO's labelled answers; "
                         "the Compare tab's votes make one). prompt: no weights change; GEPA evolves the system "
                         "prompt against the evaluation's score (settings in the prompt group).", choices=METHODS)
    max_seq_length: int = option(1024, "Longest sequence in tokens; longer conversations are truncated.",
                                 minimum=32, maximum=131072)
    num_train_epochs: float = option(3.0, "Passes over the training data (ignored when max_steps > 0).",
                                     minimum=0.01, maximum=100)
    max_steps: int = option(-1, "Total optimizer steps; -1 means use num_train_epochs.", minimum=-1, maximum=1_000_000)
    learning_rate: float = option(2e-4, "Peak learning rate. LoRA: 1e-4 to 3e-4. Full: 1e-5 to 5e-5. GRPO: about 5e-6.",
                                  minimum=1e-9, maximum=1.0)  # 0 would train nothing, silently
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
    init_run: str = option("", "Continue from a finished run's adapter (its run id): its LoRA weights train on "
                           "(lora, qlora, dpo, orpo, kto; the same base model). Empty: a new adapter on the base "
                           "model.", group="lora")
    load_in_4bit: bool = option(False, "dpo / orpo / kto: the adapter on 4-bit weights, as qlora does (GPU only; "
                                "LoRA on a CPU).", group="lora")
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
    batch_shaping: bool = option(True, "Run each optimizer step's rows in fewer, larger passes when memory allows "
                                 "(same rows per step and same loss; faster, above all on a GPU; the log says the "
                                 "passes). Not for GRPO, whose batch counts completions.", group="advanced")
    gradient_checkpointing: bool = option(True, "Recompute activations to save memory (slower, far leaner).",
                                          group="advanced")
    weight_decay: float = option(0.01, "Weight decay of AdamW.", minimum=0.0, maximum=1.0, group="advanced")
    chunk_steps: int = option(0, "Run the job in pieces of N steps, each resuming from the last checkpoint "
                              "(ZeroGPU does this automatically; 0 = one piece).", minimum=0, maximum=1_000_000,
                              group="advanced")
    # --- experiment tracking (garage.train.tracking) --------------------------------
    report_to: str = option("none", "Also log the run's metrics (the app's own plots stay as they are) to: trackio "
                            "(Hugging Face's local-first tracker: `trackio show` opens it; works offline), "
                            "tensorboard (event files in the run folder's tensorboard/, in the adapter zip and on "
                            "the Hub with the result: `tensorboard --logdir <run>/tensorboard`), or wandb (Weights "
                            "& Biases with the server's WANDB_API_KEY or `wandb login`; WANDB_MODE=offline keeps it "
                            "in the run folder).", choices=TRACKERS, group="advanced")
    tracking_project: str = option("gemma-garage", "trackio / wandb: the project the run is logged under (each run "
                                   "is named by its id).", group="advanced")
    # --- where it trains ---------------------------------------------------------
    run_on: str = option("here", "here: this machine's worker. hf-jobs: a Hugging Face Job on your account (paid "
                         "per second; sign in allowing jobs, or HF_TOKEN): the same training on the flavor you pick, "
                         "followed here live; checkpoints and the result go to hub_repo.", choices=PLACES,
                         group="where")
    gpus: int = option(1, "here: how many of this machine's GPUs train the run, one process each (DDP through "
                       "accelerate launch): a step's rows are split over them, so the loss curve is one GPU's, "
                       "sooner. hf-jobs: every GPU of the flavor (l4x4: 4) trains; leave 1.", minimum=1, maximum=64,
                       group="where")
    flavor: str = option("a10g-small", "hf-jobs: the hardware, e.g. t4-small, l4x1, a10g-small, a10g-large, "
                         "a100-large, h200 (the Hub's list and prices: python -m garage flavors).", group="where")
    job_timeout_minutes: int = option(0, "hf-jobs: the job is ended after this long (0: twice the estimate made at "
                                      "Start plus 15 minutes, 30 at least); Resume goes on from its last pushed "
                                      "checkpoint.", minimum=0, maximum=7 * 24 * 60, group="where")
    hub_repo: str = option("", "hf-jobs: the model repo (created private) for the job's checkpoints and the trained "
                           "weights; empty: <your user name>/<run id>.", group="where")
    # --- GRPO (method: grpo) ---------------------------------------------------
    num_generations: int = option(4, "GRPO: completions sampled per prompt; each is rewarded against the others of "
                                  "its group. 4 to 8 for small models. The batch (per_device_train_batch_size x "
                                  "gradient_accumulation_steps) counts completions.", minimum=2, maximum=64,
                                  group="grpo")
    max_completion_length: int = option(256, "GRPO: longest completion sampled, in tokens. prompt: longest answer "
                                        "the task model writes while prompts are scored (chain-of-thought math: "
                                        "512 or more).", minimum=4,
                                        maximum=32768, group="grpo")
    beta: float = option(0.04, "GRPO: weight of the KL penalty that keeps the model near the base (0: none, "
                         "faster). DPO / KTO: how far from the starting model the preferences may pull it (lower: "
                         "further; 0.1 typical). ORPO: weight of the preference term beside the answers' own loss.",
                         minimum=0.0, maximum=10.0, group="grpo")
    temperature: float = option(1.0, "GRPO: sampling temperature of the completions (higher: more varied groups).",
                                minimum=0.05, maximum=2.0, group="grpo")
    rewards: list = option(["correctness", "format"], "GRPO rewards, combined: correctness (final number equals the "
                           "reference's), format (reasoning, then the answer_format at the end), length (penalty "
                           "past 3/4 of max_completion_length), judge (an LLM scores 0-1 against the rubric).",
                           group="grpo")
    reward_weights: list = option([], "GRPO: one weight per reward, same order (empty: all 1).", group="grpo")
    answer_format: str = option("#### {answer}", "GRPO: where the final answer goes, {answer} marking it, e.g. "
                                "'#### {answer}' or '<answer>{answer}</answer>'.", group="grpo")
    system_prompt: str = option("", "GRPO: system prompt put before every prompt (replaces the dataset's; empty: "
                                "keep the dataset's). prompt: the prompt the search starts from (empty: the "
                                "benchmark's, else a plain one).", group="grpo")
    rubric: str = option("", "GRPO judge reward: what a good answer does, in your words; the judge scores each "
                         "completion 0 to 1 against it.", group="grpo")
    judge_backend: str = option("gemini", "GRPO judge: gemini (GEMINI_API_KEY) or openai (any OpenAI-compatible "
                                "endpoint; OPENAI_API_KEY if it needs one).", choices=("gemini", "openai"),
                                group="grpo")
    judge_model: str = option("gemini-2.5-flash", "GRPO judge: the model that scores.", group="grpo")
    judge_base_url: str = option("", "GRPO judge: endpoint address (needed for openai, e.g. http://localhost:8000/v1; "
                                 "empty: Google's for gemini).", group="grpo")
    judge_on_failure: str = option("fail", "GRPO judge: when it cannot score after its retries, fail the run with "
                                   "the reason, or score zero and log a warning.", choices=("fail", "zero"),
                                   group="grpo")
    eval_dataset: str = option("", "GRPO: the evaluation after training; prompt: the validation rows every "
                               "candidate prompt is scored on. A built-in benchmark (gsm8k: GSM8K test, first 100; "
                               "gsm8k-full: all 1,319; aime24: AIME 2024), a saved dataset, or empty for this run's "
                               "held-out rows (eval_fraction).", group="grpo")
    eval_samples: int = option(0, "GRPO: after training, score base and tuned on this many held-out prompts "
                               "(accuracy, format failures); 0: skip.", minimum=0, maximum=100_000, group="grpo")
    # --- prompt optimisation (method: prompt) -------------------------------------
    tuned_run: str = option("", "prompt: optimise the prompt of this finished run's tuned model (its id) instead "
                            "of the base model's.", group="prompt")
    val_rows: int = option(20, "prompt: validation rows (of eval_dataset) every candidate prompt is scored on; the "
                           "chosen prompt is the best on them.", minimum=1, maximum=2000, group="prompt")
    metric_calls: int = option(200, "prompt: the budget, in answers generated and scored (the starting prompt's "
                               "validation counts; each new candidate costs its minibatch, and val_rows more if it "
                               "does better there; the iteration under way when it runs out finishes). Answers are "
                               "at most max_completion_length tokens.", minimum=1, maximum=1_000_000,
                               group="prompt")
    reflection_minibatch_size: int = option(3, "prompt: training rows the reflection model reads (question, answer, "
                                            "what was wrong) before it proposes a new prompt.", minimum=1,
                                            maximum=64, group="prompt")
    reflection_backend: str = option("gemini", "prompt: the LLM that reads the failures and writes new prompts: "
                                     "gemini (GEMINI_API_KEY), openai (any OpenAI-compatible endpoint), or local "
                                     "(a model on this machine).", choices=("gemini", "openai", "local"),
                                     group="prompt")
    reflection_model: str = option("gemini-2.5-flash", "prompt: the reflection model's name.", group="prompt")
    reflection_base_url: str = option("", "prompt: the reflection endpoint's address (needed for openai, e.g. "
                                      "http://localhost:8000/v1).", group="prompt")
    reflection_max_tokens: int = option(0, "prompt: stop once the reflection model has read and written this many "
                                        "tokens (0: no limit).", minimum=0, maximum=1_000_000_000, group="prompt")
    reflection_max_dollars: float = option(0.0, "prompt: stop once the reflection model has cost this many US "
                                           "dollars (Gemini's list prices; 0: no limit).", minimum=0.0,
                                           maximum=100_000.0, group="prompt")

    def validate(self) -> "TrainConfig":
        """Raise ``GarageError`` naming the first field that is out of range."""
        if not self.model.strip():
            raise GarageError("Choose a base model.")
        if not self.dataset.strip():
            raise GarageError("Choose a dataset: save one in the Data tab first.")
        check_ranges(self)
        if self.method != "full" and not self.target_modules:
            raise GarageError("target_modules is empty: LoRA needs at least one layer name (e.g. q_proj).")
        if self.method == "grpo":
            check_grpo_config(self)
        if self.method == "prompt":
            check_prompt_config(self)
        if self.method == "kto" and self.per_device_train_batch_size < 2:
            raise GarageError("kto needs per_device_train_batch_size of at least 2: its KL term compares each answer "
                              "with another row's prompt in the same batch (lower gradient_accumulation_steps to "
                              "keep the rows per step).")
        if self.init_run.strip() and self.method not in ("lora", "qlora", *PREFERENCE_METHODS):
            raise GarageError(f"init_run continues a run's LoRA adapter: it works with lora, qlora, dpo, orpo and "
                              f"kto, not {self.method}.")
        check_tracking(self)
        return self

    # --- YAML in and out -------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return cls(**coerce_fields(cls, data, "config field")).validate()

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


# What each field means, in a person's words, and its unit: the form's labels (the help above is the longer
# explanation; the key stays beside it for those who copy YAML). Kept next to the dataclass, one entry a field
# (tests/test_config.py checks every field has one).
LABELS = {
    'model': ('Base model', ''),
    'dataset': ('Dataset', ''),
    'method': ('Method', ''),
    'max_seq_length': ('Longest conversation', 'tokens'),
    'num_train_epochs': ('Passes over the data', 'epochs'),
    'max_steps': ('Total steps (overrides passes)', 'optimizer steps; -1: off'),
    'learning_rate': ('Learning rate', ''),
    'lr_scheduler_type': ('Learning-rate schedule', ''),
    'warmup_ratio': ('Warm-up share', 'of the steps'),
    'per_device_train_batch_size': ('Conversations per pass on one GPU', 'rows'),
    'gradient_accumulation_steps': ('Passes per step', 'rows per step = rows per pass x this'),
    'lora_r': ('Adapter rank', ''),
    'lora_alpha': ('Adapter scale (alpha)', ''),
    'lora_dropout': ('Adapter dropout', 'share'),
    'init_run': ('Continue from run', 'run id; empty: a new adapter'),
    'load_in_4bit': ('4-bit base (QLoRA) for preference tuning', ''),
    'target_modules': ('Layers that get an adapter', ''),
    'train_on_responses_only': ('Learn from the answers only', ''),
    'packing': ('Pack short conversations together', ''),
    'eval_fraction': ('Held-out share', 'of the rows'),
    'eval_steps': ('Evaluate every', 'steps; 0: auto'),
    'save_steps': ('Checkpoint every', 'steps'),
    'logging_steps': ('Record the loss every', 'steps'),
    'seed': ('Random seed', ''),
    'batch_shaping': ('Fewer, larger passes when memory allows', ''),
    'gradient_checkpointing': ('Save memory by recomputing (slower)', ''),
    'weight_decay': ('Weight decay', ''),
    'chunk_steps': ('Train in pieces of', 'steps; 0: one piece'),
    'report_to': ('Also log to (experiment tracker)', ''),
    'tracking_project': ('Tracker project', ''),
    'run_on': ('Where it trains', ''),
    'gpus': ('GPUs on this machine', 'processes'),
    'flavor': ('Jobs hardware', ''),
    'job_timeout_minutes': ('Job time limit', 'minutes; 0: auto'),
    'hub_repo': ("Repo for the job's results", ''),
    'num_generations': ('Answers sampled per prompt', ''),
    'max_completion_length': ('Longest answer', 'tokens'),
    'beta': ('Stay close to the start (KL weight; ORPO: preference weight)', ''),
    'temperature': ('Sampling temperature', ''),
    'rewards': ('Rewards', ''),
    'reward_weights': ('Reward weights', ''),
    'answer_format': ('Answer format', ''),
    'system_prompt': ('System prompt', ''),
    'rubric': ("Judge's rubric", ''),
    'judge_backend': ('Judge service', ''),
    'judge_model': ('Judge model', ''),
    'judge_base_url': ('Judge address', 'URL'),
    'judge_on_failure': ('When the judge fails', ''),
    'eval_dataset': ('Held-out set', ''),
    'eval_samples': ('Evaluate on this many prompts after training', 'prompts; 0: skip'),
    'tuned_run': ('Fine-tuned run to prompt', 'run id; empty: the base model'),
    'val_rows': ('Validation rows', 'rows'),
    'metric_calls': ('Budget', 'answers scored'),
    'reflection_minibatch_size': ('Rows read per reflection', 'rows'),
    'reflection_backend': ('Reflection service', ''),
    'reflection_model': ('Reflection model', ''),
    'reflection_base_url': ('Reflection address', 'URL'),
    'reflection_max_tokens': ('Reflection token limit', 'tokens; 0: none'),
    'reflection_max_dollars': ('Reflection spending limit', 'USD; 0: none'),
}
# The fields shown open, in the order a person decides them: what to train, how long, how fast it learns, memory.
SECTIONS = {
    'method': 'what',
    'train_on_responses_only': 'what',
    'eval_fraction': 'what',
    'num_train_epochs': 'how long',
    'max_steps': 'how long',
    'learning_rate': 'how fast',
    'max_seq_length': 'memory',
    'per_device_train_batch_size': 'memory',
    'gradient_accumulation_steps': 'memory',
}
SECTION_TITLES = {"what": "What it learns", "how long": "How long", "how fast": "How fast it learns",
                  "memory": "Memory"}


def coerce_fields(cls, data: dict, what: str) -> dict:
    """Form / YAML / API values converted to ``cls``'s field types; unknown names refused by name."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise GarageError(f"Unknown {what}(s): {', '.join(unknown)}. Known: {', '.join(known)}.")
    return {name: _coerce(value, known[name]) for name, value in data.items()}


def check_ranges(config) -> None:
    """Raise ``GarageError`` naming the first field outside its choices or range."""
    for f in fields(config):
        value = getattr(config, f.name)
        choices, lo, hi = f.metadata["choices"], f.metadata["minimum"], f.metadata["maximum"]
        if choices and value not in choices:
            raise GarageError(f"{f.name} must be one of {', '.join(map(str, choices))}; got {value!r}.")
        if lo is not None and value < lo or hi is not None and value > hi:
            raise GarageError(f"{f.name} must be between {lo} and {hi}; got {value!r}.")


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
        kind_name = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(kind.__name__,
                                                                                           kind.__name__)
        raise GarageError(f"{f.name} must be {kind_name}; got {value!r}.") from None


def field_specs(cls=TrainConfig) -> list[dict]:
    """Form hints for each field: name, default, help, choices, group, range; a TrainConfig's also its label in a
    person's words, its unit and its section (others are labelled by their names)."""
    specs = []
    worded = cls is TrainConfig
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        label, unit = LABELS[f.name] if worded else (f.name, "")
        specs.append({"name": f.name, "default": default, "type": type(default).__name__, **f.metadata,
                      "label": label, "unit": unit, "section": SECTIONS.get(f.name) if worded else None})
    return specs


def check_grpo_config(cfg) -> None:
    """Raise ``GarageError`` naming what is wrong with a GRPO config's rewards; normalise names and weights."""
    names = [str(n).strip().lower() for n in (cfg.rewards or []) if str(n).strip()]
    if not names:
        raise GarageError(f"GRPO needs at least one reward: choose from {', '.join(REWARDS)}.")
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise GarageError(f"Unknown reward(s): {', '.join(unknown)}. Choose from {', '.join(REWARDS)}.")
    if len(set(names)) != len(names):
        raise GarageError(f"A reward is listed twice in rewards: {', '.join(names)}.")
    cfg.rewards = names
    try:
        weights = [float(w) for w in (cfg.reward_weights or [])]
    except (TypeError, ValueError):
        raise GarageError(f"reward_weights must be numbers; got {cfg.reward_weights!r}.") from None
    if weights and len(weights) != len(names):
        raise GarageError(f"reward_weights has {len(weights)} value(s) but rewards has {len(names)} "
                          f"({', '.join(names)}): give one weight per reward, or none for all 1.")
    cfg.reward_weights = weights
    check_answer_format(cfg)
    if "format" in names and not cfg.answer_format:
        raise GarageError("The format reward needs an answer_format, e.g. '#### {answer}'.")
    if "judge" in names:
        if not cfg.rubric.strip():
            raise GarageError("The judge reward needs a rubric: say what a good answer does, e.g. 'Correct, "
                              "polite, and under 100 words'.")
        check_endpoint("judge", cfg.judge_backend, cfg.judge_base_url)


def check_prompt_config(cfg) -> None:
    """Raise ``GarageError`` naming what is wrong with a prompt optimisation's settings."""
    check_answer_format(cfg)
    check_endpoint("reflection", cfg.reflection_backend, cfg.reflection_base_url)
    if cfg.reflection_max_dollars and cfg.reflection_backend != "gemini":
        raise GarageError(f"reflection_max_dollars needs prices, and only Gemini's are known here (not "
                          f"{cfg.reflection_backend}'s): limit reflection_max_tokens instead.")
    if not cfg.reflection_model.strip():
        raise GarageError("Name the reflection model (reflection_model), e.g. gemini-2.5-flash.")
    if cfg.metric_calls <= cfg.val_rows:
        raise GarageError(f"metric_calls ({cfg.metric_calls}) must be more than val_rows ({cfg.val_rows}): scoring "
                          f"the starting prompt alone takes {cfg.val_rows}, and each candidate its minibatch and "
                          f"the validation rows again, so a useful search needs several times that (e.g. "
                          f"{cfg.val_rows * 6}).")
    if cfg.run_on != "here" or cfg.gpus > 1:
        raise GarageError("Prompt optimisation runs on this machine's worker, on one GPU: set run_on to here and "
                          "gpus to 1 (it generates short answers, it does not train).")


def check_tracking(cfg) -> None:
    """Raise ``GarageError`` when the run cannot be logged where report_to says."""
    if cfg.report_to == "none":
        return
    if cfg.method == "prompt":
        raise GarageError("report_to logs a training run's metrics; a prompt optimisation trains nothing: set "
                          "report_to to none (its scores are in the run's plot and prompt/result.json).")
    if cfg.report_to == "trackio" and cfg.run_on == "hf-jobs":
        raise GarageError("Trackio logs into a database on the machine that trains, which a Hugging Face Job "
                          "throws away when it ends: choose tensorboard (its logs come back with the result) or "
                          "wandb for a run on Jobs.")
    project = cfg.tracking_project.strip()
    if not project or len(project) > 96 or not all(c.isalnum() or c in "-_." for c in project):
        raise GarageError(f"tracking_project must be 1 to 96 letters, digits, '-', '_' or '.'; got {project!r}.")


def check_answer_format(cfg) -> None:
    if cfg.answer_format and cfg.answer_format.count("{answer}") != 1:
        raise GarageError(f"answer_format must contain {{answer}} exactly once, e.g. '#### {{answer}}'; "
                          f"got {cfg.answer_format!r}.")


def check_endpoint(role: str, backend: str, base_url: str) -> None:
    """An OpenAI-compatible backend needs the address it is at (``role``: judge, reflection: the fields' prefix)."""
    if backend == "openai" and not base_url.strip():
        raise GarageError(f"{role}_backend openai needs {role}_base_url, the endpoint address "
                          "(e.g. http://localhost:8000/v1).")
