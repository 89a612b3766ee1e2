"""The trainer callback that connects a TRL trainer to a run folder.

It records every log line to ``metrics.jsonl``, keeps ``status.json`` current
(step, total, elapsed, ETA, tokens/s, phase), stops the run within one optimizer step
when asked, ends a piece of a chunked run with a checkpoint, and fails fast on a
NaN loss.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque

import torch
import torch.distributed as dist
from transformers import TrainerCallback


STATUS_EVERY_SECONDS = 0.5  # status.json is rewritten at most this often (the page polls every second)
FIRST_STEP = ("first step: compiling and warming up (a minute or more on a GPU the first time; the compiled "
              "kernels are kept for later runs)")
PACE_WINDOW = 32  # the ETA and tokens/s follow this many recent steps
# In the first WARM_UP_STEPS steps after the first, a step this many times slower than the window's median is a
# recompile (measured on an H100 with Unsloth: step 2 recompiled for a new length in 30 s between 0.3-0.65 s
# steps) and is left out of the pace. Later slow steps (evaluations, checkpoints) recur, and are counted.
ONE_OFF_FACTOR = 4.0
WARM_UP_STEPS = 5


def steady_pace(marks, warm_up_end: int) -> tuple[float, float] | None:
    """(seconds per step, tokens per second) from ``marks``, (time, step, tokens seen) at step ends, oldest
    first; None until two marks exist.

    A far slower step up to step ``warm_up_end`` (a recompile) is left out, so one 30 s recompile does not
    triple the ETA of a run of half-second steps.
    """
    marks = list(marks)
    spans = [(t1 - t0, s1 - s0, k1 - k0, s1) for (t0, s0, k0), (t1, s1, k1) in zip(marks, marks[1:]) if s1 > s0]
    if not spans:
        return None
    typical = statistics.median(seconds / steps for seconds, steps, _, _ in spans)
    kept = [span for span in spans if span[3] > warm_up_end or span[0] / span[1] <= ONE_OFF_FACTOR * typical]
    seconds, steps, tokens = (sum(column) for column in list(zip(*kept))[:3])
    if seconds <= 0:
        return None
    return seconds / steps, tokens / seconds


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is set in any process of a several-GPU run, known to all of them at the same step (one
    small all-reduce each step). They must stop together: a process that stops alone leaves the others waiting
    in the next step's gradient exchange, forever. One process: ``flag``."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(flag)], dtype=torch.int32, device=on)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


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
        self._marks: deque = deque(maxlen=PACE_WINDOW + 1)  # (time, step, tokens seen) at recent step ends
        self._warm_up_end = 0  # the last step whose slowness may be a recompile

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.time()
        self.run.drop_metrics_after(state.global_step)  # steps past the checkpoint (a crash) are trained again
        self._marks.clear()
        self.run.update(total_steps=state.max_steps, step=state.global_step, phase=FIRST_STEP)

    def _rates(self, state) -> tuple[float | None, float | None]:
        """Tokens/s and ETA from recent steps after the first: its compilation would skew both for the whole run."""
        pace = steady_pace(self._marks, self._warm_up_end)
        if pace is None:
            return None, None
        seconds_per_step, tokens_per_second = pace
        eta = (state.max_steps - state.global_step) * seconds_per_step
        return (round(tokens_per_second, 1) if tokens_per_second else None), round(eta, 1)

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

    def on_prediction_step(self, args, state, control, **kwargs):
        """A sign of life while an evaluation runs (several processes: the parent's watchdog counts silence)."""
        if time.time() - self._last_status >= STATUS_EVERY_SECONDS * 20:
            self._last_status = time.time()
            self.run.update(phase="evaluating")

    def on_evaluate(self, args, state, control, **kwargs):
        self.run.update(phase="training")

    def on_train_end(self, args, state, control, **kwargs):
        self.run.update(phase="saving")

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        if not self._marks:
            self._warm_up_end = state.global_step + WARM_UP_STEPS
            first = round(now - self.started, 3)
            self.run.update(phase="training", first_step_seconds=first)
            self.run.log(f"First step took {first} s (compilation and warm-up); ETA and tokens/s leave it out.")
        self._marks.append((now, state.global_step, state.num_input_tokens_seen or 0))
        if now - self._last_status >= STATUS_EVERY_SECONDS or state.global_step >= state.max_steps:
            tokens_per_second, eta = self._rates(state)
            self.run.update(step=state.global_step, total_steps=state.max_steps, elapsed=round(self.elapsed(), 1),
                            eta=eta, tokens_per_second=tokens_per_second)
            self._last_status = now
        if any_process((self.stop_event is not None and self.stop_event.is_set()) or self.run.stop_requested()):
            self.stopped_by_user = True
            self.run.update(step=state.global_step)
            control.should_save = True  # a stopped run can be resumed from here
            control.should_training_stop = True
        elif self.piece_end_step is not None and state.global_step >= self.piece_end_step \
                and state.global_step < state.max_steps:
            control.should_save = True  # the next piece resumes from this checkpoint
            control.should_training_stop = True
        return control


class EvaluateAtTheEnd(TrainerCallback):
    """One more evaluation at the last step, inside training (a preference run's held-out rows): the trackers and the
    run's own log are still open then (after ``train`` they have closed), and its numbers are the final model's."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_evaluate = True
        return control
