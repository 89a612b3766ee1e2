"""Evaluation: the base model against a tuned one on held-out prompts."""
