"""Who is asking, and turning library errors into page errors."""

from __future__ import annotations

import functools
import inspect
import logging
import re
import traceback
from http.cookies import CookieError, SimpleCookie

import gradio as gr

from garage import paths
from garage.errors import GarageError, unexpected
from garage.keys import scrub_secrets

log = logging.getLogger("garage.ui")

ANON_COOKIE = "garage_anon"
_ANON_ID = re.compile(r"[0-9a-f-]{16,64}")
# Gives an anonymous browser a random, persistent id the first time it opens the page.
ANON_COOKIE_JS = f"""<script>
(() => {{
  if (document.cookie.split('; ').some(c => c.startsWith('{ANON_COOKIE}='))) return;
  const id = (crypto.randomUUID ? crypto.randomUUID()
              : Array.from(crypto.getRandomValues(new Uint8Array(16)), b => b.toString(16).padStart(2, '0')).join(''));
  document.cookie = '{ANON_COOKIE}=' + id + '; path=/; max-age=31536000; SameSite=Lax';
}})();
</script>"""


def user_of(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> str:
    """The workspace owner for this request.

    Signed in: the Hugging Face user name. On a laptop or a private box (not a Space)
    everything belongs to the one local user, so a reload or restart finds it all.
    Anonymous on a shared Space: the browser's random id (a cookie set by the page, see
    ``ANON_COOKIE_JS``), so a reload finds the same work; API clients without it get
    their session only.
    """
    if not paths.shared():
        return "local"  # also once signed in (Gradio signs in locally too): the work so far stays the user's
    if profile is not None and getattr(profile, "username", None):
        return f"hf-{profile.username}"
    browser = _cookie(request, ANON_COOKIE)
    if browser and _ANON_ID.fullmatch(browser):
        return f"anon-{browser}"
    session = getattr(request, "session_hash", None) or "anonymous"
    return f"anon-{session}"


def _cookie(request: gr.Request | None, name: str) -> str | None:
    header = ""
    try:
        header = request.headers.get("cookie", "") if request is not None else ""
    except Exception:  # a request object without headers (API, tests)
        return None
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    return jar[name].value if name in jar else None


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
        except Exception as exc:  # a bug: full trace to the server log (no secrets in it), one line to the page
            log.error("unexpected error in %s\n%s", func.__name__,
                      scrub_secrets(traceback.format_exc(), *secret_arguments(func, args, kwargs)))
            raise gr.Error(unexpected(exc), print_exception=False) from None

    return wrapper


SECRET_PARAMETERS = ("api_key", "oauth_token", "token")  # handler parameters that hold a key or a Hub token


def secret_arguments(func, args, kwargs) -> list[str]:
    """What a handler was given for parameters that hold secrets (a pasted API key, a sign-in's token)."""
    try:
        bound = inspect.signature(func).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return []
    values = [bound.get(name) for name in SECRET_PARAMETERS]
    return [str(getattr(value, "token", value)) for value in values if value]  # gr.OAuthToken holds .token
