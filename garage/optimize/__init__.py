"""Prompt optimisation: GEPA evolves a model's system prompt against the evaluation's score (``method: prompt``)."""
