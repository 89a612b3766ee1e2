"""The trainer callback that connects a TRL trainer to a run folder.

It records every log line to ``metrics.jsonl``, keeps ``status.json`` current
(step, total, elapsed, ETA, tokens/s, phase), stops the run within one optimizer step
when asked, ends a piece of a chunked run with a checkpoint, and fails fast on a
NaN loss.
"""

from __future__ import annotations

import math
import threading
import time

from transformers import TrainerCallback


STATUS_EVERY_SECONDS = 0.5  # status.json is rewritten at most this often (the page polls every second)
FIRST_STEP = "first step: compiling and warming up (minutes on a GPU, where Unsloth compiles each layer)"


class RunCallback(TrainerCallback):
    def __init__(self, run, stop_event: threading.Event | None, *, piece_end_step: int | None = None,
                 elapsed_before: float = 0.0):
        self.run = run
        self.stop_event = stop_event
        self.piece_end_step = piece_end_step
        self.elapsed_before = elapsed_before
        self.started = time.time()
        self.stopped_by_user = False
        self.nan_seen = False
        self._last_status = 0.0
        self._mark: tuple[float, int, int] | None = None  # time, step, tokens when the first step ended

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        self.run.drop_metrics_after(state.global_step)  # steps past the checkpoint (a crash) are trained again
        self._mark = None
        self.run.update(total_steps=state.max_steps, step=state.global_step, phase=FIRST_STEP)

    def _rates(self, state) -> tuple[float | None, float | None]:
        """Tokens/s and ETA from the steps after the first: its compilation would skew both for the whole run."""
        if self._mark is None:
            return None, None
        marked_at, marked_step, marked_tokens = self._mark
        spent = time.time() - marked_at
        steps = state.global_step - marked_step
        if spent <= 0 or steps <= 0:
            return None, None
        tokens = (state.num_input_tokens_seen or 0) - marked_tokens
        eta = (state.max_steps - state.global_step) * spent / steps
        return (round(tokens / spent, 1) if tokens else None), round(eta, 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        tokens_per_second, _ = self._rates(state)
        record = {"step": state.global_step, "time": round(time.time(), 3), "elapsed": round(self.elapsed(), 2)}
        for key, value in logs.items():
            if isinstance(value, (int, float)):
                record[key] = float(value)
        if tokens_per_second:
            record["tokens_per_second"] = tokens_per_second
        self.run.append_metrics(record)
        loss = logs.get("loss", logs.get("eval_loss"))
        if isinstance(loss, float) and not math.isfinite(loss):
            self.nan_seen = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.run.update(phase="saving")

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        if self._mark is None:
            self._mark = (now, state.global_step, state.num_input_tokens_seen or 0)
            first = round(now - self.started, 3)
            self.run.update(phase="training", first_step_seconds=first)
            self.run.log(f"First step took {first} s (compilation and warm-up); ETA and tokens/s leave it out.")
        if now - self._last_status >= STATUS_EVERY_SECONDS or state.global_step >= state.max_steps:
            tokens_per_second, eta = self._rates(state)
            self.run.update(step=state.global_step, total_steps=state.max_steps, elapsed=round(self.elapsed(), 1),
                            eta=eta, tokens_per_second=tokens_per_second)
            self._last_status = now
        if (self.stop_event is not None and self.stop_event.is_set()) or self.run.stop_requested():
            self.stopped_by_user = True
            self.run.update(step=state.global_step)
            control.should_save = True  # a stopped run can be resumed from here
            control.should_training_stop = True
        elif self.piece_end_step is not None and state.global_step >= self.piece_end_step \
                and state.global_step < state.max_steps:
            control.should_save = True  # the next piece resumes from this checkpoint
            control.should_training_stop = True
        return control
