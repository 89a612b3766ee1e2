"""Inference: base and tuned answers from one copy of the base model."""
