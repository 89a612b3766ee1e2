"""The calls the Publish tab, the API and the CLI make: push a run, and say where its model went.

    push_run(run, repo, what, token=...)      -> {"url", "repo_id", "files", "layout"}
    push_dataset(run, repo, token=...)        -> repo URL

The caller has checked the run is the user's to publish (``garage.access``); downloads are ``garage.hub.zips``'.
Pushing stages the repo's files in
``runs/<id>/exports/push/<repo name>/`` (hard links, so no second copy of the weights)
and leaves them there, so a failed upload keeps everything it had prepared.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import traceback
from datetime import datetime, timezone
from pathlib import Path

from garage import device, paths
from garage.data.store import export_jsonl
from garage.errors import GarageError
from garage.files import link_or_copy
from garage.hub import auth, card, export, gguf_export, names, push
from garage.hub.examples import answer_examples, run_conversations
from garage.hub.progress import Progress, say
from garage.secrecy import scrub_tokens


# --- runs ---------------------------------------------------------------------------------------

def run_label(run, status: dict) -> str:
    """How a run reads in Publish's picker."""
    loss = status.get("final_loss")
    loss_text = f" · loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
    return f"{run.id} · {status.get('method')} · {names.dataset_label(status.get('dataset', ''))}{loss_text}"


def suggest_repo(run, what=("adapter",), token: str | None = None, user: str | None = None) -> str:
    """``<user>/<base>-<dataset>-lora`` for a run (the user from the token when not given)."""
    if user is None and token:
        user = auth.username(token)
    cfg = run.config()
    return names.default_repo_name(cfg.model, cfg.dataset, what or ("adapter",), user)


# --- pushing ------------------------------------------------------------------------------------

def _link_tree(source: Path, dest: Path, skip: tuple = ()) -> None:
    """Mirror ``source`` into ``dest`` with hard links (copies across file systems)."""
    for path in source.rglob("*"):
        if not path.is_file() or path.name in skip:
            continue
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def stage_repo(run, repo: str, what: list[str], *, token: str | None = None, progress: Progress | None = None,
               examples: int = 3) -> tuple[Path, dict[str, str]]:
    """Build the repo's files for ``what`` in ``exports/push/<name>``; returns (folder, layout)."""
    name = repo.split("/")[-1]
    staging = export.exports_dir(run) / "push" / paths.safe_name(name, "repo")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    layout: dict[str, str] = {}
    if "adapter" in what:
        say(progress, 0.05, "Preparing the LoRA adapter")
        export.stage_adapter(run, staging)
        layout["adapter"] = ""
    if "merged" in what:
        say(progress, 0.1, "Preparing the merged 16-bit model")
        where = "merged" if "adapter" in what else ""
        folder = export.merged_dir(run, progress=lambda f, m: say(progress, 0.1 + 0.2 * f, m))
        _link_tree(folder, staging / where if where else staging, skip=(export.MARKER, "README.md"))
        layout["merged"] = where
    quants = [w.split("-", 1)[1] for w in what if w.startswith("gguf-")]
    for i, quant in enumerate(quants):
        start = 0.3 + 0.2 * i / len(quants)
        say(progress, start, f"Writing GGUF {quant}")
        file = export.gguf_file(run, quant, label=name,
                                progress=lambda f, m: say(progress, start + 0.2 * f / len(quants), m))
        link_or_copy(file, staging / file.name)
        layout[f"gguf-{quant}"] = file.name
    say(progress, 0.5, "Answering example prompts with the base and the tuned model")
    found, note = device.call(answer_examples, run, n=examples) if examples else ([], "")  # where the GPU is
    say(progress, 0.65, "Writing the model card")
    png = card.loss_png(run)
    if png:
        (staging / card.LOSS_PNG).write_bytes(png)
    text = card.model_card(run, repo, layout, examples=found, examples_note=note, has_loss_png=bool(png))
    (staging / "README.md").write_text(scrub_tokens(text, token), encoding="utf-8")
    return staging, layout


def check_possible(run, what: list[str]) -> None:
    """Refuse early (before any work or network call) what this run or machine cannot produce."""
    export.require_weights(run)
    if "adapter" in what:
        export.require_adapter(run)
    for item in what:
        if item.startswith("gguf-"):
            reason = gguf_export.unavailable_reason(item.split("-", 1)[1])
            if reason:
                raise GarageError(reason)
    if any(w.startswith("gguf-") for w in what):
        gguf_export.check_family(run.config().model)
        if export.is_full(run):
            gguf_export.check_supported(run.output_dir())


def card_examples() -> int:
    """How many dataset prompts the model card answers (GARAGE_CARD_EXAMPLES, default 3; 0 = none)."""
    try:
        return max(0, int(os.environ.get("GARAGE_CARD_EXAMPLES", "3")))
    except ValueError:
        return 3


def push_run(run, repo: str, what=("adapter",), *, token: str | None, private: bool = True, update: bool = False,
             progress: Progress | None = None, examples: int | None = None, attempts: int | None = None,
             backoff: float | None = None) -> dict:
    """Push a run's ``what`` (adapter / merged / gguf-q8_0 / gguf-f16 / gguf-q4_k_m) with a model card."""
    examples = card_examples() if examples is None else examples
    what = names.normalise_what(what)
    repo = names.validate_repo(repo)
    if not token:
        auth.require_token(None)
    auth.check_online()
    check_possible(run, what)
    if "/" not in repo:
        user = auth.username(token)
        repo = f"{user}/{repo}" if user else repo
    if not update:
        push.refuse_if_exists(repo, token)
    kwargs = {k: v for k, v in (("attempts", attempts), ("backoff", backoff)) if v is not None}
    with _scrubbed(run, token), export.run_lock(run):
        staging, layout = stage_repo(run, repo, what, token=token, progress=progress, examples=examples)
        url = push.push_folder(staging, repo, token=token, private=private, update=update, progress=progress,
                               commit_message=f"Gemma Garage: {', '.join(what)} of run {run.id}", **kwargs)
    files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    run.log(f"Pushed {', '.join(what)} to {url} ({len(files)} files).")
    remember_push(run, url, what)
    return {"url": url, "repo_id": _repo_id(url), "files": files, "layout": layout}


def _repo_id(url: str) -> str:
    return "/".join(url.rstrip("/").split("/")[-2:])


def push_dataset(run, repo: str, *, token: str | None, private: bool = True, update: bool = False,
                 progress: Progress | None = None, model_repo: str = "", attempts: int | None = None,
                 backoff: float | None = None) -> str:
    """Push the run's training conversations as a dataset repo (``data/train.jsonl`` + a dataset card)."""
    repo = names.validate_repo(repo)
    if not token:
        auth.require_token(None)
    auth.check_online()
    if "/" not in repo:
        user = auth.username(token)
        repo = f"{user}/{repo}" if user else repo
    if not update:
        push.refuse_if_exists(repo, token, "dataset")
    with _scrubbed(run, token):
        url, rows = _push_dataset(run, repo, token, private, update, progress, model_repo, attempts, backoff)
    run.log(f"Pushed the dataset ({rows} rows) to {url}.")
    remember_push(run, url, ["dataset"])
    return url


def remember_push(run, url: str, what: list[str]) -> None:
    """The run's status keeps every push (newest last), so the Train and Publish tabs and /training_status say
    where its model went, on any later day (to its owner: a private repo's name is theirs)."""
    run.append_to("pushed", {"url": url, "what": list(what), "at": datetime.now(timezone.utc).isoformat(
        timespec="seconds")})


def pushed_lines(status: dict) -> list[str]:
    """Markdown lines, one per push the run's status remembers (newest first)."""
    return [f"Pushed {', '.join(p.get('what') or [])} to [{_repo_id(p['url'])}]({p['url']}) on "
            f"{str(p.get('at', ''))[:16].replace('T', ' ')} UTC" for p in reversed(status.get("pushed") or [])
            if p.get("url")]


def whereabouts(run) -> str:
    """Where the run's model is: its weights folder, what was exported from it, and every push."""
    output, status = run.output_dir(), run.status()
    lines = [f"Trained weights: `{output}`" if output else f"No trained weights yet ({status.get('state')})."]
    exports = run.path / "exports"
    merged = exports / "merged"
    if merged.is_dir():
        lines.append(f"Merged 16-bit model: `{merged}`")
    lines += [f"GGUF: `{path}`" for path in sorted((exports / "gguf").glob("*.gguf")) if ".tmp." not in path.name]
    lines += pushed_lines(status)
    return "\n\n".join(lines)


def _push_dataset(run, repo, token, private, update, progress, model_repo, attempts, backoff) -> tuple[str, int]:
    say(progress, 0.1, "Preparing the dataset")
    conversations = run_conversations(run)
    staging = export.exports_dir(run) / "push-dataset" / paths.safe_name(repo.split("/")[-1], "dataset")
    if staging.exists():
        shutil.rmtree(staging)
    export_jsonl(conversations, staging / "data" / "train.jsonl")
    source = card.dataset_hub_id(run) or names.dataset_label(run.config().dataset)
    text = card.dataset_card(repo, conversations, source=source, model_repo=model_repo)
    (staging / "README.md").write_text(scrub_tokens(text, token), encoding="utf-8")
    kwargs = {k: v for k, v in (("attempts", attempts), ("backoff", backoff)) if v is not None}
    url = push.push_folder(staging, repo, token=token, private=private, update=update, repo_type="dataset",
                           progress=progress, commit_message=f"Gemma Garage: dataset of run {run.id}", **kwargs)
    return url, len(conversations)


@contextlib.contextmanager
def _scrubbed(run, token: str | None):
    """Any failure leaves as a GarageError without the token; a bug's trace goes to the run log, scrubbed."""
    try:
        yield
    except GarageError as exc:
        raise GarageError(scrub_tokens(str(exc), token)) from None
    except Exception as exc:
        run.log(scrub_tokens(traceback.format_exc(), token))
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise GarageError(scrub_tokens(f"Pushing failed: {type(exc).__name__}: {first} (details in the run log).",
                                     token)) from None
