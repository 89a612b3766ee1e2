"""The model catalogue: what each Gemma is, how big, what it needs, how to talk to it.

Any other Hub id or local folder is accepted too (``resolve`` returns a generic entry for it). The settings
each size trains with are ``garage.train.presets``'. Memory figures are estimates for training with batch size
1-2 and sequence length ~1k: weights + gradients + optimizer state + a margin for activations, in GiB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from garage.offline_models import TINY_NAME

# (instruction part, response part) of each chat-template family: what responses-only
# training masks on, and how the template marks whose turn it is.
TURN_MARKERS = {
    "gemma-3": ("<start_of_turn>user\n", "<start_of_turn>model\n"),
    "gemma-3n": ("<start_of_turn>user\n", "<start_of_turn>model\n"),
    "gemma2": ("<start_of_turn>user\n", "<start_of_turn>model\n"),
    "gemma-4": ("<|turn>user\n", "<|turn>model\n"),
}


@dataclass(frozen=True)
class ModelInfo:
    name: str                 # what the user picks (catalogue key)
    hub_id: str               # where the weights live (or a local folder)
    params_b: float           # parameters, in billions
    family: str               # gemma-3, gemma-3n, gemma-4, gemma2, other
    chat_template: str | None  # Unsloth chat-template name; None = the tokenizer's own
    instruct: bool = True
    mirror: str | None = None  # an ungated copy (Unsloth's mirrors)
    label: str = ""

    @property
    def gated(self) -> bool:
        return self.hub_id.startswith("google/")

    def memory_gb(self, method: str) -> float:
        """Estimated GPU memory to train with ``method`` (lora, qlora, full, grpo)."""
        n = self.params_b
        if method == "full":
            return round(16 * n + 2.0, 1)  # bf16 weights + grads, fp32 Adam moments, activations
        if method == "qlora":
            return round(0.65 * n + 0.2 * n + 1.5, 1)  # 4-bit weights + 16-bit LoRA paths + activations
        return round(2.0 * n + 0.3 * n + 1.5, 1)  # bf16 frozen weights + adapter state + activations


def _gemma3(size: str, params_b: float, instruct: bool = True) -> ModelInfo:
    kind = "it" if instruct else "pt"
    return ModelInfo(
        name=f"gemma-3-{size}-{kind}", hub_id=f"google/gemma-3-{size}-{kind}", params_b=params_b,
        family="gemma-3", chat_template="gemma-3", instruct=instruct,
        mirror=f"unsloth/gemma-3-{size}-{kind}",
        label=f"Gemma 3 {size.upper()} {'instruct' if instruct else 'pretrained'}")


_ENTRIES = [
    ModelInfo(name=TINY_NAME, hub_id=TINY_NAME, params_b=0.0017, family="gemma-3", chat_template=None,
              label="Tiny Gemma 3 (offline TEST model, random weights: it learns, but knows nothing)"),
    *[_gemma3(size, p, instruct) for size, p in (("270m", 0.27), ("1b", 1.0), ("4b", 4.3), ("12b", 12.2),
                                                 ("27b", 27.4)) for instruct in (True, False)],
    *[ModelInfo(name=f"gemma-3n-{size}-it", hub_id=f"google/gemma-3n-{size}-it", params_b=p, family="gemma-3n",
                chat_template="gemma-3n", mirror=f"unsloth/gemma-3n-{size}-it",
                label=f"Gemma 3n {size} instruct")
      for size, p in (("E2B", 5.4), ("E4B", 7.9))],
    *[ModelInfo(name=f"gemma-4-{size}-it", hub_id=f"google/gemma-4-{size}-it", params_b=p, family="gemma-4",
                chat_template="gemma-4", mirror=f"unsloth/gemma-4-{size}-it",
                label=f"Gemma 4 {size} instruct")
      for size, p in (("E2B", 5.1), ("E4B", 8.0), ("26B-A4B", 25.2), ("31B", 30.7))],
    ModelInfo(name="gemma-2-2b-it", hub_id="google/gemma-2-2b-it", params_b=2.6, family="gemma2",
              chat_template="gemma2", mirror="unsloth/gemma-2-2b-it", label="Gemma 2 2B instruct"),
]
CATALOG: dict[str, ModelInfo] = {m.name: m for m in _ENTRIES}
_BY_HUB_ID = {m.hub_id.lower(): m for m in _ENTRIES} | {m.mirror.lower(): m for m in _ENTRIES if m.mirror}


def known(name: str) -> ModelInfo | None:
    """The catalogue entry for a catalogue name, Hub id or mirror id; None for anything else (its size unknown)."""
    key = str(name).strip()
    return CATALOG.get(key) or _BY_HUB_ID.get(key.lower())


def resolve(name: str) -> ModelInfo:
    """The catalogue entry for a name, Hub id, mirror id or local folder."""
    key = name.strip()
    info = known(key)
    if info is not None:
        return info
    family = "other"
    lowered = key.lower()
    for fam in ("gemma-3n", "gemma-4", "gemma-3", "gemma-2"):
        if fam in lowered or fam.replace("-", "") in lowered:
            family = fam.replace("gemma-2", "gemma2")
            break
    return ModelInfo(name=key, hub_id=key, params_b=_guess_params(key), family=family, chat_template=None,
                     label=f"{key} ({'local folder' if Path(key).is_dir() else 'Hub model'})")


def _guess_params(name: str) -> float:
    """Read a size like '1b', '270m', 'E4B' out of a model name; 1B when there is none."""
    match = re.search(r"(\d+(?:\.\d+)?)([bm])\b", name.lower().replace("-", " ").replace("_", " "))
    if not match:
        return 1.0
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "m" else value


def model_choices() -> list[tuple[str, str]]:
    """(label, name) pairs for a dropdown, the offline test model first."""
    return [(f"{m.label} · {m.name}", m.name) for m in _ENTRIES]


def gated_help(model_id: str) -> str:
    """What to do when the Hub refuses a gated Gemma (401/403)."""
    info = resolve(model_id)
    text = (f"{model_id} is gated on the Hugging Face Hub. Open https://huggingface.co/{info.hub_id}, accept "
            "the Gemma licence, then sign in (or set HF_TOKEN) with the same account.")
    if info.mirror:
        text += f" Or pick the ungated mirror {info.mirror}."
    return text


def gpu_fit(name: str, method: str) -> str:
    """One line on whether the model and method fit this machine's GPU (empty-handed on CPU)."""
    info = resolve(name)
    need = info.memory_gb(method)
    try:
        import torch

        if not torch.cuda.is_available():
            return (f"No GPU found: training runs on the CPU (about {need} GiB would be needed on a GPU)."
                    + ("" if info.name == TINY_NAME else JOBS_HINT))
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
    except Exception:  # torch missing or broken: say what we can
        return f"About {need} GiB of GPU memory needed."
    verdict = "fits." if fits(need, total) else "does NOT fit (try QLoRA or a smaller model)." + JOBS_HINT
    return f"{info.name} with {method}: about {need} GiB needed, GPU has {total:.0f} GiB: {verdict}"


def fits(need_gib: float, total_gib: float) -> bool:
    """Whether a training that needs ``need_gib`` (``Model.memory_gb``) fits a GPU of ``total_gib``, leaving the
    CUDA context and fragmentation their share."""
    return need_gib <= total_gib * 0.92


def fits_one_gpu(name: str, method: str) -> bool:
    """Whether the model and method fit this machine's first GPU (there must be one)."""
    import torch  # torch stays out of start-up: this is asked only where a GPU trains

    return fits(resolve(name).memory_gb(method), torch.cuda.get_device_properties(0).total_memory / 2**30)


# where this machine cannot train a model, the place that can (garage.jobs.hf_jobs)
JOBS_HINT = " Or train it on a bigger GPU with Hugging Face Jobs: run_on hf-jobs, under 'Where it trains'."
