"""Concurrent requests to one local model, answered together in shared generate() calls.

A model on one device runs one generate() at a time, but a batch of prompts costs little more than one: the
weights are read once per new token for every row. The augment pipeline's threads each ask for one completion;
whichever finds the model idle runs all waiting requests with the same settings as one left-padded batch, and
the others wait for their row. With one caller this is a plain generate() of one row.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from garage.errors import is_out_of_memory
from garage.infer.batching import eos_ids, left_padded_batch

MAX_ROWS = 16  # rows per generate(): a cap on the memory one batch takes, whatever the concurrency


@dataclass(eq=False)  # each request is itself: two equal prompts are still two requests
class _Request:
    messages: list[dict]
    settings: tuple  # (max_new_tokens, temperature): only requests with equal settings share a generate()
    done: bool = False
    text: str = ""
    counts: tuple[int, int] = (0, 0)  # prompt tokens, new tokens
    error: BaseException | None = field(default=None, repr=False)


class BatchedGenerator:
    def __init__(self, model, tokenizer, device, max_rows: int = MAX_ROWS):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_rows = max(1, int(max_rows))
        self.stop_ids = sorted(eos_ids(model, tokenizer))
        self.generate_calls = 0
        self._cond = threading.Condition()
        self._waiting: list[_Request] = []
        self._busy = False

    def complete(self, messages: list[dict], max_new_tokens: int, temperature: float) -> tuple[str, int, int]:
        """The model's reply to ``messages``, its prompt's token count and its reply's."""
        request = _Request(messages, (int(max_new_tokens), float(temperature)))
        with self._cond:
            self._waiting.append(request)
        while not request.done:
            with self._cond:
                while self._busy and not request.done:
                    self._cond.wait()
                if request.done:
                    break
                batch, self._busy = self._take(), True
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return (request.text, *request.counts)

    def _take(self) -> list[_Request]:
        """The oldest waiting request and those with its settings, up to ``max_rows`` (call under the lock)."""
        settings = self._waiting[0].settings
        batch = [r for r in self._waiting if r.settings == settings][:self.max_rows]
        self._waiting = [r for r in self._waiting if r not in batch]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            replies = self._generate([r.messages for r in batch], *batch[0].settings)
            for request, (text, counts) in zip(batch, replies):
                request.text, request.counts = text, counts
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one row's fault (a prompt too long) or the batch's size (out of memory): each row alone
                if is_out_of_memory(exc):
                    self.max_rows = max(1, len(batch) // 2)  # later batches stay under the size that failed
                for request in batch:
                    self._run([request])
        finally:
            for request in batch:
                request.done = True

    def _generate(self, conversations: list[list[dict]], max_new_tokens: int, temperature: float) -> list:
        import torch

        inputs = left_padded_batch(self.tokenizer, conversations, self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        kwargs = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0, "pad_token_id": pad,
                  "eos_token_id": self.stop_ids}
        if temperature > 0:
            kwargs["temperature"] = temperature
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        self.generate_calls += 1
        width = inputs["input_ids"].shape[1]
        replies = []
        for row, prompt_mask in enumerate(inputs["attention_mask"].tolist()):
            new = output[row, width:].tolist()
            end = next((i for i, token in enumerate(new) if token in self.stop_ids), len(new))
            text = self.tokenizer.decode(new[:end], skip_special_tokens=True)
            replies.append((text, (sum(prompt_mask), min(end + 1, len(new)))))
        return replies
