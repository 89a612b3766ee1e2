"""Gemma Garage: the Hugging Face Spaces entry point (also `python app.py` anywhere).

Importing this file builds the page only: torch, transformers, unsloth and datasets
load later, on the worker, when a job or a chat needs them.
"""

# First: on ZeroGPU this imports `spaces` before anything touches CUDA, and decorates the app's GPU entry points,
# so the Space reports them at launch (elsewhere they are plain calls).
import garage.device  # noqa: F401
from garage.ui.app import build_app, launch

demo = build_app()

if __name__ == "__main__":
    launch(demo)
