"""Prompts in one generate() call: left-padded chat-template batches, and the ids that end a turn.

Shared by the chat engine (base and tuned side by side) and the local-model backend of Documents -> Q/A.
"""

from __future__ import annotations

from garage.errors import GarageError

END_OF_TURN = ("<end_of_turn>", "<turn|>", "<|im_end|>", "<|eot_id|>")  # Gemma 2/3/3n, Gemma 4, ChatML, Llama 3


def left_padded_batch(tokenizer, conversations: list[list[dict]], device) -> dict:
    """Tokenize one conversation per row with the chat template, left-padded to a common length."""
    import torch

    encoded = []
    for messages in conversations:
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"]
        except Exception as exc:
            raise GarageError(f"This conversation cannot be formatted with the model's chat template: {exc}")
        encoded.append(list(ids))
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = [[pad] * (width - len(ids)) + ids for ids in encoded]
    mask = [[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded]
    return {"input_ids": torch.tensor(input_ids, device=device), "attention_mask": torch.tensor(mask, device=device)}


def eos_ids(model, tokenizer) -> set[int]:
    """Every id that ends a turn: the generation config's, the tokenizer's, and the template's end-of-turn
    marker (a saved config can lose <end_of_turn>, and the model would then talk past its answer)."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
    ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[marker] for marker in END_OF_TURN if marker in vocab)
    return {int(i) for i in ids if i is not None}
