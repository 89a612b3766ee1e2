"""The Blocks app: four tabs, each a module of its own, plus the API-only endpoints."""

from __future__ import annotations

import os

import gradio as gr
from starlette.middleware import Middleware

from garage import __version__
from garage.ui import api, compare_tab, data_tab, publish_tab, train_tab
from garage.ui.identity import VisitorCookie

TITLE = "Gemma Garage"


def build_app() -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nFine-tune Gemma on your data, compare it with the base, publish it. "
                    f"<small>v{__version__}</small>")
        with gr.Tabs() as tabs:
            with gr.Tab("Data", id="data"):
                data_placeholder = gr.Column()
            with gr.Tab("Train", id=train_tab.TAB_ID) as train_tab_item:
                train = train_tab.build(tabs)
            with gr.Tab("Compare", id="compare") as compare_tab_item:
                compare = compare_tab.build()
            with gr.Tab("Publish", id="publish") as publish_tab_item:
                publish = publish_tab.build()
        with data_placeholder:
            data = data_tab.build(train["dataset"])
        api.register()
        for on_load, outputs in (train["on_load"], data["on_load"]):
            demo.load(on_load, None, outputs, api_visibility="private")
        train_tab_item.select(None, None, None, js=train_tab.FOLLOW_LOG_JS)  # the log at its newest line
        # runs finish while the page is open: each tab's run picker is refreshed when the tab is opened
        compare_tab_item.select(compare["refresh"], None, compare["pickers"], api_visibility="private")
        publish_tab_item.select(publish["refresh"], publish["run_pick"], publish["run_pick"],
                                api_visibility="private")
    return demo


def launch(demo: gr.Blocks, **kwargs) -> None:
    """Serve the app (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured by launch itself)."""
    # Gradio rebuilds its per-endpoint timing summary (for the API page) after every event, from a pandas frame of
    # up to 10,000 past events: 2-6 ms of CPU per event, Train-tab timer ticks included. Every 100 events will do.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")
    # the visitor cookie is set by the server (signed, HttpOnly): a middleware of the app launch builds
    queued(demo).launch(app_kwargs={"middleware": [Middleware(VisitorCookie)]}, **kwargs)


QUEUE_MAX_SIZE = 256  # events waiting at once; on ZeroGPU Gradio's default is 1, too few for the Train tab's ticks


def queued(demo: gr.Blocks) -> gr.Blocks:
    return demo.queue(default_concurrency_limit=4, max_size=QUEUE_MAX_SIZE)
