"""Batch shaping's choice of passes: fewer when memory allows, never a different effective batch."""

from __future__ import annotations

from types import SimpleNamespace

from garage.train.shaping import Shape, bytes_per_token, shape_passes

GIB = 2**30
# Gemma 3 1B's real shape (garage.offline_models.REAL_SHAPES)
GEMMA_1B = SimpleNamespace(hidden_size=1152, num_hidden_layers=26, intermediate_size=6912, num_attention_heads=4,
                           head_dim=256, vocab_size=262144)


def test_plenty_of_memory_makes_one_pass_per_step():
    assert shape_passes(2, 4, 1024, 100_000, 80 * GIB) == Shape(8, 1)


def test_no_room_keeps_the_configured_passes():
    assert shape_passes(2, 4, 1024, 100_000, 1) == Shape(2, 4)


def test_the_largest_pass_that_fits_divides_the_step():
    # a pass of 6 rows fits (6 x 1000 x 1000 bytes = 6 MB <= half of 13 MB), one of 12 rows does not
    assert shape_passes(1, 12, 1000, 1000, 13_000_000) == Shape(6, 2)
    for free in (0, 10**6, 10**7, 10**8, 10**12):
        for rows, passes in ((1, 12), (2, 4), (3, 5), (4, 1)):
            shaped = shape_passes(rows, passes, 512, 50_000, free)
            assert shaped.rows_per_step == rows * passes and passes % shaped.passes_per_step == 0


def test_the_memory_bound_counts_logits_and_checkpointing():
    fused = bytes_per_token(GEMMA_1B, 2, gradient_checkpointing=True, fused_loss=True)
    unfused = bytes_per_token(GEMMA_1B, 2, gradient_checkpointing=True, fused_loss=False)
    without_checkpoints = bytes_per_token(GEMMA_1B, 2, gradient_checkpointing=False, fused_loss=True)
    assert 4 * 262144 < fused < without_checkpoints and 12 * 262144 < unfused
    # a pass took 0.35 MB a token on an H100 (bench/README.md): the bound is above it
    assert fused > 0.35 * 2**20
    # on an 80 GB card with ~75 GB free after loading, the default 2 x 4 at 1024 tokens runs as one pass of 8
    assert shape_passes(2, 4, 1024, fused, 75 * GIB) == Shape(8, 1)
    # on a 16 GB card with ~12 GB free it runs as two passes of 4, without the fused loss as configured
    assert shape_passes(2, 4, 1024, fused, 12 * GIB) == Shape(4, 2)
    assert shape_passes(2, 4, 1024, unfused, 12 * GIB) == Shape(2, 4)


def test_a_full_fine_tune_leaves_room_for_its_gradients_and_optimizer():
    import torch

    from garage.train.shaping import training_state_bytes

    layer = torch.nn.Linear(10, 10)
    assert training_state_bytes(layer) == 12 * 110  # a gradient and two AdamW moments per trainable weight
    layer.weight.requires_grad_(False)  # frozen (a LoRA's base): nothing more to hold
    assert training_state_bytes(layer) == 12 * 10


def test_gemma_3n_keeps_four_hidden_states_a_layer():
    three_n = SimpleNamespace(**{**vars(GEMMA_1B), "altup_num_inputs": 4, "intermediate_size": [6912] * 26})
    assert bytes_per_token(three_n, 2, True, True) > bytes_per_token(GEMMA_1B, 2, True, True) + 2 * 3 * 26 * 1152
