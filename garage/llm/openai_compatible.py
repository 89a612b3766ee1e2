"""Any OpenAI-compatible chat endpoint (vLLM, Ollama, LM Studio, OpenAI...) through the ``openai`` client."""

from __future__ import annotations

import os
from typing import Any

from garage.errors import GarageError
from garage.llm.backend import Backend, Failure, causes, is_connection, is_timeout, retry_after_header, status_failure

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
            return status_failure(int(exc.status_code), retry_after_header(headers), str(exc.message))
        if isinstance(exc, openai.APITimeoutError) or is_timeout(exc):
            return Failure("timeout", None, None, "time-out")
        if isinstance(exc, openai.APIConnectionError) or is_connection(exc):
            return Failure("server", None, None, f"connection failed ({causes(exc)})")
        return None

    def _auth_message(self) -> str:
        return "The endpoint rejected the API key (HTTP 401/403). Check the key (OPENAI_API_KEY) and try again."

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass
