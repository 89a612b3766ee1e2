"""The device: whether there is a GPU, giving memory back, and running work where the GPU is.

On a ZeroGPU Space (Hugging Face) the GPU exists only inside functions decorated with ``spaces.GPU``, and each call
runs in a forked worker process (spaces 0.51: ``spaces/zero/wrappers.py``). What that asks of us:

- The two GPU entry points here (``_on_gpu`` for a call, ``_stream_on_gpu`` for a generator) are decorated when this
  module is imported, which app.py does first at start-up: the Space reports its GPU functions when it launches.
- The work itself belongs to the layers above (a training piece, Compare's stream, an evaluation, a merge): they
  hand a module-level function to ``call`` or ``stream``, which crosses to the worker pickled by reference. This
  module imports none of them.
- Unsloth, and models, are loaded inside those calls only. Outside, ZeroGPU emulates CUDA on the importing thread
  alone, and Unsloth's import fails under the emulation (``cuda_emulated``).
- Arguments and results cross pickled; an exception crosses only as its class name (except ``gr.Error``), so our
  errors come back as ``Failed`` values and are raised again here, message and all.
- A generator's return value does not cross: the final answers are its last item (``Final``).
- A call asks for the GPU as a visitor (their quota): Gradio's request of the click, or, on the worker thread, the
  request remembered for a run (``remember_visitor``).

Elsewhere (a GPU machine, a laptop) the same calls run in this process, undecorated.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import traceback
from dataclasses import dataclass

from garage.errors import GarageError, is_out_of_memory, unexpected
from garage.secrecy import scrub_secrets

logger = logging.getLogger("garage.device")
# spaces' titles for a GPU it did not give (quota, duration, queue): the work can go on later
REFUSALS = ("ZeroGPU quota exceeded", "ZeroGPU illegal duration", "ZeroGPU pending credits exceeded",
            "ZeroGPU queue timeout")


def on_zerogpu() -> bool:
    """A ZeroGPU Space, read as the ``spaces`` package reads it."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def in_gpu_worker() -> bool:
    """Inside a ZeroGPU call (its forked worker), where CUDA is real; False elsewhere."""
    try:
        from spaces.zero import wrappers
    except ImportError:
        return False
    return wrappers.forked


def cuda_emulated() -> bool:
    """On ZeroGPU outside a GPU call: torch says CUDA is there, but it is only emulated."""
    return on_zerogpu() and not in_gpu_worker()


def has_gpu() -> bool:
    """A GPU this code can use now: on ZeroGPU only inside a GPU call (outside, CUDA is only emulated)."""
    if cuda_emulated():
        return False
    import torch  # here, not at the top: the page serves without torch

    return torch.cuda.is_available()


def gpu_count() -> int:
    """How many GPUs this process sees (CUDA_VISIBLE_DEVICES applies); 0 without one, and on ZeroGPU outside a
    GPU call."""
    if not has_gpu():
        return 0
    import torch  # here, not at the top: the page serves without torch

    return torch.cuda.device_count()


def gpus_present() -> int:
    """The NVIDIA GPUs this machine shows, as CUDA_VISIBLE_DEVICES narrows them, without loading torch (the Train
    tab asks while the page is built; ``gpu_count`` is the answer training acts on)."""
    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return found
    return min(found, len([entry for entry in listed.split(",") if entry.strip() not in ("", "-1")]))


# GARAGE_CPU_PROCESSES=1: on a machine without a GPU, ``gpus: N`` trains in N CPU processes (gloo), the same code
# path as N GPUs (NCCL). How the tests, and anyone without several GPUs, rehearse a several-GPU run.
CPU_PROCESSES = "GARAGE_CPU_PROCESSES"


def cpu_processes_allowed() -> bool:
    return os.environ.get(CPU_PROCESSES, "").lower() in ("1", "true", "yes")


def free_memory() -> None:
    """Give back what dropped models and trainers held: Python's garbage, then the GPU allocator's cache."""
    gc.collect()
    if has_gpu():
        import torch

        torch.cuda.empty_cache()


# --- running work where the GPU is --------------------------------------------------------------------------

@dataclass
class Failed:
    """What went wrong inside a GPU call, said as the user should read it."""

    message: str


@dataclass
class Final:
    """A GPU generator's return value, sent as its last item."""

    value: object


class NoGpu(GarageError):
    """ZeroGPU gave no GPU (quota, duration, queue): raised before the work ran, so it can be tried again."""


def failure(exc: Exception) -> Failed:
    """``exc`` as the user should read it; a bug's trace to the server log, without secrets."""
    if isinstance(exc, GarageError):
        return Failed(str(exc))
    logger.error("unexpected error in a GPU call\n%s", scrub_secrets(traceback.format_exc()))
    if is_out_of_memory(exc):
        return Failed("Out of GPU memory: pick a smaller model, or fewer new tokens and rows.")
    return Failed(unexpected(exc))


def raise_failed(result):
    """``result``, unless the GPU call failed: then its message as a GarageError."""
    if isinstance(result, Failed):
        raise GarageError(result.message)
    return result


def gpu(duration):
    """``spaces.GPU(duration=...)`` on ZeroGPU, else the function itself (``duration``: seconds, or a function of
    the call's arguments giving them)."""
    def decorate(func):
        if not on_zerogpu():
            return func
        import spaces  # only on ZeroGPU: elsewhere the package is not needed

        return spaces.GPU(duration=duration)(func)

    return decorate


def _seconds(seconds: int, func, *args, **kwargs) -> int:
    return seconds


@gpu(_seconds)
def _on_gpu(seconds: int, func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - crosses back as Failed (only a class name would cross)
        return failure(exc)


@gpu(_seconds)
def _stream_on_gpu(seconds: int, func, *args, **kwargs):
    """Yield what ``func``'s generator yields, then Final(its return value), or Failed."""
    try:
        stream = func(*args, **kwargs)
        while True:
            try:
                yield next(stream)
            except StopIteration as done:
                yield Final(done.value)
                return
    except Exception as exc:  # noqa: BLE001
        yield failure(exc)


@contextlib.contextmanager
def _as_visitor(visitor, seconds: int):
    """ZeroGPU reads whose quota a call draws on from Gradio's request context; its refusals become NoGpu."""
    from gradio.context import LocalContext  # on ZeroGPU only, where gradio serves the app anyway

    token = LocalContext.request.set(visitor) if visitor is not None else None
    try:
        yield
    except Exception as exc:
        import gradio as gr

        if isinstance(exc, gr.Error) and getattr(exc, "title", "") in REFUSALS:
            raise NoGpu(f"ZeroGPU gave no GPU: {str(exc.message).strip().rstrip('.')}.") from None
        raise
    finally:
        if token is not None:
            LocalContext.request.reset(token)


def call(func, *args, seconds: int = 120, visitor=None, **kwargs):
    """``func(*args, **kwargs)`` where the GPU is, asking for ``seconds`` of it as ``visitor`` (default: the request
    being served). On ZeroGPU ``func`` must be a module-level function: it crosses to the worker pickled; one that
    wants its failures said its own way (a training piece, into its run's log) returns a ``Failed`` itself."""
    if not on_zerogpu():
        return func(*args, **kwargs)
    with _as_visitor(visitor, seconds):
        result = _on_gpu(seconds, func, *args, **kwargs)
    return raise_failed(result)


def stream(func, *args, seconds: int = 120, **kwargs):
    """``func``'s generator where the GPU is: the same yields, the same return value."""
    if not on_zerogpu():
        return (yield from func(*args, **kwargs))
    with _as_visitor(None, seconds):
        pieces = _stream_on_gpu(seconds, func, *args, **kwargs)
        try:
            for item in pieces:
                if isinstance(raise_failed(item), Final):
                    return item.value
                yield item
        finally:  # the user pressed Stop: end the GPU call now, not when the generator is collected
            pieces.close()


# --- whose quota a run's pieces draw on -----------------------------------------------------------------------

_visitors: dict = {}  # run id -> the gr.Request that started it, in memory only (it holds the visitor's token)


def remember_visitor(run_id: str, request) -> None:
    """On ZeroGPU a run's pieces ask for the GPU as the visitor who started or resumed it (their quota, not the
    Space's): their pieces run on the worker thread, where ZeroGPU finds no request of its own. The worker calls
    this for the run's owner only, before the run is queued."""
    if on_zerogpu() and request is not None:
        _visitors[run_id] = request


def visitor_of(run_id: str):
    return _visitors.get(run_id)


def forget_visitor(run_id: str, request) -> None:
    """Forget ``request`` for the run, unless a Resume has replaced it since (the run's next start needs that)."""
    if request is not None and _visitors.get(run_id) is request:
        _visitors.pop(run_id, None)
