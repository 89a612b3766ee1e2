"""Who is asking, and turning library errors into page errors."""

from __future__ import annotations

import functools
import logging
import os

import gradio as gr

from garage.errors import GarageError

log = logging.getLogger("garage.ui")


def on_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def user_of(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> str:
    """The workspace owner for this request.

    Signed in: the Hugging Face user name. On a laptop or a private box (not a Space)
    everything belongs to the one local user, so a reload or restart finds it all.
    Anonymous on a shared Space: this page session only (sign in to keep your work).
    """
    if profile is not None and getattr(profile, "username", None):
        return f"hf-{profile.username}"
    if not on_space() or os.environ.get("GARAGE_SINGLE_USER") == "1":
        return "local"
    session = getattr(request, "session_hash", None) or "anonymous"
    return f"anon-{session}"


def user_errors(func):
    """Show a GarageError as a gr.Error (its message verbatim); log anything else, show one line."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except gr.Error:
            raise
        except GarageError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # a bug: full trace to the server log, one line to the page
            log.exception("unexpected error in %s", func.__name__)
            raise gr.Error(f"Unexpected error ({type(exc).__name__}). The server log has the details.",
                           print_exception=False) from None

    return wrapper
