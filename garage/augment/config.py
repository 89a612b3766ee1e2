"""The settings of one augment job (documents -> question/answer pairs).

Same style as ``garage.config.TrainConfig``: every field carries its help text,
choices and range, so the Augment tab's form and the CLI come from this class.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from garage.config import check_ranges, coerce_fields, option
from garage.errors import GarageError
from garage.llm import BACKENDS, Backend, make_client
STYLES = ("qa", "cot", "summary")
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"


@dataclass
class AugmentConfig:
    """Everything that defines how documents become a question/answer dataset."""

    backend: str = option("gemini", "Who writes the pairs. gemini: Google's Gemini API (needs a key). "
                          "openai: any OpenAI-compatible endpoint (vLLM, Ollama, LM Studio, OpenAI...). "
                          "local: a model folder on this machine (slow without a GPU).", choices=BACKENDS)
    model: str = option(DEFAULT_GEMINI_MODEL, "Model name (gemini / openai) or the model folder path (local).")
    base_url: str = option("", "Endpoint address. openai: required (e.g. http://localhost:8000/v1). "
                           "gemini: leave empty for Google's API (or set GOOGLE_GEMINI_BASE_URL).",
                           group="advanced")
    style: str = option("qa", "qa: question and short answer. cot: question, step-by-step reasoning, answer. "
                        "summary: a passage and its summary.", choices=STYLES)
    instruction: str = option("", "Your instructions for the writer: audience, language, difficulty, tone "
                              "(e.g. 'for nurses in training, in French, exam difficulty').")
    num_pairs: int = option(50, "How many pairs to aim for in total (spread over the document's chunks).",
                            minimum=1, maximum=100_000)
    chunk_tokens: int = option(1000, "Size of each piece of text sent to the model, in tokens.",
                               minimum=64, maximum=100_000)
    chunk_overlap: int = option(100, "Tokens repeated between neighbouring pieces, so no fact is cut in half.",
                                minimum=0, maximum=10_000)
    concurrency: int = option(8, "Requests in flight at once (higher is faster until the provider's rate "
                              "limit). The local backend answers them together, in one batch.", minimum=1, maximum=64)
    temperature: float = option(0.7, "Creativity of the writer (0 = most literal).", minimum=0.0, maximum=2.0,
                                group="advanced")
    max_output_tokens: int = option(8192, "Longest reply per request, in tokens (Gemini 2.5's thinking counts "
                                    "towards it).", minimum=16, maximum=65_536, group="advanced")
    max_requests: int = option(2000, "Hard cap on requests for this job, retries included (guards your bill).",
                               minimum=1, maximum=1_000_000, group="advanced")
    max_retries: int = option(5, "Retries of one request after a rate limit (429), a server error (5xx) or "
                              "a time-out.", minimum=0, maximum=20, group="advanced")
    request_timeout: float = option(120.0, "Seconds to wait for one reply before retrying.",
                                    minimum=0.1, maximum=3600, group="advanced")
    retry_base_seconds: float = option(1.0, "First back-off wait when the server gives no Retry-After "
                                       "(doubles on each retry).", minimum=0.0, maximum=60, group="advanced")
    max_retry_wait: float = option(120.0, "Longest wait accepted from a Retry-After; a longer one means the "
                                   "quota is spent for now.", minimum=0.0, maximum=86_400, group="advanced")
    curate_threshold: float = option(7.0, "Curation: keep pairs the rater scores at least this (1-10).",
                                     minimum=1.0, maximum=10.0, group="curate")
    dedup_threshold: float = option(0.8, "Curation: pairs this similar (0-1, word-shingle Jaccard) count as "
                                    "duplicates.", minimum=0.0, maximum=1.0, group="curate")
    min_support: float = option(0.2, "Curation: least share of the answer's words that must appear in its "
                                "source text (0 turns the check off).", minimum=0.0, maximum=1.0, group="curate")

    def validate(self) -> "AugmentConfig":
        """Raise ``GarageError`` naming the first field that is out of range."""
        check_ranges(self)
        if not self.model.strip():
            raise GarageError("Choose a model: a Gemini model name, your endpoint's model name, "
                              "or a local model folder.")
        if self.backend == "openai" and not self.base_url.strip():
            raise GarageError("The openai backend needs the endpoint address (base URL), "
                              "e.g. http://localhost:8000/v1.")
        if self.chunk_overlap >= self.chunk_tokens:
            raise GarageError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens "
                              f"({self.chunk_tokens}).")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AugmentConfig":
        return cls(**coerce_fields(cls, data, "augment setting")).validate()

    def generation_settings(self) -> dict:
        """The settings that change what is generated (a resumed job must match them)."""
        return {k: getattr(self, k) for k in ("backend", "model", "style", "instruction",
                                              "num_pairs", "temperature")}


def make_backend(config: AugmentConfig | None = None, *, api_key: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, **overrides) -> Backend:
    """The LLM client an ``AugmentConfig`` names, with its request discipline. ``api_key`` is used, never stored."""
    cfg = config or AugmentConfig()
    common = dict(max_retries=cfg.max_retries, timeout=cfg.request_timeout, max_requests=cfg.max_requests,
                  retry_base=cfg.retry_base_seconds, max_retry_wait=cfg.max_retry_wait,
                  max_output_tokens=cfg.max_output_tokens, sleep=sleep)
    common.update(overrides)
    return make_client(cfg.backend, cfg.model, base_url=cfg.base_url, api_key=api_key, **common)
