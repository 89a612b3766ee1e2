"""A run's trained weights in the forms people use, staged on disk under ``runs/<id>/exports/``.

    exports/merged/            base + adapter merged (PEFT merge_and_unload), plain transformers loads it
    exports/gguf/<name>-Q8_0.gguf   GGUF of the merged (or fully fine-tuned) weights

A full fine-tune's own ``model/`` folder already is the "merged" model. Exports are
rebuilt when the adapter changed (a resumed run) and reused otherwise. Nothing here
touches the network or a token.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

from garage import catalog, device, paths
from garage.device import has_gpu
from garage.errors import GarageError
from garage.hub import gguf_export
from garage.hub.progress import Progress, say
from garage.infer.engine import get_engine
from garage.models.loading import explain_load_error, import_unsloth, model_source
from garage.offline_models import folder_fingerprint

ADAPTER_SKIP = ("README.md",)  # PEFT's placeholder card: the pushed repo gets our own
MARKER = "garage_export.json"
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def base_hub_id(model: str) -> str | None:
    """The base model's Hub id, or None where the Hub does not know the base: a local folder that is not a Hub
    cache snapshot, or the built-in test model. A card's ``base_model`` must be a Hub id, or the Hub refuses it."""
    text = str(model).strip()
    if Path(text).is_dir():
        return _snapshot_repo(Path(text))
    hub_id = catalog.resolve(text).hub_id
    return hub_id if HUB_ID.fullmatch(hub_id) else None


def _snapshot_repo(folder: Path) -> str | None:
    """``org/name`` of a folder in the Hugging Face cache (.../models--org--name/snapshots/<commit>)."""
    for part in folder.resolve().parts:
        if part.startswith("models--") and part.count("--") >= 2:
            return part[len("models--"):].replace("--", "/", 1)
    return None


def base_ref(model: str) -> str:
    """How text names the base: its Hub id, else the local folder's (or the test model's) name."""
    text = str(model).strip()
    return base_hub_id(text) or (Path(text).name if Path(text).is_dir() else text)


_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


def run_lock(run) -> threading.RLock:
    """One lock per run: two exports or pushes of the same run take turns (they share its exports/)."""
    with _locks_guard:
        return _locks.setdefault(str(run.path), threading.RLock())


def exports_dir(run) -> Path:
    path = run.path / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_full(run) -> bool:
    output = run.output_dir()
    return output is not None and output.name == "model"


def require_weights(run) -> Path:
    """The run's trained weights folder; a GarageError when the run has none (yet)."""
    state = run.status().get("state")
    output = run.output_dir()
    if output is None:
        raise GarageError(f"Run {run.id} has no trained weights ({state}). Wait until it completes, or pick "
                          "another run.")
    return output


def require_adapter(run) -> Path:
    require_weights(run)
    if is_full(run):
        raise GarageError(f"Run {run.id} is a full fine-tune: it has no LoRA adapter. Choose the merged model "
                          "(its full weights) or GGUF instead.")
    return run.adapter_dir


def stage_adapter(run, dest: Path) -> Path:
    """Copy the adapter (weights, config, tokenizer) into ``dest``, naming the base by its Hub id; with the run's
    TensorBoard logs (report_to: tensorboard) in ``tensorboard/``, where the Hub shows them as training metrics."""
    source = require_adapter(run)
    dest.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in ADAPTER_SKIP:
            shutil.copy2(path, dest / path.name)
    logs = Path(run.path) / paths.TENSORBOARD
    if logs.is_dir():
        shutil.copytree(logs, dest / paths.TENSORBOARD, dirs_exist_ok=True)
    config_path = dest / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_ref(run.config().model)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return dest


def _fingerprint(folder: Path) -> str:
    return folder_fingerprint(folder)


def merged_dir(run, progress: Progress | None = None) -> Path:
    """The merged 16-bit model of a run (built on first use, rebuilt when the adapter changed)."""
    with run_lock(run):
        return _merged_dir(run, progress)


def _merged_dir(run, progress: Progress | None) -> Path:
    output = require_weights(run)
    if is_full(run):
        return output
    target = exports_dir(run) / "merged"
    fingerprint = _fingerprint(output)
    marker = target / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("adapter") == fingerprint:
                return target
        except json.JSONDecodeError:
            pass
    say(progress, 0.05, "Loading the base model to merge the adapter into")
    staging = target.with_name(f".merged-{os.getpid()}-{int(time.time() * 1000)}")
    try:
        device.call(_merge, run, output, staging, seconds=180)  # on ZeroGPU in a GPU call, Unsloth imported first
        (staging / MARKER).write_text(json.dumps({"adapter": fingerprint, "run": run.id,
                                                  "base": base_ref(run.config().model)}), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    run.log(f"Merged the adapter into {base_ref(run.config().model)}: {target}")
    say(progress, 1.0, "Merged model ready")
    return target


def _merge(run, adapter: Path, staging: Path) -> None:
    """Load the base fresh in its own (16-bit) dtype, apply the adapter, merge_and_unload, save."""
    import_unsloth()  # before transformers, as everywhere else in the app
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = run.config().model
    if has_gpu():
        get_engine().unload()  # one base copy at a time on the GPU
    source = model_source(name)
    try:
        base = AutoModelForCausalLM.from_pretrained(source, dtype="auto", device_map="auto" if has_gpu() else None)
    except Exception as exc:
        raise explain_load_error(name, exc) from exc
    model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    model.save_pretrained(str(staging), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(staging))
    _copy_sentencepiece(source, staging)
    del model, base


def _copy_sentencepiece(source: str, staging: Path) -> None:
    """Keep the base's SentencePiece tokenizer.model next to the merged weights (GGUF needs it)."""
    if (staging / "tokenizer.model").exists():
        return
    found = Path(source) / "tokenizer.model"
    if not found.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, "tokenizer.model")
            found = Path(cached) if isinstance(cached, str) else found
        except Exception:
            return
    if found.is_file():
        shutil.copy2(found, staging / "tokenizer.model")


def gguf_name(label: str, quant: str) -> str:
    return f"{label}-{quant.upper()}.gguf"


def gguf_file(run, quant: str, *, label: str = "", progress: Progress | None = None) -> Path:
    """A GGUF file of the run's merged weights (rebuilt when the merged model is newer)."""
    reason = gguf_export.unavailable_reason(quant)
    if reason:
        raise GarageError(reason)
    with run_lock(run):
        return _gguf_file(run, quant, label, progress)


def _gguf_file(run, quant: str, label: str, progress: Progress | None) -> Path:
    gguf_export.check_family(run.config().model)
    source = merged_dir(run, progress=lambda f, m: say(progress, 0.5 * f, m)) if not is_full(run) \
        else require_weights(run)
    gguf_export.check_supported(source)
    label = label or run.id
    out = exports_dir(run) / "gguf" / gguf_name(label, quant)
    newest = max(p.stat().st_mtime for p in source.iterdir() if p.is_file())
    if out.is_file() and out.stat().st_mtime >= newest:
        return out
    cfg = run.config()
    gguf_export.write_gguf(source, out, quant, name=label, base_model=base_ref(cfg.model),
                           tags=("gemma", "gemma-garage", "gguf"),
                           progress=lambda f, m: say(progress, 0.5 + 0.5 * f, m))
    run.log(f"Wrote GGUF {quant}: {out}")
    return out
