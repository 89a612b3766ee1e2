"""GGUF files (f16, q8_0) for Gemma 3 text models, written with the ``gguf`` package alone.

llama.cpp's ``convert_hf_to_gguf.py`` is not installed here, so this module writes
the file itself with ``gguf.GGUFWriter``, following llama.cpp's conventions for the
``gemma3`` architecture:

* tensor names come from gguf's own ``TensorNameMap`` for ``MODEL_ARCH.GEMMA3``;
* Gemma's RMSNorm multiplies by ``1 + weight``; llama.cpp multiplies by ``weight``,
  so every norm weight is stored as ``weight + 1``;
* matrices are f16 (or q8_0, 32-value blocks), 1-D norm weights stay f32;
* the tied output head is not written (llama.cpp reuses ``token_embd``);
* hyper-parameters go under ``gemma3.*``, the tokenizer under ``tokenizer.ggml.*``
  (SentencePiece ``tokenizer.model`` -> "llama", byte-level BPE -> "gpt2"), with
  the special tokens and the chat template.

Only the text part of a multimodal Gemma 3 is written (no vision projector).
q4_k_m needs llama.cpp's ``llama-quantize`` (the gguf package cannot write K-quants);
when that tool is found it turns our f16 file into q4_k_m, otherwise the reason is given.
Tensors are converted one at a time, so memory stays near one tensor's size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from garage import catalog
from garage.errors import GarageError
from garage.models.loading import import_unsloth

QUANTS = ("q8_0", "f16", "q4_k_m")
SUPPORTED_MODEL_TYPES = ("gemma3_text", "gemma3")
QUANTIZE_TIMEOUT_S = 2 * 3600  # llama-quantize of a 27B model takes minutes; never wait forever
LLAMA_CPP_HINT = ("Get llama.cpp (https://github.com/ggml-org/llama.cpp: `cmake -B build && cmake --build build "
                  "--target llama-quantize`), then put `llama-quantize` on PATH or set GARAGE_LLAMA_CPP to the "
                  "llama.cpp folder")


def find_llama_quantize() -> str | None:
    """llama.cpp's quantize tool: on PATH, or under GARAGE_LLAMA_CPP (its folder or build/bin)."""
    found = shutil.which("llama-quantize")
    if found:
        return found
    root = os.environ.get("GARAGE_LLAMA_CPP")
    if root:
        for sub in ("build/bin/llama-quantize", "bin/llama-quantize", "llama-quantize"):
            candidate = Path(root) / sub
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def unavailable_reason(quant: str) -> str | None:
    """None when ``quant`` can be written here; otherwise why not and how to get it."""
    quant = quant.lower()
    if quant not in QUANTS:
        return f"Unknown GGUF type {quant!r}: choose one of {', '.join(QUANTS)}."
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "GGUF export needs the `gguf` package: pip install gguf."
    if quant == "q4_k_m" and not find_llama_quantize():
        return ("GGUF q4_k_m is not available here: the gguf package writes f16 and q8_0 only, and K-quants need "
                f"llama.cpp's `llama-quantize`, which is not installed. {LLAMA_CPP_HINT}. Or push q8_0 / f16 now.")
    return None


def model_type(model_dir: Path) -> str:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, json.JSONDecodeError):
        return ""


def _unsupported(kind: str) -> GarageError:
    return GarageError(
        f"GGUF export here writes Gemma 3 models only; this model is '{kind or 'unknown'}'. Use llama.cpp's "
        "converter on the merged model instead: git clone https://github.com/ggml-org/llama.cpp && pip install "
        "-r llama.cpp/requirements.txt && python llama.cpp/convert_hf_to_gguf.py MERGED_FOLDER --outtype q8_0.")


def check_family(model: str) -> None:
    """Refuse a catalogue model of another family before any merge (unknown models are tried)."""
    family = catalog.resolve(model).family
    if family not in ("gemma-3", "other"):
        raise _unsupported(family)


def check_supported(model_dir: Path) -> None:
    kind = model_type(model_dir)
    if kind not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(kind)


def write_gguf(model_dir: str | Path, out_path: str | Path, quant: str = "q8_0", *, name: str = "",
               base_model: str = "", tags: tuple = (), progress: Callable[[float, str], None] | None = None) -> Path:
    """Write ``model_dir`` (a Hugging Face Gemma 3 folder) as one GGUF file of type ``quant``."""
    quant = quant.lower()
    reason = unavailable_reason(quant)
    if reason:
        raise GarageError(reason)
    model_dir, out_path = Path(model_dir), Path(out_path)
    check_supported(model_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if quant == "q4_k_m":
        f16 = out_path.with_name(out_path.stem + ".f16.tmp.gguf")
        try:
            _write(model_dir, f16, "f16", name, base_model, tags, progress)
            return _llama_quantize(f16, out_path, "Q4_K_M")
        finally:
            f16.unlink(missing_ok=True)
    return _write(model_dir, out_path, quant, name, base_model, tags, progress)


def _llama_quantize(src: Path, out_path: Path, kind: str) -> Path:
    tool = find_llama_quantize()
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        done = subprocess.run([tool, str(src), str(tmp), kind], capture_output=True, text=True,
                              timeout=QUANTIZE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise GarageError(f"llama-quantize did not finish within {QUANTIZE_TIMEOUT_S // 60} minutes.") from None
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise GarageError(f"llama-quantize failed (exit {done.returncode}): {tail[0][:300]}")
    os.replace(tmp, out_path)
    return out_path


# --- the file itself ------------------------------------------------------------------------------

def _write(model_dir: Path, out_path: Path, quant: str, name: str, base_model: str, tags: tuple,
           progress) -> Path:
    import gguf
    import numpy as np

    text = _text_config(model_dir)
    n_layers = int(text.num_hidden_layers)
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GEMMA3]
    plan = _plan(model_dir, text, gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, n_layers), quant)
    n_vocab = next(shape[0] for _, _, gname, shape, _ in plan if gname == "token_embd.weight")

    tmp = out_path.with_name(f".{out_path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        _add_metadata(writer, text, quant, name, base_model, tags)
        _add_vocab(writer, model_dir, n_vocab)
        for _, _, gname, shape, qtype in plan:
            writer.add_tensor_info(gname, shape, np.float32, _nbytes(shape, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        shown = -1
        for i, (file, hf_name, gname, shape, qtype) in enumerate(plan):
            writer.write_tensor_data(_convert(model_dir / file, hf_name, qtype))
            tenth = 10 * (i + 1) // len(plan)
            if progress and tenth != shown:  # about ten updates per file
                shown = tenth
                progress((i + 1) / len(plan), f"GGUF {quant}: tensor {i + 1} of {len(plan)}")
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def _text_config(model_dir: Path):
    import_unsloth()  # the app imports Unsloth before transformers everywhere (it patches transformers)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _tensor_files(model_dir: Path) -> dict[str, str]:
    """Tensor name -> safetensors file, for a single file or a sharded checkpoint."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return dict(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    single = model_dir / "model.safetensors"
    if not single.is_file():
        raise GarageError(f"No safetensors weights in {model_dir.name}: GGUF export reads model.safetensors.")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as handle:
        return {key: single.name for key in handle.keys()}


_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
             ("language_model.lm_head.", "lm_head."))
_SKIP = ("model.vision_tower.", "vision_tower.", "model.multi_modal_projector.", "multi_modal_projector.")


def _plan(model_dir: Path, text, tmap, quant: str) -> list[tuple]:
    """(file, hf name, gguf name, numpy shape, ggml type) per tensor to write, in file order."""
    import gguf
    from safetensors import safe_open

    q8, f16, f32 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
    tied = bool(getattr(text, "tie_word_embeddings", True))
    plan, handles = [], {}
    try:
        for hf_name, file in sorted(_tensor_files(model_dir).items(), key=lambda item: _natural(item[0])):
            if hf_name.startswith(_SKIP):
                continue
            short = hf_name
            for old, new in _PREFIXES:
                if short.startswith(old):
                    short = new + short[len(old):]
            if short == "lm_head.weight" and tied:
                continue
            gname = tmap.get_name(short, try_suffixes=(".weight", ".bias"))
            if gname is None:
                raise GarageError(f"GGUF export does not know the tensor '{hf_name}': only Gemma 3 text weights "
                                  "are supported here.")
            if file not in handles:
                handles[file] = safe_open(str(model_dir / file), framework="pt")
            shape = tuple(handles[file].get_slice(hf_name).get_shape())
            if len(shape) == 1:
                qtype = f32
            elif quant == "q8_0" and shape[-1] % 32 == 0:
                qtype = q8
            else:
                qtype = f16
            plan.append((file, hf_name, gname, shape, qtype))
    finally:
        handles.clear()
    if not any(p[2] == "token_embd.weight" for p in plan):
        raise GarageError("GGUF export found no token embedding (model.embed_tokens.weight) in the weights.")
    return plan


def _natural(name: str) -> list:
    """Sort key putting layer 2 before layer 10."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _nbytes(shape: tuple, qtype) -> int:
    import math

    import gguf

    if qtype == gguf.GGMLQuantizationType.F32:
        return 4 * math.prod(shape)
    if qtype == gguf.GGMLQuantizationType.F16:
        return 2 * math.prod(shape)
    return math.prod(gguf.quant_shape_to_byte_shape(shape, qtype))


def _convert(file: Path, hf_name: str, qtype):
    """One tensor as the numpy array GGUF stores (norms shifted by +1 for llama.cpp's RMSNorm)."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        data = handle.get_tensor(hf_name).float().numpy()
    if hf_name.endswith("norm.weight"):
        data = data + np.float32(1.0)
    if qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def _rope(text) -> tuple[float, float, dict]:
    """(global rope base, sliding-window rope base, global rope parameters) across config versions."""
    params = getattr(text, "rope_parameters", None) or {}
    full = params.get("full_attention", params) if isinstance(params, dict) else {}
    local = params.get("sliding_attention", {}) if isinstance(params, dict) else {}
    scaling = getattr(text, "rope_scaling", None) or {}
    if not full.get("rope_type") and isinstance(scaling, dict):
        full = {**scaling, **full}
    base = float(full.get("rope_theta") or getattr(text, "rope_theta", None) or 1_000_000.0)
    local_base = float(local.get("rope_theta") or getattr(text, "rope_local_base_freq", None) or 10_000.0)
    return base, local_base, full


def _add_metadata(writer, text, quant: str, name: str, base_model: str, tags: tuple) -> None:
    import gguf

    writer.add_type("model")
    writer.add_name(name or "gemma3-finetune")
    if base_model:
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, base_model)
        if "/" in base_model:
            writer.add_base_model_repo_url(0, f"https://huggingface.co/{base_model}")
    if tags:
        writer.add_tags(list(tags))
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    writer.add_context_length(int(text.max_position_embeddings))
    writer.add_embedding_length(int(text.hidden_size))
    writer.add_block_count(int(text.num_hidden_layers))
    writer.add_feed_forward_length(int(text.intermediate_size))
    writer.add_head_count(int(text.num_attention_heads))
    writer.add_head_count_kv(int(text.num_key_value_heads))
    writer.add_layer_norm_rms_eps(float(text.rms_norm_eps))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    base, local_base, full = _rope(text)
    writer.add_rope_freq_base(base)
    writer.add_rope_freq_base_swa(local_base)
    if full.get("rope_type") == "linear" and full.get("factor"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(full["factor"]))
    if getattr(text, "sliding_window", None):
        writer.add_sliding_window(int(text.sliding_window))
    layer_types = getattr(text, "layer_types", None)
    if layer_types:
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _added_tokens(model_dir: Path) -> dict[int, tuple[str, bool]]:
    """id -> (text, special) of the tokenizer's added tokens (tokenizer.json, else tokenizer_config.json)."""
    found: dict[int, tuple[str, bool]] = {}
    try:
        data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        for item in data.get("added_tokens") or []:
            found[int(item["id"])] = (item["content"], bool(item.get("special")))
    except (OSError, json.JSONDecodeError, KeyError, ValueError):
        pass
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        for key, item in (config.get("added_tokens_decoder") or {}).items():
            found.setdefault(int(key), (item["content"], bool(item.get("special"))))
    except (OSError, json.JSONDecodeError, KeyError, ValueError):
        pass
    return found


def _load_vocab(model_dir: Path):
    from gguf.vocab import BpeVocab, LlamaHfVocab, SentencePieceVocab

    if (model_dir / "tokenizer.model").is_file():
        return SentencePieceVocab(model_dir)
    try:
        return BpeVocab(model_dir)  # byte-level BPE (GPT-2 style), like the tiny test model's
    except (FileNotFoundError, ValueError, KeyError):
        pass
    try:
        LlamaHfVocab(model_dir)  # a SentencePiece-style BPE without its tokenizer.model
    except Exception:
        pass
    else:
        raise GarageError("GGUF export needs the base model's SentencePiece tokenizer.model next to the weights "
                          f"(not found in {model_dir.name}): copy it there from the base model and export again.")
    raise GarageError(f"GGUF export could not read the tokenizer in {model_dir.name}: it needs a SentencePiece "
                      "tokenizer.model or a byte-level BPE tokenizer.json.")


def _add_vocab(writer, model_dir: Path, n_vocab: int) -> None:
    import gguf

    vocab = _load_vocab(model_dir)
    tokens, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        tokens.append(text)
        scores.append(float(score))
        types.append(int(kind))
    if len(tokens) > n_vocab:
        raise GarageError(f"The tokenizer has {len(tokens)} tokens but the model only {n_vocab} embeddings.")
    for token_id, (content, special) in _added_tokens(model_dir).items():
        if token_id < len(tokens):
            tokens[token_id] = content.encode("utf-8")
            types[token_id] = int(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    for i in range(len(tokens), n_vocab):  # embedding rows beyond the tokenizer (Gemma 3 pads to 262208)
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(int(gguf.TokenType.UNUSED))
    is_bpe = vocab.tokenizer_model == "gpt2"
    writer.add_tokenizer_model(vocab.tokenizer_model)
    if is_bpe:
        writer.add_tokenizer_pre("default")
    else:
        writer.add_add_space_prefix(False)  # Gemma's SentencePiece model adds no dummy prefix
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=is_bpe, n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:
        writer.add_add_bos_token(True)  # Gemma expects <bos> first
    end_of_turn = next((i for i, t in enumerate(tokens) if t == b"<end_of_turn>"), None)
    if end_of_turn is not None:
        writer.add_eot_token_id(end_of_turn)
