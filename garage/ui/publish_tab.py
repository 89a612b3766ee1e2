"""Publish tab: sign in with Hugging Face; push and download arrive with the publish issue."""

from __future__ import annotations

import gradio as gr

from garage.ui.session import on_space


def build() -> None:
    gr.Markdown("Push a run's adapter, merged model or GGUF with a model card, or download it. Every run's "
                "weights are already on disk in its run folder (the Train tab shows where).")
    if on_space():
        gr.LoginButton()  # Spaces OAuth (README: hf_oauth: true)
    else:
        gr.Markdown("Running locally: pushing uses `HF_TOKEN` or your saved `hf auth login`.")
