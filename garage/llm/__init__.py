"""LLM clients: Gemini (``google-genai``), any OpenAI-compatible endpoint (``openai``), or a model on this machine.

One interface (``generate_text``, ``generate_json``) with one request discipline (caps, retries on 429 / 5xx /
time-outs, keys never in a message), used by Documents -> Q/A, the GRPO judge and prompt optimisation. Whose keys
a call may spend is ``garage.llm.keys``'.
"""

from __future__ import annotations

from garage.errors import GarageError
from garage.llm.backend import (AuthError, Backend, BackendError, ParseFailure, QuotaError, RequestCapError,
                                RequestRefused, ServiceError, parse_json_lenient)
from garage.llm.gemini import GeminiBackend
from garage.llm.local import LocalBackend
from garage.llm.openai_compatible import OpenAIBackend

BACKENDS = ("gemini", "openai", "local")

__all__ = ["AuthError", "BACKENDS", "Backend", "BackendError", "GeminiBackend", "LocalBackend", "OpenAIBackend",
           "ParseFailure", "QuotaError", "RequestCapError", "RequestRefused", "ServiceError", "make_client",
           "parse_json_lenient"]


def make_client(backend: str, model: str, *, base_url: str = "", api_key: str | None = None, **common) -> Backend:
    """The client for ``backend`` (gemini, openai, local); ``api_key`` is used, never stored; ``common``: the
    request discipline's settings (max_retries, timeout, max_requests, retry_base, ...)."""
    if backend == "gemini":
        return GeminiBackend(model, api_key=api_key, base_url=base_url or None, **common)
    if backend == "openai":
        return OpenAIBackend(model, base_url=base_url, api_key=api_key, **common)
    if backend == "local":
        return LocalBackend(model, **common)
    raise GarageError(f"Unknown backend {backend!r}; choose gemini, openai or local.")
