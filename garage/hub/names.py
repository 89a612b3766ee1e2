"""Repo names: a sensible default per run, and validation before any network call."""

from __future__ import annotations

import re
from pathlib import Path

from garage.errors import GarageError

WHAT = ("adapter", "merged", "gguf-q8_0", "gguf-f16", "gguf-q4_k_m")
WHAT_LABELS = {
    "adapter": "LoRA adapter",
    "merged": "Merged 16-bit model",
    "gguf-q8_0": "GGUF q8_0",
    "gguf-f16": "GGUF f16",
    "gguf-q4_k_m": "GGUF q4_k_m",
}
_ALIASES = {"lora": "adapter", "gguf": "gguf-q8_0", "q8_0": "gguf-q8_0", "f16": "gguf-f16",
            "q4_k_m": "gguf-q4_k_m", "full": "merged", "model": "merged"}


def _slug(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    text = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", text))
    return text[:40].strip("-.")


def dataset_label(dataset: str) -> str:
    """A short name for a run's dataset: the saved name, or a file's stem."""
    text = str(dataset or "").strip()
    if text.endswith((".jsonl", ".json", ".csv", ".parquet")) or "/" in text or "\\" in text:
        text = Path(text).stem
    return _slug(text) or "data"


def normalise_what(what) -> list[str]:
    """The artefacts to push, as a de-duplicated list in canonical order (a GarageError when none or unknown)."""
    if isinstance(what, str):
        what = [w for w in re.split(r"[,\s]+", what) if w]
    chosen = []
    for item in what or []:
        key = _ALIASES.get(str(item).strip().lower(), str(item).strip().lower())
        if key not in WHAT:
            raise GarageError(f"Unknown thing to push: {item!r}. Choose from: {', '.join(WHAT)}.")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise GarageError("Choose what to push: the LoRA adapter, the merged model and/or a GGUF file.")
    return [w for w in WHAT if w in chosen]


def repo_suffix(what=("adapter",)) -> str:
    """lora when the adapter is pushed, else merged, else GGUF."""
    chosen = normalise_what(what) if what else ["adapter"]
    return "lora" if "adapter" in chosen else "merged" if "merged" in chosen else "GGUF"


def default_repo_name(model: str, dataset: str, what=("adapter",), user: str | None = None) -> str:
    """``<user>/<base>-<dataset>-lora`` (or -merged / -GGUF, after what is pushed)."""
    suffix = repo_suffix(what)
    base = _slug(Path(str(model)).name if Path(str(model)).is_dir() else str(model).rsplit("/", 1)[-1]) or "model"
    room = 96 - (len(user) + 1 if user else 0) - len(suffix) - 1
    name = f"{f'{base}-{dataset_label(dataset)}'[:room].rstrip('-.')}-{suffix}"
    return f"{user}/{name}" if user else name


def validate_repo(repo: str) -> str:
    """The repo id, stripped; a GarageError naming the rule it breaks (no network call)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo = str(repo or "").strip()
    if repo.startswith(("http://", "https://")):
        repo = "/".join(repo.rstrip("/").split("/")[-2:])
    if not repo:
        raise GarageError("Give the repo a name, like 'your-name/my-gemma-lora'.")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise GarageError(f"'{repo}' is not a valid repo name: use 'user/name' (or just 'name'), with letters, "
                          "digits, '-', '_' and '.', at most 96 characters, not starting or ending with '-' or "
                          "'.', and without '--' or '..'.") from None
    if repo.endswith(".git"):
        raise GarageError(f"'{repo}' is not a valid repo name: it must not end with '.git'.")
    return repo
