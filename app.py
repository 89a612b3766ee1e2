"""Gemma Garage: the Hugging Face Spaces entry point (also `python app.py` anywhere).

Importing this file builds the page only: torch, transformers, unsloth and datasets
load later, on the worker, when a job or a chat needs them.
"""

import os

if os.environ.get("SPACES_ZERO_GPU"):
    import spaces  # noqa: F401  ZeroGPU wants `spaces` imported before anything touches CUDA

    import garage.zerogpu  # noqa: F401  its GPU functions, decorated now: the Space reports them at launch

from garage.ui.app import build_app, launch  # noqa: E402

demo = build_app()

if __name__ == "__main__":
    launch(demo)
