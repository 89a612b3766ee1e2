"""Where things live on disk.

Everything that must survive a reload or a restart lives under one home folder
(``GARAGE_HOME``; on a Space with persistent storage, ``/data/garage``):

    <home>/users/<user>/datasets/<name>/   a saved dataset (data.jsonl + meta.json)
    <home>/users/<user>/augment/<job>/     documents turned into Q/A pairs
    <home>/runs/<run_id>/                  one training run (owner in status.json)
    <home>/models/tiny-gemma-3/            the offline test model, built on demand
    <home>/cache/                          compiled kernels (Unsloth's bundles, Triton), so a restart starts warm
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from garage.errors import GarageError

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def home() -> Path:
    """The root folder for all persistent state (created on first use)."""
    env = os.environ.get("GARAGE_HOME")
    if env:
        root = Path(env)
    elif Path("/data").is_dir() and os.access("/data", os.W_OK) and on_space():
        root = Path("/data/garage")
    else:
        root = Path.cwd() / "garage_home"
    root.mkdir(parents=True, exist_ok=True)
    return root


def on_space() -> bool:
    """Running on a Hugging Face Space (it sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def space_sign_in() -> bool:
    """Hugging Face sign-in is served here: a Space (SYSTEM=spaces) whose README asks for it (``hf_oauth: true``),
    so that the Hub set OAUTH_CLIENT_ID and its kin. A copy of the app with SPACE_ID alone (a Docker Space without
    OAuth, a rehearsal of Space mode) has none: Gradio would mock sign-in with the machine's own Hub login there,
    and fail to start without one."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("OAUTH_CLIENT_ID"))


def shared() -> bool:
    """A Space shared by several people, each with a private workspace (GARAGE_SINGLE_USER=1 turns it off)."""
    return on_space() and os.environ.get("GARAGE_SINGLE_USER") != "1"


MAX_NAME = 80


def check_name(name: str, what: str = "dataset") -> str:
    """``name`` stripped when it is a name and not a path: at most MAX_NAME characters, no '/' or '\\', no control
    characters, not starting with '.'; else a GarageError saying what is accepted. (A name is shown as given, so
    '../../tmp/x', even saved in a safe folder, would read like a path.)"""
    name = str(name or "").strip()
    if not name:
        raise GarageError(f"Give the {what} a name.")
    why = ("it is longer than 80 characters" if len(name) > MAX_NAME
           else "it starts with '.'" if name.startswith(".")
           else "it holds '/' or '\\'" if "/" in name or "\\" in name
           else "it holds a control character" if any(unicodedata.category(c)[0] == "C" for c in name) else None)
    if why:
        shown = name[:40].encode("unicode_escape").decode() + ("..." if len(name) > 40 else "")
        raise GarageError(f"A {what} name is at most {MAX_NAME} characters, without '/' or '\\', control characters "
                          f"or a leading '.': '{shown}' is not one ({why}).")
    return name


def safe_name(name: str, fallback: str = "item") -> str:
    """A file-system-safe version of a user-supplied name (no traversal)."""
    cleaned = _SAFE.sub("-", name.strip()).strip(".-")
    return cleaned[:80] or fallback


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_dir(user: str) -> Path:
    """The private workspace of one user (signed-in name or anonymous id); made by the first write into it, not by
    a look (on a Space every cookie-less API call is a new anonymous user)."""
    return home() / "users" / safe_name(user, "anonymous")


def datasets_dir(user: str, *, create: bool = False) -> Path:
    """``user``'s saved datasets; ``create`` for a writer (a look makes no folder)."""
    folder = user_dir(user) / "datasets"
    return _made(folder) if create else folder


TENSORBOARD = "tensorboard"  # a run folder's TensorBoard event files (report_to: tensorboard), shipped with its adapter


def runs_dir() -> Path:
    return _made(home() / "runs")


def models_dir() -> Path:
    return _made(home() / "models")


def cache_dir() -> Path:
    return _made(home() / "cache")
