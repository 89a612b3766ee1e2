"""What is secret here, and keeping it out of every piece of text we write or show.

The secrets: the server's LLM keys (GEMINI_API_KEY, GOOGLE_API_KEY, OPENAI_API_KEY) and its Weights & Biases key
(WANDB_API_KEY), keys a person pastes for
one call, and Hugging Face tokens (HF_TOKEN, a saved ``hf auth login``, a visitor's OAuth token). They are only
ever held in memory; logs, run folders, model cards, job commands and error messages get them masked.
"""

from __future__ import annotations

import os
import re

SERVER_KEYS = {"gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "openai": ("OPENAI_API_KEY",),
               "wandb": ("WANDB_API_KEY",)}  # the experiment tracker's (report_to: wandb), kept as the LLM keys are
MIN_SECRET = 8  # real keys are far longer; a placeholder (OPENAI_API_KEY=EMPTY for a local server) is no secret
# Hugging Face user and OAuth tokens look like hf_<34 letters and digits>, hf_oauth_<...> (identifiers such
# as hf_hub_download do not match).
_TOKEN_LIKE = re.compile(r"hf_(?:oauth_)?[A-Za-z0-9]{30,}")
_MASK = "hf_***"


def saved_token() -> str | None:
    """HF_TOKEN or the token of ``hf auth login`` (huggingface_hub's own lookup)."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return os.environ.get("HF_TOKEN") or None
    return get_token() or None


def scrub_tokens(text: object, *tokens: str | None) -> str:
    """``text`` with the given tokens, and anything that looks like an HF token, masked."""
    out = str(text)
    for token in tokens:
        if token and len(token) >= 4:
            out = out.replace(token, _MASK)
    return _TOKEN_LIKE.sub(_MASK, out)


def scrub_secrets(text: str, *pasted: str | None) -> str:
    """``text`` with the server's LLM keys, any key a person ``pasted`` and every Hub token (the server's, a saved
    login's, anything shaped like one) masked."""
    names = [n for group in SERVER_KEYS.values() for n in group]
    given = (str(s).strip() for s in [*pasted, *map(os.environ.get, names)] if s)
    secrets = {secret for secret in given if len(secret) >= MIN_SECRET}
    for secret in sorted(secrets, key=len, reverse=True):  # a key inside a longer one leaves no tail showing
        text = text.replace(secret, "***")
    return scrub_tokens(text, saved_token())
