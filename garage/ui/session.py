"""Who is asking, and turning library errors into page errors."""

from __future__ import annotations

import functools
import inspect
import logging
import traceback

import gradio as gr

from garage import paths
from garage.errors import GarageError, unexpected
from garage.secrecy import scrub_secrets
from garage.ui import identity

log = logging.getLogger("garage.ui")

def user_of(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> str:
    """The workspace owner for this request.

    Signed in: the Hugging Face user name. On a laptop or a private box (not a Space)
    everything belongs to the one local user, so a reload or restart finds it all.
    Anonymous on a shared Space: the visitor the server vouched for (``garage.ui.identity``:
    its signed cookie, read by the app's middleware into a header of its own), so a reload
    finds the same work and nobody can pose as another.
    """
    if not paths.shared():
        return "local"  # also once signed in (Gradio signs in locally too): the work so far stays the user's
    if profile is not None and getattr(profile, "username", None):
        return f"hf-{profile.username}"
    visitor = identity.visitor_of(request)
    if visitor:
        return f"anon-{visitor}"
    # no HTTP request behind this call (the app's own calls in-process): never over HTTP, where a client chooses it
    session = getattr(request, "session_hash", None) or "anonymous"
    return f"anon-{session}"


def _page_error(func, exc: Exception, args, kwargs) -> gr.Error:
    """A GarageError's message verbatim; a bug logged (its trace, no secrets) and said in one line."""
    if isinstance(exc, GarageError):
        return gr.Error(str(exc), print_exception=False)
    log.error("unexpected error in %s\n%s", func.__name__,
              scrub_secrets(traceback.format_exc(), *secret_arguments(func, args, kwargs)))
    return gr.Error(unexpected(exc), print_exception=False)


def user_errors(func):
    """Show a GarageError as a gr.Error (its message verbatim); log anything else, show one line. Streaming
    handlers (generators) too: an error while they stream is said the same way."""
    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def streaming(*args, **kwargs):
            try:
                yield from func(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - said to the page, a bug's trace logged
                raise _page_error(func, exc, args, kwargs) from None

        return streaming

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - said to the page, a bug's trace logged
            raise _page_error(func, exc, args, kwargs) from None

    return wrapper


def said(exc: BaseException, *pasted: str | None) -> str:
    """What a person reads about ``exc``, with no key in it."""
    return scrub_secrets(str(exc) if isinstance(exc, GarageError) else unexpected(exc), *pasted)


def failure_stays(verb: str, outputs: int, others=None, explain=said, status: int = -1, headline: str = ""):
    """A button handler whose failure also stays on the page: besides the pop-up (which fades), one output, a
    status line (the last unless ``status`` says which), says what failed and what to do; the other outputs keep
    what they show (``others(text)``: what they become instead, in order, given the reason). ``explain(exc, *pasted
    keys)``: the words (default: the error's message); ``headline``: the line's bold start (default "<verb>
    failed."). The one way the tabs keep a failure's reason on the page; for streaming handlers too."""

    def wrap(func):
        checked = user_errors(func)  # logs a bug's trace, turns the error into a pop-up

        def shown(err: gr.Error, args, kwargs):
            # user_errors raises ``from None``: the original error is still the context
            text = explain(err.__context__ or GarageError(err.message), *secret_arguments(func, args, kwargs))
            gr.Warning(text, title=f"{verb} failed")
            rest = list(others(text)) if others else [gr.skip()] * (outputs - 1)
            rest.insert(status % outputs, f"⚠️ **{headline or f'{verb} failed.'}** {text}")
            return tuple(rest)

        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def streaming(*args, **kwargs):
                try:
                    yield from checked(*args, **kwargs)
                except gr.Error as err:
                    yield shown(err, args, kwargs)

            return streaming

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return checked(*args, **kwargs)
            except gr.Error as err:
                return shown(err, args, kwargs)

        return wrapper

    return wrap


SECRET_PARAMETERS = ("api_key", "oauth_token", "token")  # handler parameters that hold a key or a Hub token


def secret_arguments(func, args, kwargs) -> list[str]:
    """What a handler was given for parameters that hold secrets (a pasted API key, a sign-in's token)."""
    try:
        bound = inspect.signature(func).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return []
    values = [bound.get(name) for name in SECRET_PARAMETERS]
    return [str(getattr(value, "token", value)) for value in values if value]  # gr.OAuthToken holds .token
