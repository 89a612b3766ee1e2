"""Whose LLM API keys a call may spend: the server's own (GEMINI_API_KEY, OPENAI_API_KEY, ...) or the caller's.

On a laptop, a private machine or a single-user Space the person at the keyboard owns the server's keys. On a
shared Space they are the Space owner's (SPACE_AUTHOR_NAME, or the names in GARAGE_KEY_USERS for a Space owned by
an organisation): a visitor pastes a key of their own (Augment, Curate), unless the owner shares theirs with
GARAGE_SHARE_SERVER_KEYS=1; and a shared key only ever goes to the provider's own endpoint, never to an address a
visitor typed (which would hand the key to whoever runs that address).
"""

from __future__ import annotations

import os

from garage import paths
from garage.errors import GarageError
from garage.secrecy import SERVER_KEYS


def key_users() -> set[str]:
    """Signed-in names (as garage.ui.session gives them: hf-<user>) that may spend the server's keys."""
    names = [os.environ.get("SPACE_AUTHOR_NAME", "")] + os.environ.get("GARAGE_KEY_USERS", "").split(",")
    return {f"hf-{name.strip()}" for name in names if name.strip()}


def may_use_server_keys(owner: str, base_url: str = "") -> bool:
    if not paths.shared() or owner in key_users():
        return True
    return os.environ.get("GARAGE_SHARE_SERVER_KEYS") == "1" and not (base_url or "").strip()


PASTE = "Paste your own key (used for this call only, never stored)"


def check_server_key_use(owner: str, backend: str, base_url: str = "", pasted_key: str | None = None, *,
                         purpose: str, instead: str = PASTE) -> None:
    """Raise a GarageError saying what to do when ``owner`` would spend a server key they may not use.
    ``purpose``: what needs the key ("Generating Q/A"); ``instead``: what the caller can do about it."""
    server_key = any(os.environ.get(name, "").strip() for name in SERVER_KEYS.get(backend, ()))
    if not server_key or (pasted_key or "").strip() or may_use_server_keys(owner, base_url):
        return  # no server key would be spent
    if os.environ.get("GARAGE_SHARE_SERVER_KEYS") == "1":  # shared, but not with an address the caller chose
        clear = ", or clear the base URL" if backend == "gemini" else ""  # openai always names an address
        raise GarageError(f"{purpose} would send this Space's API key to {base_url.strip()}, and the Space sends "
                          f"it only to the provider's own endpoint. {instead}{clear}.")
    raise GarageError(f"{purpose} would spend this shared Space's API key, which its owner keeps for themselves. "
                      f"{instead}, or run Gemma Garage on your own machine or a duplicate of this Space. The "
                      "Space's owner can share the key with GARAGE_SHARE_SERVER_KEYS=1.")
