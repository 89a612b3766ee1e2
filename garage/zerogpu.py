"""Work that needs the GPU, as ZeroGPU (Hugging Face Spaces) requires it; elsewhere plain calls.

On ZeroGPU the GPU exists only inside functions decorated with ``spaces.GPU``, and each call runs in a forked
worker process (spaces 0.51: ``spaces/zero/wrappers.py``). What that asks of us:

- The functions are decorated when this module is imported, which app.py does at start-up: the Space reports its
  GPU functions when it launches, and each keeps one task id.
- Unsloth, and models, are loaded inside them only. Outside, ZeroGPU emulates CUDA on the importing thread alone,
  and Unsloth's import fails under the emulation.
- Arguments and results cross pickled; an exception crosses only as its class name (except ``gr.Error``), so our
  errors come back as ``Failed`` values and are raised again here, message and all.
- A generator's return value does not cross: the final answers are its last item.

Elsewhere (a GPU machine, a laptop) the same functions run in this process, undecorated.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass

from garage.errors import GarageError, unexpected

# GPU seconds each call asks for: ZeroGPU weighs them against the visitor's quota and ends a call that runs over.
PIECE_SECONDS = {"sft": (90, 2.5), "grpo": (120, 10.0)}  # (loading and compiling, each step): 60 SFT steps 240 s
CHAT_SECONDS = 120

logger = logging.getLogger("garage.zerogpu")


def on_zerogpu() -> bool:
    """A ZeroGPU Space, read as the ``spaces`` package reads it."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu(duration):
    """``spaces.GPU(duration=...)`` on ZeroGPU, else the function itself (``duration``: seconds, or a function of
    the call's arguments giving them)."""
    def decorate(func):
        if not on_zerogpu():
            return func
        import spaces

        return spaces.GPU(duration=duration)(func)

    return decorate


@dataclass
class Failed:
    """What went wrong inside a GPU call, said as the user should read it."""

    message: str


@dataclass
class Final:
    """A GPU generator's return value, sent as its last item."""

    value: object


def cuda_emulated() -> bool:
    """On ZeroGPU outside a GPU call: torch says CUDA is there, but it is only emulated."""
    return on_zerogpu() and not in_gpu_worker()


def in_gpu_worker() -> bool:
    """Inside a ZeroGPU call (its forked worker), where CUDA is real; False elsewhere."""
    try:
        from spaces.zero import wrappers
    except ImportError:
        return False
    return wrappers.forked


def _failure(exc: Exception, log=None) -> Failed:
    """``exc`` as the user should read it; a bug's trace to ``log`` (a run's) or the server log, without secrets."""
    if isinstance(exc, GarageError):
        return Failed(str(exc))
    from garage.keys import scrub_secrets
    from garage.errors import is_out_of_memory
    from garage.train.runner import explain_failure

    trace = scrub_secrets(traceback.format_exc())
    if log is not None:
        log(trace)
        return Failed(explain_failure(exc))
    logger.error("unexpected error in a GPU call\n%s", trace)
    if is_out_of_memory(exc):
        return Failed("Out of GPU memory: pick a smaller model, or fewer new tokens and rows.")
    return Failed(unexpected(exc))


def raise_failed(result):
    """``result``, unless the GPU call failed: then its message as a GarageError."""
    if isinstance(result, Failed):
        raise GarageError(result.message)
    return result


def piece_seconds(run, cfg, owner: str, piece_steps: int) -> int:
    start, per_step = PIECE_SECONDS["grpo" if cfg.method == "grpo" else "sft"]
    return int(start + per_step * piece_steps)


@gpu(piece_seconds)
def train_piece(run, cfg, owner: str, piece_steps: int):
    """One piece of a run (from its last checkpoint), in the GPU worker: a PieceResult or Failed."""
    from garage.train.runner import library_logs_to, piece_function

    try:
        run_piece = piece_function(cfg.method)  # Unsloth imported here: never in the main process on ZeroGPU
        with library_logs_to(run):
            # stop requests reach this process through the run folder (run.stop_requested)
            return run_piece(run, cfg, owner, None, piece_steps=piece_steps, log=run.log)
    except Exception as exc:  # noqa: BLE001 - said to the user as Failed, the trace in the run log
        return _failure(exc, run.log)


_visitors: dict = {}  # run id -> the gr.Request that started it, in memory only (it holds the visitor's token)
# spaces' titles for a GPU it did not give (quota, duration, queue): the run can go on later
REFUSALS = ("ZeroGPU quota exceeded", "ZeroGPU illegal duration", "ZeroGPU pending credits exceeded",
            "ZeroGPU queue timeout")


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


def run_piece(run, cfg, owner: str, piece_steps: int):
    """``train_piece`` in a GPU call: its PieceResult; a GarageError when it failed, or when ZeroGPU gave no GPU
    (quota, duration: a ``gr.Error`` raised before our code ran), then saying the run can go on."""
    from gradio.context import LocalContext

    visitor = _visitors.get(run.id)
    as_visitor = LocalContext.request.set(visitor) if visitor is not None else None  # what spaces reads
    try:
        result = train_piece(run, cfg, owner, piece_steps)
    except Exception as exc:
        import gradio as gr

        if isinstance(exc, gr.Error) and getattr(exc, "title", "") in REFUSALS:
            said = str(exc.message).strip().rstrip(".")
            raise GarageError(f"ZeroGPU gave no GPU: {said}. The run keeps its last checkpoint: press Resume to go "
                              "on from there.") from None
        raise
    finally:
        if as_visitor is not None:
            LocalContext.request.reset(as_visitor)
    return raise_failed(result)


@gpu(CHAT_SECONDS)
def compare_pieces(prompt: str, run_id: str | None, system_prompt: str, base_history, tuned_history, settings):
    """Yield (base text, tuned text) while both stream, then Final((base Answer, tuned Answer)), or Failed."""
    from garage.infer.compare import stream_compare

    try:
        stream = stream_compare(prompt, run_id, system_prompt=system_prompt, base_history=base_history,
                                tuned_history=tuned_history, settings=settings)
        while True:
            try:
                yield next(stream)
            except StopIteration as done:
                yield Final(done.value)
                return
    except Exception as exc:  # noqa: BLE001
        yield _failure(exc)


def stream_compare(prompt: str, run_id: str | None, *, system_prompt: str = "", base_history=None,
                   tuned_history=None, settings=None):
    """``garage.infer.compare.stream_compare`` where the GPU is: the same yields, the same return value."""
    if not on_zerogpu():
        from garage.infer import compare

        return (yield from compare.stream_compare(prompt, run_id, system_prompt=system_prompt,
                                                  base_history=base_history, tuned_history=tuned_history,
                                                  settings=settings))
    pieces = compare_pieces(prompt, run_id, system_prompt, base_history, tuned_history, settings)
    try:
        for item in pieces:
            if isinstance(raise_failed(item), Final):
                return item.value
            yield item
    finally:  # the user pressed Stop: end the GPU call now, not when the generator is collected
        pieces.close()


def call_seconds(seconds: int, func, *args, **kwargs) -> int:
    return seconds


@gpu(call_seconds)
def _on_gpu(seconds: int, func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return _failure(exc)


def call(func, *args, seconds: int = 120, **kwargs):
    """``func(*args, **kwargs)`` where the GPU is, asking for ``seconds`` of it (on ZeroGPU ``func`` must be a
    module-level function: it crosses to the worker pickled)."""
    if not on_zerogpu():
        return func(*args, **kwargs)
    return raise_failed(_on_gpu(seconds, func, *args, **kwargs))
