"""Load a model for training or inference, through Unsloth where it can.

Unsloth picks its own backend: its GPU kernels where a GPU is present, its CPU
backend (stock transformers + PEFT with chunked cross-entropy) otherwise. If Unsloth
cannot load a model at all, we fall back to plain transformers + PEFT and say so.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from garage import access, catalog, device, paths
from garage.errors import GarageError
from garage.models.templates import describe_gap, opening_gap, opens_with_bos
from garage.offline_models import RANDOM_PREFIX, REAL_SHAPES, TINY_NAME, build_random_gemma, build_tiny_gemma


@dataclass
class Loaded:
    model: object
    tokenizer: object
    backend: str                  # "unsloth" or "transformers"
    source: str                   # what from_pretrained was given
    notices: list = field(default_factory=list)  # things the user should know (fallbacks)


def import_unsloth() -> bool:
    """Import Unsloth before transformers and TRL (it patches them); False if it cannot load, and on ZeroGPU
    outside a GPU call (its import fails under ZeroGPU's CUDA emulation and leaves half-applied patches)."""
    if device.cuda_emulated():
        return False
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    # Unsloth's per-block torch.compile: measured on an H100 (bench/README.md), runs with it spent minutes in their
    # first steps and never reached a steady rate in 4 minutes; without it the 1B LoRA ran at 1.75x plain TRL after
    # 46 s of warm-up. Most runs made here are short, so it is off unless UNSLOTH_BLOCK_COMPILE=1 asks for it.
    os.environ.setdefault("UNSLOTH_BLOCK_COMPILE", "0")
    keep_compiled_kernels()
    try:
        import unsloth  # noqa: F401
    except Exception:
        return False
    return True


def keep_compiled_kernels() -> None:
    """Keep Unsloth's compiled-kernel bundles (its Mega-cache of torch.compile artifacts) and Triton's kernels
    under the garage home, which outlives a restart (on a Space with storage, /data); their defaults under ~ do
    not. On an H100 a 1B LoRA run's first step ended 60 s and more after loading began on a fresh machine, 28 s once
    earlier runs had filled the machine's caches (bench/README.md). torch's own cache folder is left to Unsloth,
    which manages it; a folder the user chose is left alone."""
    os.environ.setdefault("UNSLOTH_MEGA_CACHE_DIR", str(paths.cache_dir() / "unsloth"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(paths.cache_dir() / "triton"))


def model_source(name: str) -> str:
    """What to hand to from_pretrained: a local folder or a Hub id (the test model is built on demand)."""
    if name.strip() == TINY_NAME:
        return str(build_tiny_gemma())
    if name.strip().startswith(RANDOM_PREFIX) and name.strip()[len(RANDOM_PREFIX):] in REAL_SHAPES:
        return str(build_random_gemma(name.strip()[len(RANDOM_PREFIX):]))
    access.refuse_server_folder(name)
    return catalog.resolve(name).hub_id


def explain_load_error(name: str, exc: Exception) -> GarageError:
    """Turn a loading failure into something a person can act on."""
    text = str(exc)
    lowered = text.lower()
    if "401" in text or "403" in text or "gated" in lowered or "restricted" in lowered:
        return GarageError(catalog.gated_help(name))
    if "offline" in lowered or "connection" in lowered or "couldn't connect" in lowered or "resolve" in lowered:
        return GarageError(f"Could not download {name}: the Hugging Face Hub is unreachable (offline?). "
                           f"Use a local model folder, or {TINY_NAME} which works offline.")
    if "does not appear to have" in lowered or "not a valid model identifier" in lowered or "404" in text:
        return GarageError(f"{name} is not a model on the Hub or a folder here. Check the spelling, or pick "
                           "one from the catalogue.")
    return GarageError(f"Could not load {name}: {text.splitlines()[0][:300] if text else type(exc).__name__}")


def load_model(name: str, *, method: str = "lora", max_seq_length: int = 1024, for_training: bool = True,
               chat: bool = True, log=print) -> Loaded:
    """Load ``name`` for ``method``; QLoRA without a GPU falls back to LoRA (said in notices). ``chat``: the data
    is conversations, which need a chat template (plain text trains without one)."""
    source = model_source(name)
    notices: list[str] = []
    load_in_4bit = method == "qlora"
    if load_in_4bit and not device.has_gpu():
        notices.append("QLoRA needs a GPU for 4-bit weights; no GPU found, so this run trains LoRA on "
                       "16-bit weights instead (same adapter, more memory).")
        load_in_4bit = False
    try:
        loaded = _load_unsloth(source, method, max_seq_length, load_in_4bit)
    except GarageError:
        raise
    except Exception as exc:  # Unsloth could not take it: try plain transformers, say so
        if _is_access_problem(exc):
            raise explain_load_error(name, exc) from exc
        notices.append(f"Unsloth could not load this model ({str(exc).splitlines()[0][:200]}); "
                       "using plain transformers + PEFT instead (slower, same result).")
        try:
            loaded = _load_transformers(source, method, max_seq_length, load_in_4bit)
        except Exception as exc2:
            raise explain_load_error(name, exc2) from exc2
    loaded.notices = notices + loaded.notices
    if chat:
        _ensure_chat_template(loaded, name)
    for notice in loaded.notices:
        log(f"NOTICE: {notice}")
    return loaded


def _is_access_problem(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("401", "403", "gated", "offline", "couldn't connect",
                                          "not a valid model identifier", "does not appear to have"))


def _load_unsloth(source: str, method: str, max_seq_length: int, load_in_4bit: bool) -> Loaded:
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=max_seq_length, dtype=None, load_in_4bit=load_in_4bit,
        full_finetuning=method == "full", token=os.environ.get("HF_TOKEN") or None,
    )
    return Loaded(model, tokenizer, "unsloth", source)


def _load_transformers(source: str, method: str, max_seq_length: int, load_in_4bit: bool) -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    dtype = torch.bfloat16 if device.has_gpu() and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, token=os.environ.get("HF_TOKEN") or None,
                                                 **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, model_max_length=max_seq_length)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    patch_trl_for_cpu()
    return Loaded(model, tokenizer, "transformers", source)


def patch_trl_for_cpu() -> None:
    """TRL's fused log-prob kernel is Triton-only: without a GPU route it to a CPU implementation."""
    if device.has_gpu():
        return
    try:
        from unsloth_zoo.cpu.ops import patch_trl_fused_lm_head
    except Exception:
        return
    patch_trl_fused_lm_head()


def _ensure_chat_template(loaded: Loaded, name: str) -> None:
    """The template training formats conversations with (see ``training_template``), its notices logged."""
    loaded.tokenizer, notices = training_template(loaded.tokenizer, name)
    loaded.notices.extend(notices)


def training_template(tokenizer, name: str) -> tuple[object, list[str]]:
    """The tokenizer's own template, with two exceptions: a template-less tokenizer gets the catalogue's, and a
    Gemma 4 whose template opens replies with an empty thought channel that its past replies lack gets Unsloth's
    gemma-4 template, which puts the channel into past replies too (so training matches chat and exports)."""
    info = catalog.resolve(name)
    notices = []
    if not getattr(tokenizer, "chat_template", None):
        if not info.chat_template:
            raise GarageError(f"{name} has no chat template, so conversations cannot be formatted for it. "
                              "Pick an instruction-tuned model, or a catalogue model whose template is known.")
        tokenizer = _unsloth_template(tokenizer, info.chat_template)
        notices.append(f"{name} has no chat template of its own; using Unsloth's {info.chat_template} template.")
    gap = opening_gap(tokenizer)
    if gap and info.family == "gemma-4":
        had_bos = opens_with_bos(tokenizer)
        tokenizer = _unsloth_template(tokenizer, "gemma-4")
        if had_bos and not opens_with_bos(tokenizer):  # Unsloth adds it only for tokenizer classes named Gemma*
            tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template
        notices.append(f"{name} opens replies with an empty thought channel its template leaves out of past "
                       "replies; training puts it into them too (Unsloth's gemma-4 template), as chat prompts.")
        gap = opening_gap(tokenizer)
    if gap:
        notices.append(describe_gap(name, gap))
    return tokenizer, notices


def _unsloth_template(tokenizer, template: str):
    if not import_unsloth():
        raise GarageError(f"Unsloth's {template} chat template is needed, and Unsloth cannot load here.")
    from unsloth.chat_templates import get_chat_template

    return get_chat_template(tokenizer, chat_template=template)


def add_lora(loaded: Loaded, cfg, start: Path | None = None) -> object:
    """Wrap the model with a LoRA adapter as the config says (Unsloth's, or PEFT's in the fallback); ``start``: an
    adapter folder whose weights it starts from (a run continued from another, with that run's shape)."""
    model = _new_lora(loaded, cfg)
    if start is not None:
        load_adapter_weights(model, Path(start))
    return model


def load_adapter_weights(model, folder: Path) -> None:
    """The LoRA weights saved in ``folder`` (PEFT's adapter_model.safetensors) into ``model``'s own adapter."""
    from peft import set_peft_model_state_dict  # the worker's, as above
    from safetensors.torch import load_file

    found = set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    if found.unexpected_keys:
        raise GarageError(f"The adapter in {folder} does not fit this model's LoRA layers "
                          f"({len(found.unexpected_keys)} weights without a place, e.g. {found.unexpected_keys[0]}): "
                          "continue from a run of the same base model.")


def _new_lora(loaded: Loaded, cfg) -> object:
    if loaded.backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            loaded.model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules), random_state=cfg.seed,
            use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
            max_seq_length=cfg.max_seq_length,
        )
    from peft import LoraConfig, get_peft_model

    if cfg.gradient_checkpointing:
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        loaded.model.enable_input_require_grads()
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(loaded.model, config)


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """The model's tokenizer (with its chat template) for counting tokens; None if it cannot be had."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_source(name))
    except Exception:
        return None
    try:
        return training_template(tokenizer, name)[0]
    except Exception:  # no template to be had here (or Unsloth cannot load): count with the tokenizer's own, if any
        return tokenizer if getattr(tokenizer, "chat_template", None) else None
