"""Publish tab: sign in with Hugging Face, push a run (adapter / merged / GGUF + model card), or download it.

API names: ``/push_to_hub`` (run id, repo, what, private, update -> repo URL), ``/push_dataset``
(run id, repo, private, update -> dataset repo URL), ``/download_adapter``, ``/download_merged``,
``/download_gguf``, ``/download_dataset`` (run id -> file).
"""

from __future__ import annotations

import re

import gradio as gr

from garage import paths
from garage.errors import GarageError
from garage.hub import auth, names, publish, zips
from garage.jobs import service
from garage.hub.gguf_export import find_llama_quantize
from garage.ui.session import user_errors, user_of

_SUFFIX = re.compile(r"-(lora|merged|GGUF)$")


def _gguf_note() -> str:
    text = "GGUF f16 and q8_0 are written here for Gemma 3 models (text only). "
    if find_llama_quantize():
        return text + "q4_k_m uses llama.cpp's `llama-quantize`, found on this machine."
    return text + ("q4_k_m needs llama.cpp's `llama-quantize`, which is not installed here: put it on PATH or set "
                   "GARAGE_LLAMA_CPP to a llama.cpp build.")


def _username(profile: gr.OAuthProfile | None, oauth_token: gr.OAuthToken | None) -> str | None:
    if profile is not None and getattr(profile, "username", None):
        return profile.username
    token = auth.resolve_token(oauth_token)
    return auth.username(token) if token else None


def _yours(run_id: str, request, profile):
    """The run, if the caller may publish it (its owner)."""
    return service.run_for(run_id, user_of(request, profile), "publish")


def _progress_callback(progress: gr.Progress | None):
    if progress is None:
        return None
    return lambda fraction, message: progress(fraction, desc=message)


# --- API functions (also what the buttons call) ----------------------------------------------------

def push_to_hub(run_id: str, repo: str, what: list[str], private: bool = True, update: bool = False,
                request: gr.Request = None, profile: gr.OAuthProfile | None = None,
                oauth_token: gr.OAuthToken | None = None) -> str:
    """Push a run of yours: what = any of adapter, merged, gguf-q8_0, gguf-f16, gguf-q4_k_m; returns the repo URL."""
    run = _yours(run_id, request, profile)
    token = auth.require_token(oauth_token)
    return publish.push_run(run, repo, what, token=token, private=bool(private), update=bool(update))["url"]


def push_dataset(run_id: str, repo: str, private: bool = True, update: bool = False, request: gr.Request = None,
                 profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None) -> str:
    """Push the training conversations of a run of yours as a Hub dataset; returns the dataset repo URL."""
    run = _yours(run_id, request, profile)
    token = auth.require_token(oauth_token)
    return publish.push_dataset(run, repo, token=token, private=bool(private), update=bool(update))


def download_adapter(run_id: str, request: gr.Request, profile: gr.OAuthProfile | None = None) -> str:
    """The run's LoRA adapter (with its tokenizer and a model card) as a zip."""
    return str(zips.adapter_zip(_yours(run_id, request, profile)))


def download_merged(run_id: str, request: gr.Request, profile: gr.OAuthProfile | None = None,
                    progress=gr.Progress()) -> str:
    """The merged 16-bit model as a zip (refused above GARAGE_MAX_DOWNLOAD_MB)."""
    return str(zips.merged_zip(_yours(run_id, request, profile), progress=_progress_callback(progress)))


def download_gguf(run_id: str, request: gr.Request, profile: gr.OAuthProfile | None = None,
                  progress=gr.Progress()) -> str:
    """The run's GGUF q8_0 file, for llama.cpp / Ollama (refused above GARAGE_MAX_DOWNLOAD_MB)."""
    return str(zips.gguf_download(_yours(run_id, request, profile), "q8_0", progress=_progress_callback(progress)))


def download_dataset(run_id: str, request: gr.Request, profile: gr.OAuthProfile | None = None) -> str:
    """The conversations the run trained on, as JSONL."""
    return str(zips.dataset_jsonl(_yours(run_id, request, profile)))


# --- the tab -------------------------------------------------------------------------------------

def build() -> dict:
    """Lay out the Publish tab; returns its run picker and the handler that refreshes it."""
    gr.Markdown("Push a run's adapter, merged model or GGUF with a model card, or download it. Every run's "
                "weights are already on disk in its run folder (the Train tab shows where).")
    if paths.space_sign_in():
        gr.LoginButton()  # Spaces OAuth (README: hf_oauth: true)
    elif paths.on_space():
        gr.Markdown("Sign-in with Hugging Face is not set up here (`hf_oauth: true` in the Space's README), so "
                    "visitors cannot push; downloads work. A single-user copy (`GARAGE_SINGLE_USER=1`) pushes with "
                    "its `HF_TOKEN`.")
    else:
        gr.Markdown("Running locally: pushing uses `HF_TOKEN` or your saved `hf auth login`.")
    with gr.Row():
        run_pick = gr.Dropdown(choices=[], label="Run (your completed runs)", allow_custom_value=True, scale=4)
        refresh = gr.Button("↻ runs", scale=0, size="sm")
    what = gr.CheckboxGroup(choices=[(label, key) for key, label in names.WHAT_LABELS.items()], value=["adapter"],
                            label="What to push")
    gr.Markdown(_gguf_note())
    with gr.Row():
        repo = gr.Textbox(label="Repo name", placeholder="your-name/gemma-3-1b-my-data-lora", scale=3)
        private = gr.Checkbox(value=True, label="Private repo")
        update = gr.Checkbox(value=False, label="Update the repo if it exists")
    push = gr.Button("Push to the Hub", variant="primary")
    result = gr.Markdown()
    where = gr.Markdown(elem_id="publish-where")  # the picked run's weights, exports and pushes
    with gr.Accordion("Download in the browser", open=True):
        with gr.Row():
            get_adapter = gr.Button("Adapter (.zip)")
            get_merged = gr.Button("Merged model (.zip)")
            get_gguf = gr.Button("GGUF q8_0 (.gguf)")
            get_dataset = gr.Button("Training data (.jsonl)")
        download = gr.File(label="Download", interactive=False)
    with gr.Accordion("Push the training dataset to the Hub", open=False):
        with gr.Row():
            ds_repo = gr.Textbox(label="Dataset repo name", placeholder="your-name/my-data", scale=3)
            ds_private = gr.Checkbox(value=True, label="Private repo")
            ds_update = gr.Checkbox(value=False, label="Update the repo if it exists")
        ds_push = gr.Button("Push the dataset")
        ds_result = gr.Markdown()

    @user_errors
    def on_refresh(current, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Your publishable runs; the picked one stays picked, else the newest is picked."""
        choices = [(publish.run_label(run, status), run.id)
                   for run, status in service.runs_with_weights(user_of(request, profile), "publish")]
        ids = [run_id for _, run_id in choices]
        return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    def on_pick(run_id, chosen, request: gr.Request, profile: gr.OAuthProfile | None = None,
                oauth_token: gr.OAuthToken | None = None):
        if not run_id:
            return gr.update(), gr.update(), ""

        try:
            run = _yours(run_id, request, profile)
            user = _username(profile, oauth_token)
            return (publish.suggest_repo(run, chosen or ["adapter"], user=user),
                    f"{user + '/' if user else ''}{names.dataset_label(run.config().dataset)}",
                    publish.whereabouts(run))
        except GarageError as exc:  # not the caller's, or gone: the location line says why
            return gr.update(), gr.update(), f"⚠️ {exc}"

    def on_what(chosen, current):
        try:
            suffix = names.repo_suffix(chosen)
        except GarageError:
            return gr.update()
        if current and _SUFFIX.search(current):
            return _SUFFIX.sub(f"-{suffix}", current)
        return gr.update()

    @user_errors
    def on_push(run_id, repo_name, chosen, is_private, do_update, request: gr.Request,
                profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None,
                progress=gr.Progress()):
        run = _yours(run_id, request, profile)
        token = auth.require_token(oauth_token)
        pushed = publish.push_run(run, repo_name, chosen, token=token, private=bool(is_private),
                                  update=bool(do_update), progress=_progress_callback(progress))
        files = ", ".join(f"`{f}`" for f in pushed["files"])
        return f"**Pushed** to [{pushed['repo_id']}]({pushed['url']}) · {len(pushed['files'])} files: {files}"

    @user_errors
    def on_push_dataset(run_id, repo_name, is_private, do_update, request: gr.Request,
                        profile: gr.OAuthProfile | None = None, oauth_token: gr.OAuthToken | None = None,
                        progress=gr.Progress()):
        run = _yours(run_id, request, profile)
        token = auth.require_token(oauth_token)
        url = publish.push_dataset(run, repo_name, token=token, private=bool(is_private), update=bool(do_update),
                                   progress=_progress_callback(progress))
        return f"**Pushed** the dataset to [{url}]({url})"

    def on_where(run_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The picked run's weights, exports and pushes, after something may have added to them."""
        try:
            return publish.whereabouts(_yours(run_id, request, profile))
        except GarageError as exc:
            return f"⚠️ {exc}"

    refresh.click(on_refresh, run_pick, run_pick, api_visibility="private")
    run_pick.change(on_pick, [run_pick, what], [repo, ds_repo, where], api_visibility="private")
    what.change(on_what, [what, repo], repo, api_visibility="private")
    # the location text follows what a push or a merge adds (a failure leaves it as it was, without an error mark)
    quiet = dict(api_visibility="private", show_progress="hidden")
    push.click(on_push, [run_pick, repo, what, private, update], result, api_visibility="private").success(
        on_where, run_pick, where, **quiet)
    ds_push.click(on_push_dataset, [run_pick, ds_repo, ds_private, ds_update], ds_result,
                  api_visibility="private").success(on_where, run_pick, where, **quiet)
    get_adapter.click(user_errors(download_adapter), run_pick, download, api_name="download_adapter")
    get_merged.click(user_errors(download_merged), run_pick, download, api_name="download_merged").success(
        on_where, run_pick, where, **quiet)
    get_gguf.click(user_errors(download_gguf), run_pick, download, api_name="download_gguf").success(
        on_where, run_pick, where, **quiet)
    get_dataset.click(user_errors(download_dataset), run_pick, download, api_name="download_dataset")
    for func in (push_to_hub, push_dataset):
        gr.api(user_errors(func), api_name=func.__name__)

    from gradio.context import Context

    if Context.root_block is not None:  # fill the run picker when the page loads
        Context.root_block.load(on_refresh, run_pick, run_pick, api_visibility="private")
    return {"run_pick": run_pick, "refresh": on_refresh}
