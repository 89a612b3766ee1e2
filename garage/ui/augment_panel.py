"""Documents -> Q/A panel of the Data tab (placeholder until the panel is built)."""

from __future__ import annotations

import gradio as gr


def build(train_dataset: gr.Dropdown) -> None:
    gr.Markdown("Turn PDF, DOCX, PPTX, TXT, Markdown or HTML documents into question/answer conversations.")
