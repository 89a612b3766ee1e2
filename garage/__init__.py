"""Gemma Garage: fine-tune Gemma models without writing code.

Importing this package is cheap: torch, transformers, unsloth and datasets are
imported inside the functions that need them, never at module import.
"""

__version__ = "0.1.0"
