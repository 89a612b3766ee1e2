"""Model cards and dataset cards: metadata the Hub reads, and what a person needs to use the model.

A model card says which base it came from, what was pushed where, the training
config, the final losses and the loss curve, how to load it (transformers, PEFT,
Unsloth, llama.cpp / Ollama) and a few prompts from the dataset with the base and
the tuned greedy answers. Nothing secret goes in: callers scrub the text as well.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from garage.data import store
from garage.evaluation import methods
from garage.hub.export import base_hub_id, base_ref
from garage.hub.names import dataset_label
from garage.hub.png import line_chart

LOSS_PNG = "loss.png"
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)


# --- facts about a run ---------------------------------------------------------------------------

def dataset_hub_id(run) -> str | None:
    """The Hub dataset a run's data came from (saved datasets remember their source), if any."""
    cfg = run.config()
    owner = run.status().get("owner") or "local"
    try:
        source = store.load_meta(owner, cfg.dataset).get("source", "")
    except Exception:
        return None
    match = re.match(r"hf://([A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)", str(source))
    return match.group(1) if match else None


def config_for_card(run) -> dict:
    """The run's TrainConfig as a dict, with the dataset named (never a local path)."""
    values = run.config().to_dict()
    dataset = str(values.get("dataset", ""))
    values["dataset"] = dataset_label(dataset) if ("/" in dataset or "\\" in dataset) else dataset
    values["model"] = _base(run)
    return values


def _base(run) -> str:
    return base_ref(run.config().model)


def _base_hub_id(run) -> str | None:
    return base_hub_id(run.config().model)


def losses(run) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    train, evals = [], []
    for record in run.metrics():
        step = record.get("step")
        if step is None:
            continue
        if isinstance(record.get("loss"), (int, float)):
            train.append((float(step), float(record["loss"])))
        if isinstance(record.get("eval_loss"), (int, float)):
            evals.append((float(step), float(record["eval_loss"])))
    return train, evals


def loss_png(run) -> bytes | None:
    """The loss curve (train blue, eval orange) as PNG bytes; None when nothing was logged."""
    train, evals = losses(run)
    if not train and not evals:
        return None
    try:
        return _matplotlib_png(train, evals)
    except Exception:  # matplotlib missing (the usual case) or broken: draw it ourselves

        return line_chart([(train, BLUE), (evals, ORANGE)])


def _matplotlib_png(train, evals) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="#1f77b4")
    if evals:
        ax.plot(*zip(*evals), label="eval loss", color="#ff7f0e", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# --- the model card ------------------------------------------------------------------------------

def library_name(layout: dict[str, str]) -> str:
    """peft when the adapter is the repo's root, transformers for a merged root, gguf for GGUF only."""
    if layout.get("adapter") == "":
        return "peft"
    if layout.get("merged") == "":
        return "transformers"
    return "gguf"


def model_tags(run, layout: dict[str, str]) -> list[str]:
    method = run.config().method
    tags = ["gemma", "gemma-garage", "full-finetune" if method == "full" else "lora"]
    if method in ("qlora", "grpo", "dpo", "orpo", "kto"):
        tags.append(method)
    if "adapter" in layout:
        tags.append("peft")
    if "merged" in layout:
        tags.append("merged")
    if any(k.startswith("gguf") for k in layout):
        tags.append("gguf")
    return tags + ["sft", "trl", "text-generation"]


def model_card(run, repo_id: str, layout: dict[str, str], *, examples: list[dict] | None = None,
               examples_note: str = "", has_loss_png: bool = False) -> str:
    """README.md text for ``repo_id``. ``layout`` maps what was pushed to where: "" = the repo root,
    "merged" = a subfolder, a file name for each GGUF (e.g. {"gguf-q8_0": "name-Q8_0.gguf"})."""
    from huggingface_hub import ModelCardData

    base, base_id = _base(run), _base_hub_id(run)
    dataset_id = dataset_hub_id(run)
    data = ModelCardData(base_model=base_id, library_name=library_name(layout), tags=model_tags(run, layout),
                         datasets=[dataset_id] if dataset_id else None, pipeline_tag="text-generation")
    status = run.status()
    cfg = config_for_card(run)
    name = repo_id.split("/")[-1]
    base_link = f"[{base}](https://huggingface.co/{base})" if base_id else f"`{base}` (a model not on the Hub)"
    data_name = f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id})" if dataset_id \
        else f"`{cfg['dataset']}`"
    method = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tuning"}.get(cfg["method"], cfg["method"])
    parts = [
        f"---\n{data.to_yaml()}\n---\n",
        f"# {name}\n",
        f"{base_link} fine-tuned with {method} on {data_name} using {_garage_link()} (Unsloth + TRL + PEFT, "
        "no code).\n",
        _files_section(layout),
        _results_section(run, status, has_loss_png),
        _methods_section(run),
        _examples_section(examples or [], examples_note),
        _usage_section(repo_id, base_id or f"path/to/{base}", layout),
        "## Training configuration\n\n```yaml\n" + _yaml(cfg) + "```\n",
    ]
    return "\n".join(p for p in parts if p)


def _garage_link() -> str:
    space = os.environ.get("SPACE_ID")
    return f"[Gemma Garage](https://huggingface.co/spaces/{space})" if space else "Gemma Garage"


def _yaml(values: dict) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)


def _files_section(layout: dict[str, str]) -> str:
    lines = ["## What is in this repo\n"]
    for key, where in layout.items():
        place = "the repo root" if where == "" else f"`{where}`"
        text = {"adapter": "LoRA adapter (PEFT) and tokenizer", "merged": "merged 16-bit model (transformers)"}.get(
            key, f"GGUF {key.split('-', 1)[-1]} for llama.cpp / Ollama (text only)")
        lines.append(f"- {text}: {place}")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def _results_section(run, status: dict, has_loss_png: bool) -> str:
    train, evals = losses(run)
    lines = ["## Results\n", "| | value |", "| --- | --- |",
             f"| final train loss | {_fmt(status.get('final_loss'))} |",
             f"| final eval loss | {_fmt(status.get('eval_loss'))} |",
             f"| steps | {status.get('step') or 0} |"]
    if status.get("duration"):
        lines.append(f"| training time | {status['duration']:.0f} s |")
    if has_loss_png:
        lines.append(f"\n![Loss curve: train loss in blue, eval loss in orange]({LOSS_PNG})")
    if train:
        picks = sorted({train[round(i * (len(train) - 1) / 7)] for i in range(8)})
        lines.append("\n| step | train loss |\n| --- | --- |")
        lines += [f"| {int(step)} | {loss:.4f} |" for step, loss in picks]
    if evals:
        lines.append("\n| step | eval loss |\n| --- | --- |")
        lines += [f"| {int(step)} | {loss:.4f} |" for step, loss in evals[-8:]]
    return "\n".join(lines) + "\n"


def _methods_section(run) -> str:
    """The Compare tab's 'which helped' table, when it was made with this run (``methods.json``)."""
    try:
        table = json.loads((run.path / "methods.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return ""
    return "## Which helped: base, optimised prompt, fine-tuning\n\n" + methods.to_markdown(table)


def _block(text: str) -> str:
    return "```text\n" + (str(text).replace("```", "'''").strip() or "(empty)") + "\n```"


def _examples_section(examples: list[dict], note: str) -> str:
    if not examples:
        return f"## Example answers\n\n{note}\n" if note else ""
    lines = ["## Example answers\n", "Prompts from the training data, answered greedily by the base model and by "
             "this fine-tune:\n"]
    for i, ex in enumerate(examples, 1):
        lines.append(f"### Example {i}\n")
        if ex.get("system"):
            lines.append("**System**\n\n" + _block(ex["system"]) + "\n")
        lines += ["**Prompt**\n\n" + _block(ex["prompt"]) + "\n",
                  "**Base model**\n\n" + _block(ex["base"]) + "\n",
                  "**Fine-tuned**\n\n" + _block(ex["tuned"]) + "\n",
                  "**Answer in the dataset**\n\n" + _block(ex["reference"]) + "\n"]
    return "\n".join(lines)


def _usage_section(repo_id: str, base: str, layout: dict[str, str]) -> str:
    out = ["## How to use\n"]
    messages = 'messages = [{"role": "user", "content": "Hello!"}]'
    if "merged" in layout:
        sub = f', subfolder="{layout["merged"]}"' if layout["merged"] else ""
        out.append(f"""### Transformers (merged model)

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo_id}"{sub}, dtype="auto", device_map="auto")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{sub})
{messages}
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                       return_dict=True).to(model.device)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=256)[0], skip_special_tokens=True))
```
""")
    if "adapter" in layout:
        sub = f', subfolder="{layout["adapter"]}"' if layout["adapter"] else ""
        out.append(f"""### PEFT (adapter on the base model)

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base}", dtype="auto", device_map="auto")
model = PeftModel.from_pretrained(base, "{repo_id}"{sub})
tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{sub})
```

### Unsloth

```python
from unsloth import FastLanguageModel

model, tokenizer = FastLanguageModel.from_pretrained("{repo_id}"{sub}, max_seq_length=2048)
FastLanguageModel.for_inference(model)
```
""")
    ggufs = {k: v for k, v in layout.items() if k.startswith("gguf")}
    if ggufs:
        first_key, first_file = next(iter(ggufs.items()))
        quant = first_key.split("-", 1)[1].upper()
        out.append(f"""### llama.cpp / Ollama (GGUF)

```bash
llama-cli -hf {repo_id}:{quant}
# or download the file and run it
huggingface-cli download {repo_id} {first_file} --local-dir .
llama-cli -m {first_file} -cnv
# Ollama
ollama run hf.co/{repo_id}:{quant}
```
""")
    return "\n".join(out)


# --- the dataset card ----------------------------------------------------------------------------

def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < limit:
            return label
    return "10M<n<100M"


def dataset_card(repo_id: str, conversations: list[dict], *, source: str = "", model_repo: str = "") -> str:
    """README.md for a dataset repo holding ``data/train.jsonl``."""
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(tags=["gemma-garage", "conversational"], task_categories=["text-generation"],
                           size_categories=[size_category(len(conversations))],
                           configs=[{"config_name": "default",
                                     "data_files": [{"split": "train", "path": "data/train.jsonl"}]}])
    first = json.dumps(conversations[0], ensure_ascii=False, indent=1) if conversations else "{}"
    kind = "chat" if all("messages" in r for r in conversations) else "text"
    lines = [f"---\n{data.to_yaml()}\n---\n", f"# {repo_id.split('/')[-1]}\n",
             f"{len(conversations)} {'conversations' if kind == 'chat' else 'texts'} prepared with Gemma Garage, "
             "one JSON object per line in `data/train.jsonl`"
             + (' (`{"messages": [{"role", "content"}, ...]}`, roles system / user / assistant).' if kind == "chat"
                else ' (`{"text": ...}`).')]
    if source:
        lines.append(f"\nSource: `{Path(source).name if Path(source).is_file() else source}`.")
    if model_repo:
        lines.append(f"\nUsed to fine-tune [{model_repo}](https://huggingface.co/{model_repo}).")
    lines += ["\n## First row\n", "```json\n" + first.replace("```", "'''") + "\n```\n",
              "## Load it\n", f"```python\nfrom datasets import load_dataset\n\nds = load_dataset(\"{repo_id}\", "
              "split=\"train\")\n```\n"]
    return "\n".join(lines)
