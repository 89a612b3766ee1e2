"""The calls the UI, the API and the CLI make: look at a source, then save it."""

from __future__ import annotations

import copy
import hashlib
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

from garage.data import formats, loaders, stats, store
from garage.errors import GarageError


def prepare(source: Any, *, hub_config: str | None = None, hub_split: str = "train",
            mapping: dict | None = None) -> formats.Normalised:
    """Load a file / stream / Hub dataset and normalise it (all rows)."""
    records, _ = loaders.load_source(source, hub_config=hub_config, hub_split=hub_split)
    return formats.normalise(records, mapping or None)


def _source_label(source: Any, hub_config: str | None, hub_split: str) -> str:
    if hasattr(source, "read"):
        return Path(str(getattr(source, "name", "upload"))).name
    text = str(source).strip()
    if not Path(text).exists() and loaders.looks_like_hub_id(text):
        return f"hf://{text}" + (f" ({hub_config})" if hub_config else "") + f" [{hub_split or 'train'}]"
    return Path(text).name


def _report(data: formats.Normalised, tokenizer: Any, max_seq_length: int | None, n_rows: int) -> dict:
    summary = stats.dataset_stats(store.readable(data.conversations), tokenizer, max_seq_length,
                                  dropped=data.dropped, repaired=data.repaired)
    warnings = list(data.warnings)
    if summary["tokens"]["method"] == "estimate":
        warnings.append("Token counts are an estimate (about 4 characters per token): choose a model to count "
                        "with its tokenizer.")
    if summary["tokens"].get("template_errors"):
        warnings.append(f"The model's chat template refused {summary['tokens']['template_errors']} row(s).")
    if summary["duplicates"]:
        warnings.append(f"{summary['duplicates']} row(s) are exact duplicates of an earlier row.")
    if summary["truncated"]:
        warnings.append(f"{summary['truncated']} of {summary['rows']} rows are longer than max_seq_length "
                        f"({summary['max_seq_length']} tokens) and will be truncated; raise max_seq_length to "
                        "keep them whole.")
    guess = data.guess
    return {
        "format": data.format,
        "kind": data.kind,
        "format_description": formats.FORMATS.get(data.format, data.format),
        "mapping": dict(data.mapping),
        "columns": list(guess.columns) if guess else [],
        "confidence": guess.confidence if guess else 1.0,
        "ambiguous": bool(guess and guess.ambiguous),
        "alternatives": list(guess.alternatives) if guess else [],
        "total": data.total,
        "rows": data.rows,
        "dropped": dict(data.dropped),
        "repaired": dict(data.repaired),
        "stats": summary,
        "first_rows": data.conversations[:max(0, int(n_rows))],
        "warnings": warnings,
    }


# The last few previews of local files: key -> (report, weak reference to the tokenizer that counted its tokens).
_REPORTS: OrderedDict = OrderedDict()
_REPORTS_KEPT = 8
_reports_lock = threading.Lock()


def _file_key(source: Any) -> tuple | None:
    """A local file's name, size and content digest (a re-upload of the same bytes matches too); None for a stream,
    a Hub id, or a file the loader would refuse (it then says why, as always)."""
    if not isinstance(source, (str, Path)) or not str(source).strip():
        return None
    path = Path(str(source).strip())
    try:
        if not path.is_file() or path.stat().st_size > loaders.max_upload_bytes():
            return None
        with path.open("rb") as handle:
            return path.name, path.stat().st_size, hashlib.file_digest(handle, "blake2b").hexdigest()
    except (OSError, GarageError):
        return None


def _cache_key(source: Any, tokenizer: Any, mapping: dict | None, *settings: Any) -> tuple | None:
    file = _file_key(source)
    if file is None:
        return None
    key = (file, id(tokenizer), tuple(sorted((mapping or {}).items())), *settings)
    try:
        hash(key)
    except TypeError:  # a mapping of odd values: just not cached
        return None
    return key


def _cached(key: tuple | None, tokenizer: Any) -> dict | None:
    with _reports_lock:
        hit = _REPORTS.get(key) if key else None
        if not hit or hit[1]() is not tokenizer:  # none, or that tokenizer is gone and another took its id()
            return None
        _REPORTS.move_to_end(key)
    return copy.deepcopy(hit[0])


def _keep(key: tuple | None, report: dict, tokenizer: Any) -> None:
    if not key:
        return
    try:
        holder = (lambda: None) if tokenizer is None else weakref.ref(tokenizer)
    except TypeError:  # a tokenizer without weak references: not cached
        return
    with _reports_lock:
        _REPORTS[key] = (copy.deepcopy(report), holder)
        while len(_REPORTS) > _REPORTS_KEPT:
            _REPORTS.popitem(last=False)


def preview(source: Any, *, hub_config: str | None = None, hub_split: str = "train", mapping: dict | None = None,
            tokenizer: Any = None, max_seq_length: int | None = None, n_rows: int = 20) -> dict:
    """Load and normalise ``source`` (file path, open stream, or Hub id ``owner/name``) and describe it.

    Keys: format, mapping, rows, dropped (reason -> count), stats, first_rows (normalised), warnings;
    also kind, format_description, columns, confidence, ambiguous, alternatives, total, repaired, source.
    A local file previewed again with the same bytes and settings is not read or counted again.
    """
    key = _cache_key(source, tokenizer, mapping, hub_config, hub_split, max_seq_length, n_rows)
    report = _cached(key, tokenizer)
    if report is None:
        data = prepare(source, hub_config=hub_config, hub_split=hub_split, mapping=mapping)
        report = _report(data, tokenizer, max_seq_length, n_rows)
        _keep(key, report, tokenizer)
    report["source"] = _source_label(source, hub_config, hub_split)
    return report


def import_dataset(user: str, name: str, source: Any, *, hub_config: str | None = None, hub_split: str = "train",
                   mapping: dict | None = None, tokenizer: Any = None, max_seq_length: int | None = None,
                   overwrite: bool = False) -> dict:
    """Load, normalise and save ``source`` as ``name`` in ``user``'s workspace; returns the saved meta."""
    data = prepare(source, hub_config=hub_config, hub_split=hub_split, mapping=mapping)
    summary = stats.dataset_stats(store.readable(data.conversations), tokenizer, max_seq_length,
                                  dropped=data.dropped, repaired=data.repaired)
    meta = store.save_dataset(user, name, data.conversations, source=_source_label(source, hub_config, hub_split),
                              format=data.format, overwrite=overwrite, stats=summary, mapping=data.mapping)
    meta["warnings"] = data.warnings
    return meta
