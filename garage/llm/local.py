"""A causal LM on this machine as an LLM client (the test model, or a local model folder)."""

from __future__ import annotations

from pathlib import Path

from garage import access
from garage.device import has_gpu
from garage.errors import GarageError
from garage.llm.backend import Backend, Failure
from garage.llm.local_batch import BatchedGenerator
from garage.offline_models import TINY_NAME, build_tiny_gemma

class LocalBackend(Backend):
    """A causal LM from a local folder, through transformers and its chat template.

    Requests in flight at once (the job's concurrency) are answered together, in shared generate() calls
    (``local_batch``). Its JSON is parsed leniently; replies that are not JSON are counted as parse failures,
    never fatal.
    """

    name = "local model"

    def __init__(self, model: str, *, device: str | None = None, **kwargs):
        kwargs.setdefault("max_output_tokens", 1024)
        super().__init__(model, **kwargs)
        folder = self._resolve(model)
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise GarageError("The local backend needs torch and transformers installed.") from None

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            dtype = torch.bfloat16 if has_gpu() else torch.float32
            loaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
        except Exception as exc:  # noqa: BLE001
            raise GarageError(f"Could not load the model in {folder}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
        device = device or ("cuda" if has_gpu() else "cpu")  # on ZeroGPU outside a GPU call: the CPU
        loaded.to(device).eval()
        if not getattr(tokenizer, "chat_template", None):
            raise GarageError(f"The model in {folder} has no chat template; use an instruction-tuned model.")

        self.generator = BatchedGenerator(loaded, tokenizer, device)

    @staticmethod
    def _resolve(model: str) -> Path:
        if model == TINY_NAME:
            return build_tiny_gemma()
        access.refuse_local_model_folder(TINY_NAME)  # a server folder may hold another user's fine-tuned weights
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise GarageError(f"Local model folder not found: {model}. Give the path of a folder holding "
                              "config.json, the weights and the tokenizer.")
        if not (folder / "config.json").exists():
            raise GarageError(f"{model} has no config.json: it is not a transformers model folder.")
        return folder

    def _complete(self, prompt, system, temperature, max_tokens, schema) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text, prompt_tokens, new_tokens = self.generator.complete(messages, max_tokens, temperature)
        self.stats.add(input_tokens=prompt_tokens, output_tokens=new_tokens)
        return text

    def _classify(self, exc: Exception) -> Failure | None:
        if "out of memory" in str(exc).lower():
            raise GarageError("The local model ran out of memory. Use a smaller model, smaller chunks or "
                              "a shorter max_output_tokens.") from None
        return None
