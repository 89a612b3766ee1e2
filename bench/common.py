"""Pieces the benchmarks share: a mixed-length Q/A dataset and result files."""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

WORDS = ("the model learns what the answer to each question is when it trains on enough examples of "
         "questions and answers about many topics such as cities rivers numbers colours and books").split()


def qa_rows(n: int = 64, seed: int = 0, max_words: int = 60) -> list[dict]:
    """Conversations of mixed length (4 to ``max_words`` words per answer), deterministic."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) + f" {i}?"
        answer = " ".join(rng.choices(WORDS, k=rng.randint(4, max_words))) + "."
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return rows


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"cpu-{platform.machine()}"


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = device_name().replace(" ", "-").lower()
    path = RESULTS / f"{name}-{slug}.json"
    path.write_text(json.dumps({"device": device_name(), "machine": platform.node(), **result}, indent=1))
    return path


def versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "trl", "peft", "unsloth"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            out[name] = None
    return out


BF16_DENSE_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10G": 125.0}


def peak_tflops() -> float | None:
    """The GPU's dense bf16 peak, for MFU (None on CPU or an unknown card)."""
    name = device_name()
    return next((v for k, v in BF16_DENSE_PEAK_TFLOPS.items() if k in name), None)


def lora_mfu(tokens_per_second: float, params: int, trainable: int) -> float | None:
    """Model FLOPs utilisation of LoRA training: (2 + trainable fraction) / 3 of 6N FLOPs per token."""
    peak = peak_tflops()
    if not peak or not tokens_per_second:
        return None
    flops_per_token = 6 * params * (2 + trainable / params) / 3
    return tokens_per_second * flops_per_token / (peak * 1e12)


def reset_peak_memory() -> None:
    """Start a part's peak: torch's peak allocation on a GPU, the process's peak resident memory on a CPU."""
    global _resident_peak_reset, _held_at_reset
    if _gpu():
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: writing 5 to clear_refs sets VmHWM (peak resident set) back to the current resident set
        Path("/proc/self/clear_refs").write_text("5")
        _resident_peak_reset, _held_at_reset = True, _status_gib("VmRSS")
    except OSError:
        _resident_peak_reset, _held_at_reset = False, None


def held_before_gib() -> float | None:
    """On a CPU, the resident memory the process held when its peak was reset (imports, earlier parts' leftovers):
    the peak less this is what loading and training took."""
    return _held_at_reset  # None on a GPU, where torch counts only what training allocates


def peak_memory_gib() -> float | None:
    """The peak since reset_peak_memory(): on a CPU the whole process's resident memory (imports, and whatever
    the process still held from earlier parts, included); None where it cannot be read."""
    if _gpu():
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    if not _resident_peak_reset:
        return None
    return _status_gib("VmHWM")


def _status_gib(key: str) -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return round(int(line.split()[1]) / 2**20, 3)  # kB
    return None


_resident_peak_reset = False
_held_at_reset: float | None = None


def _gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def steady_steps_per_second(times: list[tuple[int, float]], skip: int) -> float:
    """Steps per second from the end of step ``skip`` to the last step: the first steps pay for kernel
    compilation, autotuning and allocator growth, which a real run of hundreds of steps amortises.
    ``times``: (step, time) at the end of each step 1, 2, ...; a run shorter than that counts all but step 1."""
    times = sorted(times)
    if len(times) < 2:
        return float("nan")
    first, last = times[max(0, min(skip - 1, len(times) - 2))], times[-1]
    return (last[0] - first[0]) / (last[1] - first[1])


def print_step(label: str, step: int, seconds: float) -> None:
    """One progress line per step on stderr, so a run cut off by a time limit still shows how far it got."""
    print(f"{label} step {step}: {seconds:.2f} s", file=sys.stderr, flush=True)


def step_clock(label: str):
    """A TrainerCallback that records (step, time) at the end of every optimizer step, after the GPU is done."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times: list[tuple[int, float]] = []
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
            except ImportError:
                pass
            now = time.perf_counter()
            print_step(label, state.global_step, now - (self.times[-1][1] if self.times else self.started))
            self.times.append((state.global_step, now))

    return StepClock()


def step_profiler(label: str, first_step: int, steps: int):
    """A TrainerCallback that runs torch.profiler over optimizer steps ``first_step`` .. ``first_step + steps - 1``
    and keeps a summary in ``.summary``: wall time per step against the time the GPU was busy (kernels and copies)
    and the number of kernels and CPU-side operators per step, with the heaviest of each. A step whose GPU is busy
    for a small part of its wall time is bound by launches and Python, not by arithmetic."""
    from transformers import TrainerCallback

    class StepProfiler(TrainerCallback):
        def __init__(self):
            self.summary: dict = {}
            self._profile = None
            self._started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step + 1 == first_step and self._profile is None:
                import torch

                activities = [torch.profiler.ProfilerActivity.CPU]
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self._profile = torch.profiler.profile(activities=activities)
                self._profile.__enter__()
                self._started = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            if self._profile is not None and not self.summary:  # training ended inside the window
                self._profile.__exit__(None, None, None)
                print(f"profile {label}: training ended before step {first_step + steps - 1}", file=sys.stderr)

        def on_step_end(self, args, state, control, **kwargs):
            if self._profile is None or self.summary or state.global_step < first_step + steps - 1:
                return
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall = time.perf_counter() - self._started
            self._profile.__exit__(None, None, None)
            self.summary = summarise_profile(self._profile, wall, steps)
            # on stderr: the plain baseline's stdout carries only its result
            print(f"profile {label}: {json.dumps({k: v for k, v in self.summary.items() if k != 'top'})}",
                  file=sys.stderr, flush=True)
            for kind, rows in self.summary["top"].items():
                for name, ms in rows:
                    print(f"profile {label} {kind}: {ms:9.2f} ms/step  {name[:100]}", file=sys.stderr, flush=True)

    return StepProfiler()


def summarise_profile(profile, wall_seconds: float, steps: int, top: int = 10) -> dict:
    """Per step: wall ms, GPU-busy ms (the union of the device's kernel and copy intervals, so work overlapping on
    two streams counts once; user annotations, which span kernels, left out), device events, CPU operators."""
    from collections import Counter

    from torch.autograd import DeviceType

    device, host, spans = Counter(), Counter(), []
    host_events = 0
    for event in profile.events():
        if getattr(event, "is_user_annotation", False):
            continue
        if event.device_type == DeviceType.CUDA:
            device[event.name] += event.time_range.elapsed_us()
            spans.append((event.time_range.start, event.time_range.end))
        elif event.device_type == DeviceType.CPU:
            host[event.name] += event.self_cpu_time_total
            host_events += 1
    return {"wall_ms_per_step": round(wall_seconds * 1000 / steps, 2),
            "gpu_busy_ms_per_step": round(covered_microseconds(spans) / 1000 / steps, 2),
            "device_events_per_step": len(spans) // steps, "cpu_events_per_step": host_events // steps,
            "top": {"gpu": [(n, round(us / 1000 / steps, 3)) for n, us in device.most_common(top)],
                    "cpu self": [(n, round(us / 1000 / steps, 3)) for n, us in host.most_common(top)]}}


def covered_microseconds(spans: list[tuple[float, float]]) -> float:
    """The length of the union of ``spans`` (start, end)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


# The plain baselines' model, for their scripts (each a fresh process without Unsloth: `source` set before it):
# transformers + PEFT, the LoRA every benchmark trains (r 16 on every projection).
PLAIN_MODEL = r'''
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
gpu = torch.cuda.is_available()
if not gpu:  # TRL 1.15's fused log-prob head is Triton-only; borrow unsloth_zoo's CPU one (not Unsloth itself)
    os.environ["UNSLOTH_IS_PRESENT"] = "1"
    from unsloth_zoo.cpu.ops import patch_trl_fused_lm_head
    patch_trl_fused_lm_head()
reset_peak_memory()  # from before loading, as for ours
tok = AutoTokenizer.from_pretrained(source)
model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16 if gpu else torch.float32,
                                             device_map="cuda" if gpu else None)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
    target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]))
'''
