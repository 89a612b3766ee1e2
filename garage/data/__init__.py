"""Data in: load a file or a Hub dataset, detect its format, turn it into conversations,
check it, describe it, and save it in the user's workspace.

    loaders   JSON / JSONL / CSV / Parquet files and Hub datasets -> rows (dicts)
    formats   detect the format, normalise rows to {"messages": [...]} (or {"text": ...})
    stats     token lengths, truncation, duplicates; the train/eval split
    store     saved datasets under datasets_dir(user)
    preview   what the UI and API call: preview(), import_dataset()
    rows      what jobs read: dataset_rows(), training_rows(), split_rows(), prompt_rows()

Cheap to import: pandas, pyarrow, datasets and transformers are imported inside the
functions that need them. Nothing here imports gradio.
"""

from garage.data.formats import (
    FORMATS,
    FormatGuess,
    Normalised,
    clean_conversation,
    detect_format,
    normalise,
)
from garage.data.loaders import (
    ACCEPTED_EXTENSIONS,
    load_file,
    load_hub,
    load_source,
    load_stream,
    looks_like_hub_id,
    max_upload_bytes,
)
from garage.data.preview import import_dataset, prepare, preview
from garage.data.rows import dataset_rows
from garage.data.stats import dataset_stats, split, token_lengths
from garage.data.store import (
    dataset_path,
    delete_dataset,
    export_jsonl,
    list_datasets,
    load_meta,
    load_saved,
    read_dataset_file,
    save_dataset,
)

__all__ = [
    "dataset_rows",
    "ACCEPTED_EXTENSIONS", "FORMATS", "FormatGuess", "Normalised", "clean_conversation", "dataset_path",
    "dataset_stats", "delete_dataset", "detect_format", "export_jsonl", "import_dataset", "list_datasets",
    "load_file", "load_hub", "load_meta", "load_saved", "load_source", "load_stream",
    "looks_like_hub_id", "max_upload_bytes", "normalise", "prepare", "preview", "read_dataset_file", "save_dataset",
    "split", "token_lengths",
]
