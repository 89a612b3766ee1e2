"""Scoring answers: parsing final answers, the GRPO rewards, and the LLM judge."""
