"""The writers of pairs behind one small interface: Gemini, any OpenAI-compatible endpoint, a local model.

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
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
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
        if last.status is None and _names_no_host(last.message):  # not a proxy's answer about its upstream
            raise ServiceError(f"The {self.name} endpoint could not be reached ({tries}): its address does not "
                               "resolve from this machine (no network connection, or a mistyped base_url?); once "
                               "it resolves, run again to continue where it stopped.")
        if last.status is None and _refused_or_unreachable(last.message):
            raise ServiceError(f"The {self.name} endpoint could not be reached ({tries}): the connection was refused "
                               "or the network is unreachable (no network, or no server at that address?); run "
                               "again to continue where it stopped.")
        raise ServiceError(f"The {self.name} endpoint {what} ({tries}{'' if self.max_retries == 0 else ' in a row'}). "
                           "It may be down or overloaded; run again later to continue where it stopped.")

    def _quota_message(self, detail: str) -> str:
        return (f"The {self.name} quota is exhausted for now ({detail}). Wait and run again to continue where "
                "it stopped, lower the concurrency, or use a key with a higher quota.")


def _retry_after(headers) -> float | None:
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


def _is_timeout(exc: Exception) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"TimeoutException", "ReadTimeout", "ConnectTimeout", "WriteTimeout", "PoolTimeout",
                         "APITimeoutError", "TimeoutError", "ServerTimeoutError"})


def _is_connection(exc: Exception) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConnectError", "RemoteProtocolError", "ReadError", "APIConnectionError",
                         "ClientConnectionError", "ConnectionError"})


def _status_failure(status: int, retry_after: float | None, message: str) -> Failure:
    if status in (401, 403):
        return Failure("auth", status, None, message)
    if status == 429:
        return Failure("rate", status, retry_after, message)
    if status in (408, 409) or status >= 500:
        return Failure("server", status, retry_after, message)
    return Failure("refused", status, None, message)


# --- Gemini ---------------------------------------------------------------------

_GEMINI_TYPES = {"object": "OBJECT", "array": "ARRAY", "string": "STRING", "integer": "INTEGER",
                 "number": "NUMBER", "boolean": "BOOLEAN"}


def to_gemini_schema(schema: dict) -> dict:
    """A JSON-schema dict in the OpenAPI subset Gemini's ``response_schema`` takes."""
    out = {}
    for key, value in schema.items():
        if key == "type":
            out["type"] = _GEMINI_TYPES.get(str(value).lower(), str(value).upper())
        elif key == "properties":
            out["properties"] = {k: to_gemini_schema(v) for k, v in value.items()}
        elif key == "items":
            out["items"] = to_gemini_schema(value)
        elif key in ("required", "description", "enum", "minimum", "maximum", "min_items", "max_items"):
            out[key] = value
        elif key in ("minItems", "maxItems"):
            out["min_items" if key == "minItems" else "max_items"] = value
    return out


class GeminiBackend(Backend):
    """Google's Gemini API through ``google-genai``, with structured JSON output.

    The endpoint is Google's unless ``base_url`` is given or ``GOOGLE_GEMINI_BASE_URL``
    is set (the client reads it itself when no base URL is passed).
    """

    name = "Gemini"

    def __init__(self, model: str = "gemini-2.5-flash", *, api_key: str | None = None, base_url: str | None = None,
                 api_version: str = "v1beta", **kwargs):
        super().__init__(model, **kwargs)
        self.endpoint = base_url or ""
        key = (api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or "").strip()
        if not key:
            raise GarageError("No Gemini API key: paste one, or set GEMINI_API_KEY "
                              "(get one free at https://aistudio.google.com/apikey).")
        self._secrets = (key,)
        try:
            from google import genai
            from google.genai import types
        except ImportError:
            raise GarageError("The Gemini backend needs the google-genai package: pip install 'google-genai>=3,<4'."
                              ) from None
        self._types = types
        options = types.HttpOptions(api_version=api_version, timeout=max(1, int(self.timeout * 1000)),
                                    base_url=(base_url or None))
        try:
            self._client = genai.Client(api_key=key, http_options=options)
        except ValueError as exc:
            raise GarageError(f"Could not set up the Gemini client: {self.scrub(exc)}") from None

    def _complete(self, prompt, system, temperature, max_tokens, schema) -> str:
        types = self._types
        config = types.GenerateContentConfig(
            system_instruction=system or None, temperature=temperature, max_output_tokens=max_tokens,
            response_mime_type="application/json" if schema else None,
            response_schema=types.Schema.model_validate(to_gemini_schema(schema)) if schema else None,
        )
        response = self._client.models.generate_content(model=self.model, contents=prompt, config=config)
        usage = getattr(response, "usage_metadata", None)
        if usage is not None:
            self.stats.add(input_tokens=usage.prompt_token_count or 0,
                           output_tokens=(usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0))
        try:
            text = response.text
        except Exception:  # noqa: BLE001 - a blocked or odd candidate
            text = None
        if text is None:
            reason = ""
            if response.candidates:
                reason = str(response.candidates[0].finish_reason or "")
            elif getattr(response, "prompt_feedback", None):
                reason = str(response.prompt_feedback.block_reason or "blocked")
            return f"<empty reply {reason}>"
        return text

    def _classify(self, exc: Exception) -> Failure | None:
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            status = int(exc.code or 0)
            message = str(exc.message or exc.status or "")
            details = json.dumps(exc.details, default=str) if exc.details is not None else ""
            if status == 400 and ("API_KEY_INVALID" in details or "API key not valid" in details):
                return Failure("auth", status, None, message)
            retry_after = _retry_after(getattr(getattr(exc, "response", None), "headers", None))
            if retry_after is None and status == 429:
                match = re.search(r'"retryDelay":\s*"([\d.]+)s"', details)
                retry_after = float(match.group(1)) if match else None
            return _status_failure(status, retry_after, message)
        if _is_timeout(exc):
            return Failure("timeout", None, None, "time-out")
        if _is_connection(exc):
            return Failure("server", None, None, f"connection failed ({_causes(exc)})")
        return None

    def _auth_message(self) -> str:
        return "The Gemini key was rejected. Check it at https://aistudio.google.com/apikey and try again."

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass


# --- OpenAI-compatible ----------------------------------------------------------

class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat endpoint (vLLM, Ollama, LM Studio, OpenAI...) in JSON mode."""

    name = "OpenAI-compatible"

    def __init__(self, model: str, *, base_url: str, api_key: str | None = None, **kwargs):
        super().__init__(model, **kwargs)
        if not base_url:
            raise GarageError("The openai backend needs the endpoint address, e.g. http://localhost:8000/v1.")
        self.endpoint = base_url
        key = (api_key or os.environ.get("OPENAI_API_KEY") or "").strip()
        self._secrets = (key,) if key else ()
        try:
            from openai import OpenAI
        except ImportError:
            raise GarageError("The openai backend needs the openai package: pip install 'openai>=1.50'.") from None
        self._client = OpenAI(api_key=key or "not-needed", base_url=base_url.rstrip("/"), timeout=self.timeout,
                              max_retries=0)
        self._json_mode = True

    def _complete(self, prompt, system, temperature, max_tokens, schema) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature,
                                  "max_tokens": max_tokens}
        if schema and self._json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        try:
            response = self._client.chat.completions.create(**kwargs)
        except Exception as exc:  # some servers do not know response_format: ask once without it
            status = getattr(exc, "status_code", None)
            if schema and self._json_mode and status in (400, 422) and "response_format" in str(exc):
                self._json_mode = False
                kwargs.pop("response_format", None)
                response = self._client.chat.completions.create(**kwargs)
            else:
                raise
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.stats.add(input_tokens=usage.prompt_tokens or 0, output_tokens=usage.completion_tokens or 0)
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""

    def _classify(self, exc: Exception) -> Failure | None:
        import openai

        if isinstance(exc, openai.APIStatusError):
            headers = getattr(getattr(exc, "response", None), "headers", None)
            return _status_failure(int(exc.status_code), _retry_after(headers), str(exc.message))
        if isinstance(exc, openai.APITimeoutError) or _is_timeout(exc):
            return Failure("timeout", None, None, "time-out")
        if isinstance(exc, openai.APIConnectionError) or _is_connection(exc):
            return Failure("server", None, None, f"connection failed ({_causes(exc)})")
        return None

    def _auth_message(self) -> str:
        return "The endpoint rejected the API key (HTTP 401/403). Check the key (OPENAI_API_KEY) and try again."

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass


# --- local transformers model -------------------------------------------------------

class LocalBackend(Backend):
    """A causal LM from a local folder, through transformers and its chat template.

    Requests in flight at once (the job's concurrency) are answered together, in shared generate() calls
    (``local_batch``). Its JSON is parsed leniently; replies that are not JSON are counted as parse failures,
    never fatal.
    """

    name = "local model"

    def __init__(self, model: str, *, device: str | None = None, **kwargs):
        kwargs.setdefault("max_output_tokens", 1024)
        super().__init__(model, **kwargs)
        folder = self._resolve(model)
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise GarageError("The local backend needs torch and transformers installed.") from None
        from garage.train.loading import has_gpu

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            dtype = torch.bfloat16 if has_gpu() else torch.float32
            loaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        except Exception as exc:  # noqa: BLE001
            raise GarageError(f"Could not load the model in {folder}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
        device = device or ("cuda" if has_gpu() else "cpu")  # on ZeroGPU outside a GPU call: the CPU
        loaded.to(device).eval()
        if not getattr(tokenizer, "chat_template", None):
            raise GarageError(f"The model in {folder} has no chat template; use an instruction-tuned model.")
        from garage.augment.local_batch import BatchedGenerator

        self.generator = BatchedGenerator(loaded, tokenizer, device)

    @staticmethod
    def _resolve(model: str) -> Path:
        from garage.testing import TINY_NAME

        if model == TINY_NAME:
            from garage.testing import build_tiny_gemma

            return build_tiny_gemma()
        from garage import paths

        if paths.shared():  # a server folder may hold another user's fine-tuned weights
            raise GarageError("On a shared Space the local backend runs only the built-in test model "
                              f"({TINY_NAME}); use Gemini or an OpenAI-compatible server, or run the app on your own "
                              "machine for a local model folder.")
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise GarageError(f"Local model folder not found: {model}. Give the path of a folder holding "
                              "config.json, the weights and the tokenizer.")
        if not (folder / "config.json").exists():
            raise GarageError(f"{model} has no config.json: it is not a transformers model folder.")
        return folder

    def _complete(self, prompt, system, temperature, max_tokens, schema) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text, prompt_tokens, new_tokens = self.generator.complete(messages, max_tokens, temperature)
        self.stats.add(input_tokens=prompt_tokens, output_tokens=new_tokens)
        return text

    def _classify(self, exc: Exception) -> Failure | None:
        if "out of memory" in str(exc).lower():
            raise GarageError("The local model ran out of memory. Use a smaller model, smaller chunks or "
                              "a shorter max_output_tokens.") from None
        return None


# --- factory --------------------------------------------------------------------

def make_backend(config=None, *, api_key: str | None = None, sleep: Callable[[float], None] = time.sleep,
                 **overrides) -> Backend:
    """The backend an ``AugmentConfig`` names. ``api_key`` is used, never stored."""
    from garage.augment.config import AugmentConfig

    cfg = config or AugmentConfig()
    common = dict(max_retries=cfg.max_retries, timeout=cfg.request_timeout, max_requests=cfg.max_requests,
                  retry_base=cfg.retry_base_seconds, max_retry_wait=cfg.max_retry_wait,
                  max_output_tokens=cfg.max_output_tokens, sleep=sleep)
    common.update(overrides)
    if cfg.backend == "gemini":
        return GeminiBackend(cfg.model, api_key=api_key, base_url=cfg.base_url or None, **common)
    if cfg.backend == "openai":
        return OpenAIBackend(cfg.model, base_url=cfg.base_url, api_key=api_key, **common)
    if cfg.backend == "local":
        return LocalBackend(cfg.model, **common)
    raise GarageError(f"Unknown backend {cfg.backend!r}; choose gemini, openai or local.")


_NO_HOST = ("name or service not known", "temporary failure in name resolution", "getaddrinfo failed",
            "nodename nor servname", "no address associated with hostname", "failed to resolve")
_UNREACHABLE = ("connection refused", "network is unreachable", "no route to host")


def _names_no_host(message: str) -> bool:
    """A failure whose text says the host name did not resolve (what every client says offline)."""
    return any(words in (message or "").lower() for words in _NO_HOST)


def _refused_or_unreachable(message: str) -> bool:
    return any(words in (message or "").lower() for words in _UNREACHABLE)


def _causes(exc: BaseException, depth: int = 5) -> str:
    """The error and what caused it (a client's connection error wraps the socket's, which says why)."""
    parts = []
    while exc is not None and len(parts) < depth:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)
