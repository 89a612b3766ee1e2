"""Reading rows in: JSON, JSONL, CSV, Parquet files and Hugging Face Hub datasets.

Every loader returns *records*: a list of plain ``dict`` rows, whatever the
columns. Working out what the columns mean is ``formats``' job. Every problem a
person can fix (empty file, broken JSON, wrong encoding, a file too big, a Hub
id that cannot be reached) is a ``GarageError`` that says where and what to do.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

from garage.errors import GarageError

ACCEPTED_EXTENSIONS = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")
DEFAULT_MAX_UPLOAD_MB = 200.0

# Keys of an object that usually hold the list of rows (synthetic-data-kit, exports, HF viewers).
_ROW_LIST_KEYS = ("qa_pairs", "data", "rows", "examples", "records", "items", "train", "samples",
                  "conversations", "messages", "cot_examples", "instances")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_PARQUET_MAGIC = b"PAR1"


# --- size limit --------------------------------------------------------------
def max_upload_bytes() -> int:
    """The largest file accepted, from ``GARAGE_MAX_UPLOAD_MB`` (default 200 MB)."""
    raw = os.environ.get("GARAGE_MAX_UPLOAD_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        raise GarageError(f"GARAGE_MAX_UPLOAD_MB must be a number of megabytes; got {raw!r}.") from None
    return int(mb * 1024 * 1024)


def _too_big(name: str, size: int | None, limit: int) -> GarageError:
    if size is None:
        size_txt = "larger than the limit"
    elif size >= 1024 * 1024:
        size_txt = f"{size / 1024 / 1024:.1f} MB"
    else:
        size_txt = f"{size / 1024:.1f} KB"
    return GarageError(
        f"{name} is {size_txt}, above the upload limit of {round(limit / 1024 / 1024, 3):g} MB. "
        "Upload a smaller file (a sample, or the file split in parts), or, if you run Gemma Garage "
        "yourself, raise the limit with the GARAGE_MAX_UPLOAD_MB environment variable."
    )


def read_capped(stream: BinaryIO, limit: int | None = None, name: str = "The upload") -> bytes:
    """Read a binary stream, refusing it once it passes ``limit`` bytes (never reads more)."""
    limit = max_upload_bytes() if limit is None else limit
    data = stream.read(limit + 1)
    if isinstance(data, str):  # a text stream: measure it as UTF-8
        data = data.encode("utf-8")
    if len(data) > limit:
        raise _too_big(name, None, limit)
    return data


# --- text decoding -----------------------------------------------------------
def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is fine); anything else says where it broke."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise GarageError(
            f"{name} is saved as UTF-16 text; Gemma Garage reads UTF-8. Save it again as UTF-8 "
            "(in Excel: Save As > 'CSV UTF-8'; in a text editor: Encoding > UTF-8) and upload it again."
        )
    if b"\x00" in data[:4096]:  # no text format holds NUL bytes: an encoding would not help
        raise GarageError(f"{name} is not a text file (it holds binary bytes): upload JSON, JSONL or CSV text, or "
                          "Parquet under a .parquet name.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line = data.count(b"\n", 0, offset) + 1
        bad = data[offset:offset + 1].hex()
        raise GarageError(
            f"{name} is not UTF-8 text: byte {offset} (line {line}) is 0x{bad}, which is not valid UTF-8 "
            "(the file is probably in Latin-1 / Windows-1252). Save it again as UTF-8 (in Excel: Save As > "
            "'CSV UTF-8'; in a text editor: Encoding > UTF-8) and upload it again."
        ) from None


# --- JSON / JSONL ------------------------------------------------------------
def _is_turn_list(value: Any) -> bool:
    """A list of chat turns: dicts with role/content or from/value."""
    return (isinstance(value, list) and bool(value) and all(isinstance(t, dict) for t in value)
            and all(({"role", "from"} & set(t)) and ({"content", "value", "text"} & set(t)) for t in value))


def _rows_from_json(value: Any, name: str) -> list[dict]:
    """Rows from a parsed JSON document: a list, or an object holding the list."""
    if isinstance(value, dict):
        if any(_is_turn_list(value.get(k)) for k in ("messages", "conversations")):
            return [value]  # one conversation on its own
        lists = {k: v for k, v in value.items()
                 if isinstance(v, list) and v and all(isinstance(i, (dict, list)) for i in v)}
        if not lists:
            empty = next((k for k in _ROW_LIST_KEYS if value.get(k) == []), None)
            if empty:
                raise GarageError(f"{name} holds no rows: its '{empty}' list is empty.")
            return [value]  # a single row written as an object
        key = next((k for k in _ROW_LIST_KEYS if k in lists), None)
        if key is None:
            key = next((k for k in lists if k.lower() in _ROW_LIST_KEYS), None)
        if key is None:
            if len(lists) > 1:
                raise GarageError(
                    f"{name} is a JSON object with several lists ({', '.join(lists)}); it is not clear which one "
                    "holds the rows. Save the rows as a JSON array (or JSONL, one object per line), or put "
                    "them under a 'data' key."
                )
            key = next(iter(lists))
        value = lists[key]
    if not isinstance(value, list):
        raise GarageError(
            f"{name} holds a JSON {type(value).__name__}, not a list of rows. Accepted: an array of objects "
            '([{"question": ..., "answer": ...}, ...]), an object holding that array (e.g. {"data": [...]} or '
            "synthetic-data-kit's {\"qa_pairs\": [...]}), or JSONL (one object per line)."
        )
    if not value:
        raise GarageError(f"{name} holds no rows: the JSON array is empty.")
    rows = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            rows.append(item)
        elif _is_turn_list(item):
            rows.append({"messages": item})
        elif isinstance(item, str):
            rows.append({"text": item})
        else:
            raise GarageError(
                f"{name}: item {i + 1} of the JSON array is a {type(item).__name__}, not an object. "
                'Each row must be an object such as {"question": ..., "answer": ...}.'
            )
    return rows


def parse_json(text: str, name: str) -> list[dict]:
    """A JSON document; falls back to JSONL when it is several objects one per line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return parse_jsonl(text, name)
        raise GarageError(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
            "Fix the file there (a missing comma, quote or bracket is the usual cause) and upload it again. "
            "Accepted: a JSON array of objects, or JSONL with one object per line."
        ) from None
    return _rows_from_json(value, name)


def parse_jsonl(text: str, name: str) -> list[dict]:
    """One JSON object per line; blank lines are skipped; errors name the line."""
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array saved with a .jsonl name
        return parse_json(text, name)
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GarageError(
                f"{name}: line {number} is not valid JSON ({exc.msg} at column {exc.colno}). In a JSONL file "
                'every line must be one complete JSON object, e.g. {"question": "...", "answer": "..."}. '
                f"Fix or remove line {number} and upload the file again."
            ) from None
        if isinstance(value, dict):
            rows.append(value)
        elif _is_turn_list(value):
            rows.append({"messages": value})
        else:
            raise GarageError(
                f"{name}: line {number} is a JSON {type(value).__name__}, not an object. In a JSONL file "
                'every line must be one JSON object, e.g. {"question": "...", "answer": "..."}.'
            )
    if not rows:
        raise GarageError(f"{name} is empty: it has no rows. Upload a file with at least one example.")
    return rows


# --- CSV ---------------------------------------------------------------------
def parse_csv(text: str, name: str, delimiter: str | None = None) -> list[dict]:
    """A header line then rows; a row with the wrong number of fields names its line."""
    csv.field_size_limit(1 << 30)
    if delimiter is None:
        first = text.split("\n", 1)[0]
        delimiter = ","
        if "," not in first:
            delimiter = next((d for d in ("\t", ";", "|") if d in first), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows = []
    line_end = 0
    try:
        for fields in reader:
            line_start, line_end = line_end + 1, reader.line_num
            if not fields or all(not f.strip() for f in fields) and len(fields) <= 1:
                continue  # blank line
            if header is None:
                header = _unique_header(fields)
                continue
            if len(fields) != len(header):
                where = f"line {line_start}" if line_start == line_end else f"lines {line_start}-{line_end}"
                raise GarageError(
                    f"{name}: the row on {where} has {len(fields)} field(s) but the header has {len(header)} "
                    f"({', '.join(header)}). A text containing the separator {delimiter!r}, a quote or a line "
                    "break must be wrapped in double quotes (\"...\"), with inner quotes doubled (\"\"). "
                    f"Fix {where} and upload the file again."
                )
            rows.append(dict(zip(header, fields)))
    except csv.Error as exc:
        raise GarageError(
            f"{name}: the CSV could not be read near line {reader.line_num} ({exc}). Check the quotes on "
            "that line and upload the file again."
        ) from None
    if header is None:
        raise GarageError(f"{name} is empty: it has no header line and no rows.")
    if not rows:
        raise GarageError(f"{name} has a header ({', '.join(header)}) but no rows. Add at least one example.")
    return rows


def _unique_header(fields: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    header = []
    for i, f in enumerate(fields):
        f = f.strip() or f"column_{i + 1}"
        if f in seen:
            seen[f] += 1
            f = f"{f}_{seen[f]}"
        else:
            seen[f] = 1
        header.append(f)
    return header


# --- Parquet -----------------------------------------------------------------
def parse_parquet(data: bytes | str | Path, name: str) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pa.BufferReader(data) if isinstance(data, bytes) else str(data)
        table = pq.read_table(source)
    except (pa.ArrowException, OSError) as exc:
        raise GarageError(
            f"{name} is not a readable Parquet file ({exc}). Export it again as Parquet, or upload "
            "JSON, JSONL or CSV instead."
        ) from None
    if table.num_rows == 0:
        raise GarageError(f"{name} is empty: the Parquet table has no rows.")
    return table.to_pylist()


# --- files ---------------------------------------------------------------------
def _kind_of(name: str, head: bytes) -> str:
    ext = Path(name).suffix.lower()
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext in (".json", ".csv", ".tsv", ".parquet"):
        return ext[1:]
    if not ext:  # no extension: tell by the first bytes
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
        if start in (b"[", b"{"):
            return "json"
    raise GarageError(
        f"{Path(name).name}: files ending in {ext or '(no extension)'} are not accepted. Accepted: "
        f"{', '.join(ACCEPTED_EXTENSIONS)} (JSON, JSON Lines, CSV/TSV, Parquet), or a Hugging Face Hub "
        "dataset id such as 'openai/gsm8k'."
    )


def parse_bytes(data: bytes, name: str) -> list[dict]:
    """Rows from the bytes of a file called ``name`` (its type from extension and content)."""
    display = Path(name).name or "The upload"
    kind = _kind_of(name, data[:8])
    if not data.strip():
        raise GarageError(f"{display} is empty. Upload a file with at least one example.")
    if kind == "parquet":
        return parse_parquet(data, display)
    text = decode_text(data, display)
    if not text.strip():
        raise GarageError(f"{display} is empty. Upload a file with at least one example.")
    if kind == "json":
        return parse_json(text, display)
    if kind == "jsonl":
        return parse_jsonl(text, display)
    return parse_csv(text, display, "\t" if kind == "tsv" else None)


def load_file(path: str | Path) -> list[dict]:
    """Rows of a local file; its size is checked against the limit before it is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise GarageError(f"File not found: {path}. Upload it again.") from None
    if path.is_dir():
        raise GarageError(f"{path} is a folder; choose a file ({', '.join(ACCEPTED_EXTENSIONS)}).")
    with path.open("rb") as handle:
        head = handle.read(8)
    _kind_of(path.name, head)  # refuse unsupported types before anything else
    limit = max_upload_bytes()
    if size > limit:
        raise _too_big(path.name, size, limit)
    with path.open("rb") as handle:
        data = read_capped(handle, limit, path.name)  # the file may have grown since stat()
    return parse_bytes(data, path.name)


def load_stream(stream: BinaryIO, name: str | None = None) -> list[dict]:
    """Rows of an open binary stream (an upload), read up to the size limit."""
    name = name or getattr(stream, "name", None) or "upload.jsonl"
    data = read_capped(stream, None, Path(str(name)).name)
    return parse_bytes(data, str(name))


# --- Hugging Face Hub ------------------------------------------------------------
def looks_like_hub_id(source: str) -> bool:
    """``owner/name`` or ``name``, and not a file name with an accepted extension."""
    source = source.strip()
    return bool(_HUB_ID.match(source)) and not source.lower().endswith(ACCEPTED_EXTENSIONS)


def load_hub(dataset_id: str, config: str | None = None, split: str = "train") -> list[dict]:
    """Rows of one split of a Hub dataset (``datasets.load_dataset``)."""
    import datasets

    dataset_id = dataset_id.strip()
    config = (config or "").strip() or None
    split = (split or "").strip() or "train"
    try:
        ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message a person can act on
        raise _hub_error(exc, dataset_id, config, split) from None
    if hasattr(ds, "to_list"):
        rows = ds.to_list()
    else:
        rows = list(ds)
    if not rows:
        raise GarageError(f"The split '{split}' of {dataset_id} has no rows. Choose another split.")
    return rows


def _hub_offline() -> bool:
    flags = [os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")]
    if any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001
        return False


def _hub_error(exc: Exception, dataset_id: str, config: str | None, split: str) -> GarageError:
    kind = type(exc).__name__
    text = str(exc)
    upload = "Uploading a file (JSON, JSONL, CSV or Parquet) works without the Hub."
    if "OfflineModeIsEnabled" in text or (_hub_offline() and isinstance(exc, (ConnectionError, OSError))):
        return GarageError(
            f"Could not load '{dataset_id}': the Hugging Face Hub is unreachable because this app runs in "
            "offline mode (HF_HUB_OFFLINE=1) and the dataset is not in the local cache. " + upload
        )
    if kind in ("GatedRepoError",) or "gated" in text.lower():
        return GarageError(
            f"'{dataset_id}' is a gated dataset: accept its terms on huggingface.co and sign in "
            "(or set HF_TOKEN), then try again. " + upload
        )
    if kind in ("DatasetNotFoundError", "RepositoryNotFoundError", "FileNotFoundError", "EntryNotFoundError") \
            or "doesn't exist" in text or "not found" in text.lower():
        return GarageError(
            f"The Hub dataset '{dataset_id}' does not exist, or is private and you are not signed in. Check the "
            "id on huggingface.co (it looks like 'owner/name', e.g. 'openai/gsm8k'). " + upload
        )
    if "Unknown split" in text or "split" in text.lower() and isinstance(exc, (ValueError, KeyError)):
        return GarageError(f"'{dataset_id}' has no split '{split}'. {_short(text)} Choose one of its splits.")
    if "Config name is missing" in text or "BuilderConfig" in text:
        return GarageError(f"'{dataset_id}' needs a configuration name (subset). {_short(text)}")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or "connect" in text.lower() \
            or "timed out" in text.lower():
        return GarageError(
            f"Could not reach the Hugging Face Hub to load '{dataset_id}' ({_short(text)}). Check the internet "
            "connection and try again. " + upload
        )
    return GarageError(f"Could not load the Hub dataset '{dataset_id}' ({kind}: {_short(text)}). " + upload)


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


# --- one entry point -------------------------------------------------------------
def load_source(source: Any, *, hub_config: str | None = None, hub_split: str = "train") -> tuple[list[dict], str]:
    """Rows of a file path, an open stream or a Hub id; also says which (``"file"`` or ``"hub"``)."""
    if hasattr(source, "read"):
        return load_stream(source), "file"
    if isinstance(source, Path):
        return load_file(source), "file"
    if not isinstance(source, str) or not source.strip():
        raise GarageError("Choose a file to upload, or type a Hugging Face Hub dataset id (e.g. 'openai/gsm8k').")
    text = source.strip()
    if Path(text).exists():
        return load_file(text), "file"
    if looks_like_hub_id(text):
        return load_hub(text, hub_config, hub_split), "hub"
    if text.lower().endswith(ACCEPTED_EXTENSIONS) or os.sep in text or text.startswith("."):
        raise GarageError(f"File not found: {text}. Upload it again, or check the path.")
    raise GarageError(
        f"'{text}' is neither a file nor a Hugging Face Hub dataset id. A Hub id looks like 'owner/name' "
        f"(e.g. 'openai/gsm8k'); a file ends in {', '.join(ACCEPTED_EXTENSIONS)}."
    )
