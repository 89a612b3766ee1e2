"""The Gradio UI: one module per tab, wiring components to plain functions in garage/.

This package is the only place that imports gradio. It holds no logic of its own.
"""
