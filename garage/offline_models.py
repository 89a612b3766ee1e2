"""The tiny Gemma 3: a real ``Gemma3ForCausalLM`` small enough to train on a laptop CPU.

It is the offline default model and the model of every CPU test. It has the real
Gemma 3 architecture (sliding + global attention, RMSNorm, GeGLU), a small
byte-level BPE tokenizer with Gemma's special tokens, and the real Gemma 3 chat
template, so every code path (templates, masking, LoRA targets, export) is the one
a real Gemma takes. Weights are random and seeded: the build is deterministic and
needs no network. Address it anywhere as ``tiny-gemma-3``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from garage import paths

TINY_NAME = "tiny-gemma-3"
BUILD_VERSION = "4"  # bump when the recipe changes, so cached copies are rebuilt

# Gemma 3's chat template, as shipped with google/gemma-3-*-it (text part).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = \"\" -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}"
    "{%- set role = \"model\" -%}"
    "{%- else -%}"
    "{%- set role = message['role'] -%}"
    "{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}"
    "{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}"
    "{{ item['text'] | trim }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}"
    "{{ raise_exception(\"Invalid content type\") }}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{'<start_of_turn>model\n'}}"
    "{%- endif -%}"
)

# Gemma's special tokens, at the same ids as in Gemma's own vocabulary where they fit.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                  "<start_of_image>", "<end_of_image>"]

# Shape of the model. Sized so LoRA memorises a handful of Q/A pairs in well under a
# minute on two CPU cores (a 95k-parameter, 2 x 64 model could not; full tuning could).
TINY_CONFIG = dict(
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=48,
    max_position_embeddings=4096,
    sliding_window=128,
    query_pre_attn_scalar=48,
    rope_theta=10000.0,
)
VOCAB_SIZE = 1024

# A fixed corpus for the BPE merges: the template's own words, digits and common English.
_CORPUS = """
user model system assistant question answer the a an of to in and is it that for on with as was
what who where when why how which capital city country river mountain number year day name
Paris France Rome Italy Berlin Germany Madrid Spain London England Tokyo Japan colour color blue red
green sky grass sun moon water fire earth planet star ocean sea book write read speak learn teach
The answer is. Yes. No. I do not know. Please explain. Thank you. Hello! How are you today?
0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 1000 plus minus times divided equals #### step reasoning
Gemma Garage fine-tune fine tuning dataset training model loss learning rate adapter LoRA
"""


def build_tiny_gemma(target: str | Path | None = None, *, force: bool = False) -> Path:
    """Build (or reuse) the tiny Gemma 3 folder and return its path.

    The default location is ``<GARAGE_HOME>/models/tiny-gemma-3``. The build is
    seeded and offline; a finished folder is reused unless ``force`` is set.
    """
    target = Path(target) if target else paths.models_dir() / TINY_NAME
    marker = target / "garage_build.json"
    if not force and marker.exists() and json.loads(marker.read_text()).get("version") == BUILD_VERSION:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-gemma-", dir=target.parent))
    staging.chmod(0o755)
    try:
        tokenizer = _build_tokenizer()
        tokenizer.save_pretrained(staging)
        model = _build_model(tokenizer)
        model.save_pretrained(staging)
        (staging / "garage_build.json").write_text(json.dumps({
            "version": BUILD_VERSION, "name": TINY_NAME,
            "note": "Random-weight test model built by garage.offline_models; not a real Gemma.",
            "parameters": sum(p.numel() for p in model.parameters()),
        }))
        _swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _swap_into_place(staging: Path, target: Path) -> None:
    """Move a finished build to ``target``; tolerate another process finishing first."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if not (target / "garage_build.json").exists():
            raise


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        pad_token="<pad>", mask_token="<mask>", additional_special_tokens=SPECIAL_TOKENS[5:],
        padding_side="right", model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    return tokenizer


def _build_model(tokenizer):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_of_turn], tie_word_embeddings=True,
        torch_dtype="float32", **TINY_CONFIG,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).to(torch.float32)
    # The output head is tied to the embeddings and sits behind an RMSNorm, so with the default
    # 0.02 init the logits cannot exceed ~4 and a frozen-base LoRA could never push the loss below
    # ~2.7. Real Gemma embeddings are larger; this std gives LoRA the headroom to memorise.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 0.1)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_of_turn], do_sample=True,
        temperature=1.0, top_p=0.95, top_k=64,
    )
    return model


# Real Gemma 3 shapes, for benchmarks with random weights (the cost of a step does not depend on them).
REAL_SHAPES = {
    "gemma-3-270m": dict(hidden_size=640, num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
                         head_dim=256, intermediate_size=2048, vocab_size=262144, sliding_window=512,
                         max_position_embeddings=32768, query_pre_attn_scalar=256, rope_theta=1_000_000.0,
                         rms_norm_eps=1e-6),
    "gemma-3-1b": dict(hidden_size=1152, num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
                       head_dim=256, intermediate_size=6912, vocab_size=262144, sliding_window=512,
                       max_position_embeddings=32768, query_pre_attn_scalar=256, rope_theta=1_000_000.0,
                       rms_norm_eps=1e-6),
}
RANDOM_PREFIX = "random-"  # "random-gemma-3-1b" names a random-weight model of that real shape


def build_random_gemma(shape: str, target: str | Path | None = None, *, device: str | None = None) -> Path:
    """A Gemma 3 of a real shape (``REAL_SHAPES``) with seeded random bf16 weights and the tiny tokenizer.

    For throughput and memory benchmarks only: its 262k-way output head and layer sizes are the
    real ones, so a step costs what a real step costs.
    """
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    if shape not in REAL_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(REAL_SHAPES)}")
    target = Path(target) if target else paths.models_dir() / f"{RANDOM_PREFIX}{shape}"
    if (target / "garage_build.json").exists():
        return target
    tokenizer = _build_tokenizer()
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    config = Gemma3TextConfig(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=[tokenizer.eos_token_id, end_of_turn], tie_word_embeddings=True,
                              torch_dtype="bfloat16", **REAL_SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")):
        model = Gemma3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=[tokenizer.eos_token_id, end_of_turn])
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    (target / "garage_build.json").write_text(json.dumps({
        "name": f"{RANDOM_PREFIX}{shape}", "note": "Random weights of a real Gemma 3 shape, for benchmarks.",
        "parameters": sum(p.numel() for p in model.parameters())}))
    return target


def folder_fingerprint(folder: str | Path) -> str:
    """A short hash of a model folder's files (for determinism checks and caching)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*")):
        if path.is_file() and path.name != "garage_build.json":
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
