"""Does a chat template prompt a reply the way it renders past replies?

Training renders whole conversations (past replies); chat, evaluation and exported models prompt with the
template's generation prompt. Where the two differ, the tuned model is asked to answer after text it never
trained after, and the loss curve does not show it: Gemma 4 26B-A4B and 31B open a reply with an empty
thought channel (``<|channel>thought\\n<channel|>``) that their own template leaves out of past replies.
"""

from __future__ import annotations

PROBE = [{"role": "user", "content": "Hi"}]
REPLY = "GARAGE-REPLY-7f3a"  # stands for a past reply's text; the template renders what surrounds it


def reply_openings(tokenizer) -> tuple[str, str] | None:
    """(what the generation prompt opens a reply with, what opens a past reply) or None if unreadable."""
    try:
        user = tokenizer.apply_chat_template(PROBE, tokenize=False)
        prompt = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
        past = tokenizer.apply_chat_template(PROBE + [{"role": "assistant", "content": REPLY}], tokenize=False)
    except Exception:  # a template that cannot render this probe says nothing either way
        return None
    if not (isinstance(user, str) and prompt.startswith(user) and past.startswith(user) and REPLY in past):
        return None
    return prompt[len(user):], past[len(user):past.index(REPLY)]


def past_reply_opening(tokenizer) -> str | None:
    """The text right before a reply in a rendered conversation (the response part of responses-only masking)."""
    openings = reply_openings(tokenizer)
    return openings[1] if openings and openings[1].strip() else None


def turn_opener_id(tokenizer) -> int | None:
    """The special token that opens every turn (``<|im_start|>``, ``<start_of_turn>``), if the template has one:
    it is structure, never answer, so training never learns it."""
    opening = past_reply_opening(tokenizer)
    text_tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a multimodal processor's text tokenizer
    try:
        ids = text_tokenizer(opening, add_special_tokens=False)["input_ids"] if opening else []
    except Exception:
        return None
    special = {i for i, t in (getattr(text_tokenizer, "added_tokens_decoder", None) or {}).items() if t.special}
    return ids[0] if ids and ids[0] in special else None


def opening_gap(tokenizer) -> tuple[str, str] | None:
    """(what prompts a reply, what opens a past reply) when chat asks after text that training never put there.
    None when they agree, when past replies only add text (it is trained as part of the answer, so the model
    learns to write it: Qwen3's empty think block), or when the template cannot be probed."""
    openings = reply_openings(tokenizer)
    if not openings or openings[1].startswith(openings[0]):
        return None
    return openings


def opens_with_bos(tokenizer) -> bool:
    """Whether the template starts a conversation with the BOS token (Gemma loses much without it)."""
    bos = getattr(tokenizer, "bos_token", None)
    try:
        return bool(bos) and tokenizer.apply_chat_template(PROBE, tokenize=False).startswith(bos)
    except Exception:
        return False


def describe_gap(name: str, gap: tuple[str, str]) -> str:
    prompt, past = gap
    return (f"{name}'s chat template prompts a reply after {prompt!r} but writes past replies after {past!r}, so "
            "training and chat see different text before the answer: the tuned model may answer worse in chat "
            "than its loss suggests.")
