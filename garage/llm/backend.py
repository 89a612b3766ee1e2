"""What every LLM client shares: the errors, the request discipline (caps, retries, back-off), lenient JSON.

    backend.generate_text(prompt, system=...)          -> str
    backend.generate_json(prompt, schema, system=...)  -> dict | list   (or raises ParseFailure)

Every backend shares the same request discipline (``Backend._call``): a cap on
requests, retries on 429 (waiting as Retry-After says, else exponential back-off
with jitter; one 429 pauses every thread), on 5xx and on time-outs; a rejected key
or a spent quota ends in a ``GarageError`` whose message never contains the key.
The key is handed to the client library and kept nowhere else except a private
attribute used to scrub messages: never written to disk, never logged.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable

from garage.counters import Counters
from garage.errors import GarageError

log = logging.getLogger(__name__)


# --- errors -------------------------------------------------------------------

class BackendError(GarageError):
    """A backend problem that stops the job (chunks already done are kept)."""


class AuthError(BackendError):
    """The key was rejected (401/403, or Google's 400 API_KEY_INVALID)."""


class QuotaError(BackendError):
    """Rate limited past every retry, or told to wait longer than we will."""


class ServiceError(BackendError):
    """Server errors or time-outs past every retry."""


class RequestCapError(BackendError):
    """The job's cap on requests (``max_requests``) is reached."""


class RequestRefused(BackendError):
    """The server refused this request as malformed (400/404/422): retrying will not help."""


class ParseFailure(Exception):
    """The reply could not be read as the JSON asked for (counted, never fatal)."""

    def __init__(self, message: str, raw: str = ""):
        super().__init__(message)
        self.raw = raw


@dataclass
class Failure:
    """How one failed request is handled."""

    kind: str                    # auth | rate | server | timeout | refused
    status: int | None = None
    retry_after: float | None = None
    message: str = ""


@dataclass
class Stats(Counters):
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    parse_failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    waited_seconds: float = 0.0


# --- lenient JSON ---------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def parse_json_lenient(text: str | None) -> Any:
    """The first JSON object or array in ``text`` (plain, fenced, or wrapped in prose)."""
    if text is None or not str(text).strip():
        raise ValueError("empty reply")
    text = str(text).strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        for match in re.finditer(r"[\[{]", candidate):
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
            except ValueError:
                continue
            if isinstance(value, (dict, list)) and value:
                return value
    raise ValueError("no JSON object in the reply")


# --- the shared request discipline --------------------------------------------------

class Backend:
    """Base class: subclasses implement ``_complete`` and ``_classify``."""

    name = "base"
    endpoint = ""  # the address requests go to, when the caller chose one

    def __init__(self, model: str, *, max_retries: int = 5, timeout: float = 120.0, max_requests: int = 0,
                 retry_base: float = 1.0, max_retry_wait: float = 120.0, max_output_tokens: int = 8192,
                 sleep: Callable[[float], None] = time.sleep):
        self.model = model
        self.max_retries = max(0, int(max_retries))
        self.timeout = float(timeout)
        self.max_requests = int(max_requests or 0)
        self.retry_base = float(retry_base)
        self.max_retry_wait = float(max_retry_wait)
        self.max_output_tokens = int(max_output_tokens)
        self.stats = Stats()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never shows a key
        return f"<{type(self).__name__} model={self.model!r}>"

    # --- public interface -------------------------------------------------
    def generate_text(self, prompt: str, *, system: str | None = None, temperature: float = 0.7,
                      max_tokens: int | None = None) -> str:
        return self._call(lambda: self._complete(prompt, system, temperature, max_tokens or self.max_output_tokens,
                                                 None))

    def generate_json(self, prompt: str, schema: dict, *, system: str | None = None, temperature: float = 0.7,
                      max_tokens: int | None = None) -> Any:
        """Ask for JSON matching ``schema`` (a JSON-schema dict); return it parsed."""
        text = self._call(lambda: self._complete(prompt, system, temperature, max_tokens or self.max_output_tokens,
                                                 schema))
        try:
            return parse_json_lenient(text)
        except ValueError as exc:
            self.stats.add(parse_failures=1)
            raise ParseFailure(f"{self.name} reply is not valid JSON ({exc})", raw=self.scrub(text or "")) from None

    def count_parse_failure(self) -> None:
        """For callers that reject a reply's shape after it parsed."""
        self.stats.add(parse_failures=1)

    def close(self) -> None:
        pass

    # --- for subclasses ---------------------------------------------------
    def _complete(self, prompt: str, system: str | None, temperature: float, max_tokens: int,
                  schema: dict | None) -> str:
        raise NotImplementedError

    def _classify(self, exc: Exception) -> Failure | None:
        """How to treat ``exc``; ``None`` means it is not a request failure (re-raise it)."""
        return None

    def _auth_message(self) -> str:
        return f"The {self.name} endpoint rejected the API key (HTTP 401/403). Check the key and try again."

    # --- machinery --------------------------------------------------------
    def scrub(self, text: str) -> str:
        """``text`` with any secret this backend holds replaced by ***."""
        text = str(text)
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _take_request(self) -> None:
        with self._lock:
            if self.max_requests and self.stats.requests >= self.max_requests:
                raise RequestCapError(f"Stopped at the cap of {self.max_requests} requests for this job "
                                      "(max_requests). Raise it and run again to continue.")
            self.stats.requests += 1

    def _wait_for_pause(self) -> None:
        while True:
            with self._lock:
                wait = self._paused_until - time.monotonic()
            if wait <= 0:
                return
            self._sleep(min(wait, 5.0))

    def _pause_all(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _backoff(self, attempt: int) -> float:
        return min(60.0, self.retry_base * (2 ** attempt)) * random.uniform(0.75, 1.25)

    def _call(self, request: Callable[[], str]) -> str:
        last: Failure | None = None
        for attempt in range(self.max_retries + 1):
            self._wait_for_pause()
            self._take_request()
            try:
                return request()
            except Exception as exc:  # noqa: BLE001 - classified below, unknown ones re-raised
                failure = self._classify(exc)
                if failure is None:
                    raise
            last = failure
            message = self.scrub(failure.message)
            if failure.kind == "auth":
                raise AuthError(self._auth_message()) from None
            if failure.kind == "refused":
                raise RequestRefused(f"The {self.name} endpoint refused the request (HTTP {failure.status}): "
                                     f"{message[:300]}") from None
            if failure.kind == "rate":
                self.stats.add(rate_limited=1)
                if failure.retry_after is not None and failure.retry_after > self.max_retry_wait:
                    raise QuotaError(self._quota_message(f"the server asks to wait {failure.retry_after:.0f} s"))
            if attempt >= self.max_retries:
                break
            wait = failure.retry_after if failure.retry_after is not None else self._backoff(attempt)
            wait = max(0.0, min(wait, max(self.max_retry_wait, 0.0)))
            log.info("%s request failed (%s %s); retry %d/%d in %.1f s", self.name, failure.kind,
                     failure.status or "", attempt + 1, self.max_retries, wait)
            self.stats.add(retries=1, waited_seconds=wait)
            if failure.kind == "rate":
                self._pause_all(wait)
                self._wait_for_pause()
            else:
                self._sleep(wait)
        assert last is not None
        if last.kind == "rate":
            raise QuotaError(self._quota_message(f"still rate limited after {self.max_retries} retries"))
        what = ("timed out" if last.kind == "timeout" else f"failed with HTTP {last.status}" if last.status
                else "could not be reached")
        tries = "once" if self.max_retries == 0 else f"on {self.max_retries + 1} attempts"
        if last.status is None and names_no_host(last.message):  # not a proxy's answer about its upstream
            raise ServiceError(f"The {self.name} endpoint could not be reached ({tries}): its address does not "
                               "resolve from this machine (no network connection, or a mistyped base_url?); once "
                               "it resolves, run again to continue where it stopped.")
        if last.status is None and refused_or_unreachable(last.message):
            raise ServiceError(f"The {self.name} endpoint could not be reached ({tries}): the connection was refused "
                               "or the network is unreachable (no network, or no server at that address?); run "
                               "again to continue where it stopped.")
        raise ServiceError(f"The {self.name} endpoint {what} ({tries}{'' if self.max_retries == 0 else ' in a row'}). "
                           "It may be down or overloaded; run again later to continue where it stopped.")

    def _quota_message(self, detail: str) -> str:
        return (f"The {self.name} quota is exhausted for now ({detail}). Wait and run again to continue where "
                "it stopped, lower the concurrency, or use a key with a higher quota.")


def retry_after_header(headers) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, if any."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
    except Exception:
        return None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def is_timeout(exc: Exception) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TimeoutException", "ReadTimeout", "ConnectTimeout", "WriteTimeout", "PoolTimeout",
                         "APITimeoutError", "TimeoutError", "ServerTimeoutError"})


def is_connection(exc: Exception) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConnectError", "RemoteProtocolError", "ReadError", "APIConnectionError",
                         "ClientConnectionError", "ConnectionError"})


def status_failure(status: int, retry_after: float | None, message: str) -> Failure:
    if status in (401, 403):
        return Failure("auth", status, None, message)
    if status == 429:
        return Failure("rate", status, retry_after, message)
    if status in (408, 409) or status >= 500:
        return Failure("server", status, retry_after, message)
    return Failure("refused", status, None, message)



_NO_HOST = ("name or service not known", "temporary failure in name resolution", "getaddrinfo failed",
            "nodename nor servname", "no address associated with hostname", "failed to resolve")
_UNREACHABLE = ("connection refused", "network is unreachable", "no route to host")


def names_no_host(message: str) -> bool:
    """A failure whose text says the host name did not resolve (what every client says offline)."""
    return any(words in (message or "").lower() for words in _NO_HOST)


def refused_or_unreachable(message: str) -> bool:
    return any(words in (message or "").lower() for words in _UNREACHABLE)


def causes(exc: BaseException, depth: int = 5) -> str:
    """The error and what caused it (a client's connection error wraps the socket's, which says why)."""
    parts = []
    while exc is not None and len(parts) < depth:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)
