"""Batch shaping: the same optimizer steps in fewer, larger forward/backward passes.

What training sees is the effective batch, ``per_device_train_batch_size x gradient_accumulation_steps`` rows
per optimizer step; how those rows are split into passes is ours to choose. A pass of a small model costs
mostly fixed overhead (kernel launches, Python): on an H100 a Gemma 3 1B LoRA pass over 2k tokens took
0.3-0.7 s, of which the arithmetic is about 7 ms (bench/README.md). So the fewest passes that fit in memory
are the fastest, and the run stays the same run: the sampler hands out the same rows per optimizer step
either way (consecutive rows of one permutation), and transformers normalises the loss over the whole
accumulation window (``num_items_in_batch``), so one pass of 8 rows and four passes of 2 give the same loss
and gradient up to rounding. Only supervised training is shaped: GRPO's batch counts completions of groups.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from garage import device

MEMORY_SHARE = 0.5  # a shaped pass may take this share of the memory free after loading (worst-case lengths)


@dataclass(frozen=True)
class Shape:
    rows_per_pass: int
    passes_per_step: int

    @property
    def rows_per_step(self) -> int:
        return self.rows_per_pass * self.passes_per_step


def bytes_per_token(model_config, activation_bytes: int, gradient_checkpointing: bool, fused_loss: bool) -> int:
    """A generous bound on the memory one token of a pass takes while it trains.

    With gradient checkpointing one hidden state per layer is kept and one layer's activations at a time are
    rebuilt; without it every layer keeps its activations. Logits: a fused loss (Unsloth's on a GPU) works
    through them in chunks, counted as one float32 row per token; otherwise the 16-bit logits, their float32
    copy and its gradient are all held (12 bytes per vocabulary entry, 3 MB a token for Gemma's 262k).
    Measured on an H100 (Gemma 3 1B LoRA, 2k tokens a pass), the whole of a pass took 0.35 MB a token, a
    quarter of this bound with the fused loss.
    """
    text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    hidden = text.hidden_size
    layers = text.num_hidden_layers
    streams = getattr(text, "altup_num_inputs", None) or 1  # Gemma 3n carries 4 hidden states between layers
    inner = _largest(getattr(text, "intermediate_size", None) or 4 * hidden)
    heads = text.num_attention_heads * (getattr(text, "head_dim", None) or hidden // text.num_attention_heads)
    one_layer = 12 * streams * hidden + 4 * inner + 4 * heads
    kept = layers * streams * hidden + one_layer if gradient_checkpointing else layers * one_layer
    return activation_bytes * kept + (4 if fused_loss else 12) * text.vocab_size


def _largest(size) -> int:
    return max(size) if isinstance(size, (list, tuple)) else int(size)


def shape_passes(rows_per_pass: int, passes_per_step: int, max_length: int, token_bytes: int,
                 free_bytes: int) -> Shape:
    """The fewest passes per step (a divisor of ``passes_per_step``, so the effective batch is unchanged)
    whose pass of ``max_length``-token rows fits in ``MEMORY_SHARE`` of ``free_bytes``."""
    budget = MEMORY_SHARE * free_bytes
    for passes in _divisors(passes_per_step):
        rows = rows_per_pass * passes_per_step // passes
        if passes == passes_per_step or rows * max_length * token_bytes <= budget:
            return Shape(rows, passes)
    raise AssertionError("unreachable: the configured shape is always a candidate")


def _divisors(number: int) -> list[int]:
    """Divisors of ``number``, smallest first."""
    small = [d for d in range(1, math.isqrt(number) + 1) if number % d == 0]
    return sorted(set(small + [number // d for d in small]))


def free_memory_bytes() -> int:
    """Memory free for activations now: the GPU's when training on one, else the machine's available RAM."""
    import torch  # on the worker only, like the training that asks

    if device.has_gpu():
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def world_size() -> int:
    """How many processes train this run together (torch.distributed's WORLD_SIZE, set by accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def split(shape: Shape, count: int) -> Shape:
    """One process's share of a step when ``count`` processes train it: the passes divided among them, else the
    rows of a pass, so a step holds the same rows (and the loss curve is one process's, up to rounding). When
    neither divides, each process takes the whole configured shape: a step then holds ``count`` times the rows."""
    if count <= 1:
        return shape
    if shape.passes_per_step % count == 0:
        return Shape(shape.rows_per_pass, shape.passes_per_step // count)
    if shape.rows_per_pass % count == 0:
        return Shape(shape.rows_per_pass // count, shape.passes_per_step)
    return shape


def plan_shape(cfg, model, fused_loss: bool) -> Shape:
    """The passes one process runs ``cfg``'s steps in (see the module's note; ``split`` when several processes
    share them); those configured when ``cfg.batch_shaping`` is off. ``fused_loss``: the loss never holds the
    whole logits (Unsloth on a GPU)."""
    configured = split(Shape(cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps), world_size())
    if not cfg.batch_shaping or configured.passes_per_step == 1:
        return configured
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    activation_bytes = 4 if weight is not None and weight.element_size() >= 4 else 2
    checkpointing = bool(getattr(model, "is_gradient_checkpointing", cfg.gradient_checkpointing))
    token_bytes = bytes_per_token(model.config, activation_bytes, checkpointing, fused_loss)
    free = free_memory_bytes() - training_state_bytes(model)
    return shape_passes(configured.rows_per_pass, configured.passes_per_step, cfg.max_seq_length, token_bytes,
                        max(0, free))


def training_state_bytes(model) -> int:
    """What the trainable parameters will still take once training starts: a gradient and AdamW's two moments
    each, counted as float32 (a full fine-tune's are most of its memory; a LoRA's are small)."""
    return 12 * sum(p.numel() for p in model.parameters() if p.requires_grad)
