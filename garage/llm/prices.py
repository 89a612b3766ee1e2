"""What an LLM's tokens cost: rough list prices, for estimates before a job and its cost after.

USD per million tokens (input, output incl. thinking); check https://ai.google.dev/pricing for today's figures.
Only Gemini's are known here: an OpenAI-compatible endpoint or a local model has no price (None).
"""

from __future__ import annotations

GEMINI_PRICES = {  # longest names first: the first prefix that matches wins
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-2.0-flash": (0.10, 0.40),
}
DEFAULT_GEMINI = "gemini-2.5-flash"  # unknown Gemini models are priced as this one


def gemini_price(model: str) -> tuple[float, float]:
    """(input, output) USD per million tokens of a Gemini model."""
    name = model.rsplit("/", 1)[-1].lower()
    for prefix, price in GEMINI_PRICES.items():
        if name.startswith(prefix):
            return price
    return GEMINI_PRICES[DEFAULT_GEMINI]


def dollars(backend: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
    """What these tokens cost on ``backend``; None where no price is known (openai-compatible, local)."""
    if backend != "gemini":
        return None
    price_in, price_out = gemini_price(model)
    return round((input_tokens * price_in + output_tokens * price_out) / 1e6, 6)
