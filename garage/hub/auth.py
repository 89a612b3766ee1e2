"""Whose token pushes, and keeping that token out of every piece of text we write or show.

On a Space the signed-in visitor's OAuth token pushes (``gr.OAuthToken``). Elsewhere
(or on a single-user Space) ``HF_TOKEN`` or a saved ``hf auth login`` acts as the
signed-in user. A token is only ever held in memory: it is never written to disk, a
log, a run folder, a model card or an error message (``garage.secrecy`` masks it in text).
"""

from __future__ import annotations

import hashlib
import os

from garage import paths
from garage.errors import GarageError
from garage.secrecy import saved_token

_whoami_cache: dict[str, str] = {}


def resolve_token(oauth_token=None) -> str | None:
    """The token to push with: the OAuth token of the signed-in visitor, else the local one.

    On a shared Space a visitor who is not signed in gets None: the Space owner's
    ``HF_TOKEN`` must not push on a stranger's behalf.
    """
    if oauth_token is not None:
        token = getattr(oauth_token, "token", oauth_token)
        if isinstance(token, str) and token.strip():
            return token.strip()
    if paths.shared():
        return None
    return saved_token()


def require_token(oauth_token=None) -> str:
    token = resolve_token(oauth_token)
    if token:
        return token
    if paths.shared() and paths.space_sign_in():
        raise GarageError("Sign in with Hugging Face first (the 'Sign in with Hugging Face' button at the top of "
                          "the Publish tab), then push again.")
    if paths.shared():
        raise GarageError("Sign in with Hugging Face is not set up on this Space (hf_oauth: true in its README), "
                          "and its owner's HF_TOKEN never pushes for a visitor: download the files instead (Publish, "
                          "Download in the browser).")
    raise GarageError("Not signed in to Hugging Face: set HF_TOKEN to a token with write access "
                      "(https://huggingface.co/settings/tokens) or run `hf auth login`, then push again.")


def endpoint() -> str:
    """The Hub's address: HF_ENDPOINT read now (huggingface_hub reads it only at import)."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def check_online(doing: str = "Pushing", instead: str = "download the files instead") -> None:
    """Refuse ``doing`` (it needs the Hub) in offline mode, saying what to do ``instead``."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise GarageError(f"{doing} needs the Hugging Face Hub, but offline mode is on (HF_HUB_OFFLINE=1). Unset "
                          f"HF_HUB_OFFLINE and try again, or {instead}.")


def username(token: str) -> str | None:
    """The Hub user name a token belongs to (None when the Hub cannot tell us); cached per token in memory."""
    key = hashlib.sha256(token.encode()).hexdigest()
    if key in _whoami_cache:
        return _whoami_cache[key]
    try:
        check_online()
        from huggingface_hub import HfApi

        name = HfApi(endpoint=endpoint(), token=token).whoami().get("name")
    except Exception:
        return None
    if name:
        _whoami_cache[key] = name
    return name
