"""Chat with the base model and a run's fine-tuned model, one base copy in memory.

The base model is loaded once per base name. A LoRA run's adapter is attached to
that same model under the run's id (PEFT), so "base" is the model with adapters
disabled and "tuned" is the model with the run's adapter enabled: never a second
copy. A full fine-tune has no adapter; its own weights are loaded and replace the
cached model (said in ``Engine.notice``).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from garage import device
from garage.errors import GarageError
from garage.infer.batching import eos_ids, left_padded_batch
from garage.models.loading import explain_load_error, import_unsloth, model_source, training_template


@dataclass
class GenSettings:
    """Generation settings; the defaults are Gemma 3's recommended sampling."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    repetition_penalty: float = 1.0
    seed: int | None = None        # fixed seed: a difference between sides comes from the weights
    greedy: bool = False

    def generate_kwargs(self) -> dict:
        if self.greedy or self.temperature <= 0:
            return {"do_sample": False, "max_new_tokens": int(self.max_new_tokens),
                    "repetition_penalty": float(self.repetition_penalty)}
        return {"do_sample": True, "max_new_tokens": int(self.max_new_tokens), "temperature": float(self.temperature),
                "top_p": float(self.top_p), "top_k": int(self.top_k),
                "repetition_penalty": float(self.repetition_penalty)}


DEFAULTS = dataclasses.asdict(GenSettings())


@dataclass
class Answer:
    text: str
    tokens: int
    seconds: float
    first_token_seconds: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return round(self.tokens / self.seconds, 1) if self.seconds > 0 else 0.0


@dataclass
class _Loaded:
    name: str
    model: object
    tokenizer: object
    adapters: dict = field(default_factory=dict)  # run id -> (adapter name, adapter folder, files' stamp)


class Engine:
    """Holds at most one model; generation is serialised by a lock (one GPU)."""

    def __init__(self):
        # A plain Lock, not an RLock: Gradio steps a stream on its worker threads and closes it (Stop) from the
        # event loop's, so the thread that lets go is not always the one that took it.
        self._lock = threading.Lock()
        self._current: _Loaded | None = None
        self._versions = 0
        self.notice = ""

    # --- loading ---------------------------------------------------------
    def _load_base(self, base: str) -> _Loaded:
        if self._current and self._current.name == base:
            return self._current
        self._unload()
        import_unsloth()  # before transformers, so its patches apply
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = model_source(base)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype="auto",
                                                         device_map="auto" if device.has_gpu() else None)
        except Exception as exc:
            raise explain_load_error(base, exc) from exc
        if not getattr(tokenizer, "chat_template", None):  # a pretrained model: the template its runs trained with
            tokenizer = training_template(tokenizer, base)[0]
        model.eval()
        self._current = _Loaded(base, model, tokenizer)
        return self._current

    def _prepare(self, base: str, run=None) -> tuple[_Loaded, str | None]:
        """The loaded model and the adapter name to enable (None = base weights)."""
        if run is None:
            loaded = self._load_base(base)
            return loaded, None
        output = run.output_dir()
        if output is None:
            raise GarageError(f"Run {run.id} has no trained weights yet (state: {run.status().get('state')}).")
        if output.name == "model":  # full fine-tune: its own weights
            return self._load_full(run, output), None
        loaded = self._load_base(base)
        from peft import PeftModel


        stamp = _stamp(output)
        known = loaded.adapters.get(run.id)
        if known and known[2] == stamp:
            name = known[0]
        else:  # first use, or the run saved new weights since (resumed): load them under a new name
            self._versions += 1
            name = f"{re.sub(r'[^A-Za-z0-9_-]', '_', run.id)}-v{self._versions}"  # no dots in module names
            if not isinstance(loaded.model, PeftModel):
                loaded.model = PeftModel.from_pretrained(loaded.model, str(output), adapter_name=name)
            else:
                loaded.model.load_adapter(str(output), adapter_name=name)
            loaded.adapters[run.id] = (name, output, stamp)
            if known:
                loaded.model.delete_adapter(known[0])
        for other, (old, folder, _) in list(loaded.adapters.items()):
            if other != run.id and not folder.exists():  # a deleted run: let its weights go
                loaded.model.delete_adapter(old)
                del loaded.adapters[other]
        loaded.model.eval()
        return loaded, name

    def _load_full(self, run, folder: Path) -> _Loaded:
        name = f"run:{run.id}:{hash(_stamp(folder))}"  # a resumed run's new weights are loaded anew
        if self._current and self._current.name == name:
            return self._current
        self._unload()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto",
                                                     device_map="auto" if device.has_gpu() else None)
        model.eval()
        self._current = _Loaded(name, model, AutoTokenizer.from_pretrained(str(folder)))
        self.notice = f"Run {run.id} is a full fine-tune: its own weights were loaded in place of the base."
        return self._current

    def unload(self) -> None:
        with self._lock:
            self._unload()

    def _unload(self) -> None:
        self._current = None
        self.notice = ""
        device.free_memory()

    def holds(self, base: str) -> bool:
        """Whether ``base`` is the model already in memory (no new GPU memory needed)."""
        return bool(self._current and self._current.name == base)

    def loaded_parameter_count(self) -> int:
        """Parameters of the model held in memory (adapters included): one base copy, always."""
        if not self._current:
            return 0
        return sum(p.numel() for p in self._current.model.parameters())

    # --- generation ------------------------------------------------------
    def stream_pair(self, base: str, messages: list[dict], settings: GenSettings, run=None,
                    tuned_messages: list[dict] | None = None):
        """Yield [base text, tuned text] as both grow, in one batched generate on one model copy.

        Row 0 is the base conversation, row 1 the tuned one (``tuned_messages``, default the
        same); PEFT routes row 0 through the base weights (``__base__``) and row 1 through the
        run's adapter. Without a run, only the base row. Returns the two ``Answer``s.
        """
        with self._lock:
            if run is not None and run.output_dir() is not None and run.output_dir().name == "model":
                return (yield from self._stream_full_pair(base, messages, settings, run, tuned_messages))
            loaded, adapter = self._prepare(base, run)
            if adapter is None:  # the base alone: the pair's tuned side stays empty
                box = []
                for texts in _relay(self._stream_rows(loaded, [None], [messages], settings), box):
                    yield [texts[0], ""]
                return [box[0][0], None]
            answers = yield from self._stream_rows(loaded, ["__base__", adapter],
                                                   [messages, tuned_messages or messages], settings)
            return answers

    def _stream_full_pair(self, base, messages, settings, run, tuned_messages=None):
        """A full fine-tune has no adapter: answer with the base, then swap in the run's weights."""
        loaded, _ = self._prepare(base, None)
        box, tuned = [], []
        for texts in _relay(self._stream_rows(loaded, [None], messages, settings), box):
            yield [texts[0], ""]
        loaded, _ = self._prepare(base, run)
        for texts in _relay(self._stream_rows(loaded, [None], tuned_messages or messages, settings), tuned):
            yield [box[0][0].text, texts[0]]
        return [box[0][0], tuned[0][0]]

    def generate(self, base: str, messages: list[dict], settings: GenSettings, run=None) -> Answer:
        """One full answer: the base model's, or the run's when ``run`` is given."""
        return self.generate_batch(base, [messages], settings, run)[0]

    def generate_batch(self, base: str, conversations: list[list[dict]], settings: GenSettings, run=None,
                       batch_size: int = 8) -> list[Answer]:
        """Full answers to many conversations, ``batch_size`` rows per generate() on the one model copy."""
        answers: list[Answer] = []
        with self._lock:
            loaded, adapter = self._prepare(base, run)
            for start in range(0, len(conversations), max(1, batch_size)):
                chunk = conversations[start:start + max(1, batch_size)]
                answers.extend(drain(self._stream_rows(loaded, [adapter] * len(chunk), chunk, settings)))
        return answers

    def _stream_rows(self, loaded: _Loaded, rows: list, messages, settings: GenSettings):
        import torch

        tokenizer, model = loaded.tokenizer, loaded.model
        conversations = messages if messages and isinstance(messages[0], list) else [messages] * len(rows)
        batch = left_padded_batch(tokenizer, conversations, next(model.parameters()).device)
        streamer = RowStreamer(tokenizer, len(rows), eos_ids(model, tokenizer))
        from transformers import StoppingCriteriaList

        kwargs = dict(**batch, **settings.generate_kwargs(), streamer=streamer, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=sorted(streamer.eos_ids),
                      stopping_criteria=StoppingCriteriaList([_Cancelled(streamer)]))
        if _is_peft(model):
            kwargs["adapter_names"] = ["__base__" if r is None else r for r in rows]
        errors: list[BaseException] = []

        def work():
            try:
                if settings.seed is not None:
                    torch.manual_seed(int(settings.seed))
                with torch.inference_mode():
                    model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
            finally:
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            for texts in streamer:
                yield texts
        finally:  # also when the consumer goes away (Stop button): end generate() at the next token
            streamer.cancelled = True
            thread.join()
        if errors:
            raise GarageError(f"Generation failed: {type(errors[0]).__name__}: {errors[0]}")
        return streamer.answers()


def _stamp(folder: Path) -> tuple:
    """Names, sizes and modification times of a weights folder's files: changes when the weights are saved again."""
    files = []
    for path in folder.iterdir():
        try:
            info = path.stat()
        except FileNotFoundError:  # replaced while we looked
            continue
        if path.is_file():
            files.append((path.name, info.st_size, info.st_mtime_ns))
    return tuple(sorted(files))


def drain(stream):
    """Run a streaming generator to its end and return what it returns (its final answers)."""
    while True:
        try:
            next(stream)
        except StopIteration as stop:
            return stop.value


def _relay(generator, box: list):
    """Yield what ``generator`` yields; append its return value to ``box``."""
    box.append((yield from generator))


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


class _Cancelled:
    """A stopping criterion that ends generation once the streamer's consumer has gone."""

    def __init__(self, streamer):
        self.streamer = streamer

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.streamer.cancelled, dtype=torch.bool,
                          device=input_ids.device)


class RowStreamer:
    """A generate() streamer for a batch: keeps each row's tokens and yields all rows' text so far."""

    def __init__(self, tokenizer, n_rows: int, eos_ids: set[int]):
        import queue

        self.tokenizer, self.eos_ids = tokenizer, eos_ids
        self.ids: list[list[int]] = [[] for _ in range(n_rows)]
        self.done = [False] * n_rows
        self.first_token: list[float | None] = [None] * n_rows
        self.finished_at: list[float | None] = [None] * n_rows
        self.started = time.perf_counter()
        self._queue: queue.Queue = queue.Queue()
        self._prompt_seen = False
        self.cancelled = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        now = time.perf_counter()
        column = value.reshape(len(self.ids), -1)[:, -1].tolist()
        for row, token in enumerate(column):
            if self.done[row]:
                continue
            if token in self.eos_ids:
                self.done[row], self.finished_at[row] = True, now
                continue
            if self.first_token[row] is None:
                self.first_token[row] = now - self.started
            self.ids[row].append(int(token))
        self._queue.put(self.texts())

    def end(self) -> None:
        now = time.perf_counter()
        self.finished_at = [t or now for t in self.finished_at]
        self._queue.put(None)

    def texts(self) -> list[str]:
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in self.ids]

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            yield item

    def answers(self) -> list[Answer]:
        return [Answer(text=text.strip(), tokens=len(ids), seconds=(end or time.perf_counter()) - self.started,
                       first_token_seconds=first)
                for text, ids, end, first in zip(self.texts(), self.ids, self.finished_at, self.first_token)]


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine
