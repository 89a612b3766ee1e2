"""Who may do what with a run, which runs have weights, and which names may point at files on the server.

Every tab, endpoint and command asks here; nothing else decides.

- **Change** a run (stop, resume, delete) and **publish** it (push, download): its owner alone, anywhere (a run
  started from the command line with ``--owner`` stays that owner's).
- **Use** a run (chat with it, evaluate it, read its eval rows, its log, its config, its dataset's name, where
  its files are, why it failed): its owner on a shared Space, where a tuned model recites its owner's training
  rows; off a Space everything is the machine's one user's.
- **Watch** a run (its progress and losses): anyone.
- A run **has weights** when it completed, or was stopped and saved them.
- On a shared Space nobody names a file or folder of the server: models are catalogue names or Hub ids, datasets
  are saved names (or uploads), the local LLM is the built-in test model. Off a Space, paths are the user's own.

A "run" here is anything with ``id``, ``status()`` and ``output_dir()`` (``garage.jobs.store.Run``).
"""

from __future__ import annotations

from pathlib import Path

from garage import paths
from garage.errors import GarageError

ACTIONS = ("change", "publish", "use")
WITH_WEIGHTS = ("completed", "stopped")
REFUSALS = {
    "change": "Run {id} belongs to another user: you can watch it, not change it.",
    "publish": "Run {id} belongs to another user: only its owner can publish or download it.",
    "use": "Run {id} belongs to another user: its answers, eval rows and evaluation are theirs to see. Pick one of "
           "your runs.",
}


def owns(status: dict, user: str | None) -> bool:
    return user is not None and status.get("owner") == user


def sees_private(status: dict, user: str | None) -> bool:
    """Whether ``user`` may use a run and see its private parts (``None``: the command line, on its own machine)."""
    return not paths.shared() or owns(status, user)


def may(action: str, status: dict, user: str | None) -> bool:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return sees_private(status, user) if action == "use" else owns(status, user)


def require(action: str, run, user: str | None):
    """``run`` when ``user`` may do ``action`` with it; else a GarageError that says whose it is."""
    if not may(action, run.status(), user):
        raise GarageError(REFUSALS[action].format(id=run.id))
    return run


def has_weights(run, status: dict | None = None) -> bool:
    """A run that completed, or was stopped and saved what it had learnt."""
    status = run.status() if status is None else status
    return status.get("state") in WITH_WEIGHTS and run.output_dir() is not None


def require_weights(run) -> None:
    if run.output_dir() is None:
        raise GarageError(f"Run {run.id} has no trained weights yet ({run.status().get('state')}). Wait for it "
                          "to complete, or pick another run.")


# --- names that could be paths on the server ------------------------------------------------------------------

def server_paths_allowed() -> bool:
    """Off a shared Space a path names the machine's one user's files; on one it could name anyone's."""
    return not paths.shared()


def looks_like_path(text: str) -> bool:
    text = str(text).strip()
    return text.startswith(("/", "~", ".", "\\")) or "\\" in text or text.count("/") > 1 or Path(text).exists()


def refuse_server_folder(name: str) -> None:
    """On a shared Space a model is named (catalogue name or Hub id), never a folder on the server: a folder may be
    another user's run (its adapter, checkpoint or full weights) or files that are nobody's business. The same
    message for every folder-like name, so it tells nothing of what exists."""
    text = str(name).strip()
    if not server_paths_allowed() and looks_like_path(text):
        raise GarageError(f"On a shared Space the model is a catalogue name or a Hub id (org/name), not a folder on "
                          f"the server: {text!r}. Run the app on your own machine (python app.py) to train from a "
                          "local folder.")


def refuse_dataset_path(text: str, *, hub_id: bool) -> None:
    """A dataset typed by name on a shared Space must be a Hub id (``hub_id``: it looks like owner/name), not a
    path: files come as uploads."""
    if not server_paths_allowed() and (Path(str(text).strip()).exists() or not hub_id):
        raise GarageError(f"'{str(text).strip()}' is not a Hub dataset id (it looks like owner/name, e.g. "
                          "openai/gsm8k). To use a file, upload it.")


def dataset_file_allowed(ref: str) -> bool:
    """Whether a dataset reference that is not a saved name may be read as a file of the server."""
    return server_paths_allowed() and Path(str(ref).strip()).is_file()


def refuse_local_model_folder(test_model: str) -> None:
    """The local LLM backend on a shared Space runs only the built-in test model: a folder may hold another user's
    fine-tuned weights."""
    if not server_paths_allowed():
        raise GarageError("On a shared Space the local backend runs only the built-in test model "
                          f"({test_model}); use Gemini or an OpenAI-compatible server, or run the app on your own "
                          "machine for a local model folder.")
