"""Who an anonymous visitor is: an id the server gives, in a signed, HttpOnly cookie that no page script can read
or set and no client can forge.

The first response to a browser (or API client) without a valid cookie sets ``garage_visitor`` to a random id and
its HMAC-SHA256 under the app's secret; the request itself already goes on as that visitor, so the page's first
events have theirs. A value whose signature does not check (made up, edited, signed by another app) is ignored:
that client is a new visitor, who sees nothing of anyone's. The app learns the visitor from a header only this
middleware sets (``x-garage-visitor``), never from what the client sent. gradio_client keeps the cookie of its
first response, so an API client stays one visitor across its calls.

The secret is ``GARAGE_COOKIE_SECRET``, else 32 random bytes in ``<GARAGE_HOME>/secrets/cookie.key`` (made once,
mode 0600: on a Space with persistent storage it outlives restarts, so visitors keep their work). It is never
logged or shown. Cookies over HTTPS (a Space, inside the Hub's page) are ``SameSite=None; Secure``, the only kind
a browser sends from an iframe; over plain HTTP ``SameSite=Lax``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from garage import files, paths

COOKIE = "garage_visitor"
VISITOR_HEADER = b"x-garage-visitor"  # set by the middleware on every request, never taken from a client
MAX_AGE = 365 * 24 * 3600
_secret: bytes | None = None


def secret() -> bytes:
    global _secret
    if _secret is None:
        given = os.environ.get("GARAGE_COOKIE_SECRET", "").strip()
        _secret = given.encode("utf-8") if given else _stored_secret()
    return _secret


def _stored_secret() -> bytes:
    path = paths.home() / "secrets" / "cookie.key"
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        files.write_atomic(path, secrets.token_hex(32))
        os.chmod(path, 0o600)
        return bytes.fromhex(path.read_text(encoding="ascii").strip())


def _mac(visitor: str) -> str:
    return hmac.new(secret(), visitor.encode("ascii"), hashlib.sha256).hexdigest()


def sign(visitor: str) -> str:
    return f"{visitor}.{_mac(visitor)}"


def verified(value: str | None) -> str | None:
    """The visitor id a cookie value carries, when its signature is this app's; else None."""
    visitor, _, signature = str(value or "").rpartition(".")
    if not visitor or not visitor.isalnum() or not visitor.isascii():
        return None
    return visitor if hmac.compare_digest(signature, _mac(visitor)) else None


def sent_visitor(headers: list) -> str | None:
    """The first visitor id among the request's ``garage_visitor`` cookies (in any of its Cookie headers) whose
    signature checks. Read by hand: the standard library's parser gives up on a whole header for one cookie it does
    not like (a space in another site's value), which would cut a visitor off from their work."""
    for name, raw in headers:
        if name != b"cookie":
            continue
        for part in raw.decode("latin-1").split(";"):
            key, _, value = part.strip().partition("=")
            if key == COOKIE:
                visitor = verified(value.strip().strip('"'))
                if visitor:
                    return visitor
    return None


class VisitorCookie:
    """ASGI middleware: every HTTP request reaches the app with its visitor in the ``x-garage-visitor`` header, set
    here only (one a client sends is dropped): the verified id of its cookie, else a new id, then also set as the
    cookie on the response. The app reads the header, never the cookie nor anything the client chose (a queue's
    session hash). (Pure ASGI, not Starlette's BaseHTTPMiddleware: Gradio streams its event responses.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = [h for h in scope.get("headers") or [] if h[0] != VISITOR_HEADER]
        visitor = sent_visitor(headers)
        fresh = visitor is None
        if fresh:
            visitor = secrets.token_hex(16)
        scope = {**scope, "headers": [*headers, (VISITOR_HEADER, visitor.encode("ascii"))]}
        if not fresh:
            return await self.app(scope, receive, send)
        secure = scope.get("scheme") == "https" or dict(headers).get(b"x-forwarded-proto", b"") == b"https"
        flags = "SameSite=None; Secure" if secure else "SameSite=Lax"
        set_cookie = f"{COOKIE}={sign(visitor)}; Path=/; Max-Age={MAX_AGE}; HttpOnly; {flags}".encode()

        async def sending(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", set_cookie)]}
            await send(message)

        return await self.app(scope, receive, sending)


def visitor_of(request) -> str | None:
    """The visitor the middleware vouched for on this request (its header), or None outside an HTTP request."""
    try:
        value = request.headers.get(VISITOR_HEADER.decode(), "") if request is not None else ""
    except Exception:  # a request object without headers (in-process calls, tests)
        return None
    return value if value and value.isalnum() and value.isascii() and len(value) <= 64 else None
