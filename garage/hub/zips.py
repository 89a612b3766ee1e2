"""Files for the browser: the adapter as a zip, the merged model as a zip and GGUF (when small), the dataset as
JSONL.

They are written under the system temp folder (``<tmp>/garage-downloads/<run id>/``),
which Gradio may serve wherever ``GARAGE_HOME`` lives; each call replaces the last one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from garage import catalog
from garage.data.store import export_jsonl
from garage.errors import GarageError
from garage.files import link_or_copy
from garage.hub import card, export
from garage.hub.examples import run_conversations
from garage.hub.push import folder_size

STORED = (".safetensors", ".bin", ".gguf", ".png", ".model")  # already compressed or incompressible


def max_download_bytes() -> int:
    """Largest merged model offered as a zip (GARAGE_MAX_DOWNLOAD_MB, default 2048)."""
    try:
        return int(float(os.environ.get("GARAGE_MAX_DOWNLOAD_MB", "2048")) * 2**20)
    except ValueError:
        return 2048 * 2**20


def downloads_dir(run) -> Path:
    path = Path(tempfile.gettempdir()) / "garage-downloads" / run.id
    path.mkdir(parents=True, exist_ok=True)
    return path


def zip_folder(folder: Path, target: Path, *, root: str = "", skip: tuple = ()) -> Path:
    """Zip every file under ``folder`` into ``target`` (atomically), below ``root/`` inside the archive."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for path in sorted(Path(folder).rglob("*")):
                if not path.is_file() or path.name in skip:
                    continue
                arcname = str(Path(root) / path.relative_to(folder)) if root else str(path.relative_to(folder))
                method = zipfile.ZIP_STORED if path.suffix in STORED else zipfile.ZIP_DEFLATED
                archive.write(path, arcname, compress_type=method)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def adapter_zip(run, folder: Path | None = None) -> Path:
    """``<run id>-adapter.zip`` (in ``folder``, default the downloads folder): the adapter, its tokenizer,
    a model card and the loss curve."""
    out = Path(folder) if folder else downloads_dir(run)
    staging = Path(tempfile.mkdtemp(prefix="adapter-", dir=out))
    try:
        export.stage_adapter(run, staging)
        layout = {"adapter": ""}
        png = card.loss_png(run)
        if png:
            (staging / card.LOSS_PNG).write_bytes(png)
        (staging / "README.md").write_text(card.model_card(
            run, f"{run.id}-adapter", layout, has_loss_png=bool(png),
            examples_note="Example answers are added to the card when the model is pushed to the Hub."),
            encoding="utf-8")
        return zip_folder(staging, out / f"{run.id}-adapter.zip", root=f"{run.id}-adapter")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def merged_zip(run, progress=None) -> Path:
    """``<run id>-merged.zip`` when the merged model is under the download limit."""
    check_expected_size(run, "The merged model", BYTES_PER_PARAMETER["merged"])  # before minutes of merging
    folder = export.merged_dir(run, progress=progress)
    check_size("The merged model", folder_size(folder)[1], folder)
    return zip_folder(folder, downloads_dir(run) / f"{run.id}-merged.zip", root=f"{run.id}-merged",
                      skip=(export.MARKER,))


def gguf_download(run, quant: str = "q8_0", progress=None) -> Path:
    """The run's GGUF file (written on first use), when under the download limit: linked (or copied) into the
    downloads folder, which the browser may be served from wherever GARAGE_HOME lives."""
    check_expected_size(run, "The GGUF file", BYTES_PER_PARAMETER.get(quant, 2.0))  # before the merge and writing
    path = export.gguf_file(run, quant, progress=progress)
    check_size("The GGUF file", path.stat().st_size, path)
    target = downloads_dir(run) / path.name
    link_or_copy(path, target)  # two downloads at once: each replaces the file, neither fails
    return target


BYTES_PER_PARAMETER = {"merged": 2.0, "f16": 2.0, "q8_0": 1.07, "q4_k_m": 0.6}


def check_expected_size(run, what: str, bytes_per_parameter: float) -> None:
    """Refuse before the work when a catalogue model's size already says the file would be over the limit (a 12B
    merge takes minutes and 24 GB of disk to be refused after)."""
    info = catalog.known(run.config().model)
    if info is None:
        return  # a size is guessed only for catalogue models; the file's own size is checked after
    expected, limit = int(info.params_b * 1e9 * bytes_per_parameter), max_download_bytes()
    if expected > limit * 1.1:
        raise GarageError(f"{what} would be about {_size(expected)} ({info.params_b:g}B parameters), more than the "
                          f"{_size(limit)} offered as a browser download (GARAGE_MAX_DOWNLOAD_MB): push it to the "
                          "Hub instead, or export it with `python -m garage export` on the server.")


def check_size(what: str, size: int, where: Path) -> None:
    limit = max_download_bytes()
    if size > limit:
        raise GarageError(f"{what} is {_size(size)}, more than the {_size(limit)} offered as a browser download "
                          f"(GARAGE_MAX_DOWNLOAD_MB): push it to the Hub instead, or copy it from the server: {where}.")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def dataset_jsonl(run) -> Path:
    """``<run id>-dataset.jsonl``: the conversations the run trained on."""
    return export_jsonl(run_conversations(run), downloads_dir(run) / f"{run.id}-dataset.jsonl")
