"""Google's Gemini API through ``google-genai``, with structured JSON output."""

from __future__ import annotations

import json
import os
import re

from garage.errors import GarageError
from garage.llm.backend import (Backend, Failure, causes, is_connection, is_timeout, retry_after_header,
                                status_failure)

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
            retry_after = retry_after_header(getattr(getattr(exc, "response", None), "headers", None))
            if retry_after is None and status == 429:
                match = re.search(r'"retryDelay":\s*"([\d.]+)s"', details)
                retry_after = float(match.group(1)) if match else None
            return status_failure(status, retry_after, message)
        if is_timeout(exc):
            return Failure("timeout", None, None, "time-out")
        if is_connection(exc):
            return Failure("server", None, None, f"connection failed ({causes(exc)})")
        return None

    def _auth_message(self) -> str:
        return "The Gemini key was rejected. Check it at https://aistudio.google.com/apikey and try again."

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass
