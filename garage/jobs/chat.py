"""What Compare does with a user's runs: chat, eval rows and the accuracy evaluation, each on the device.

Each call resolves the run and checks the caller may use it (``garage.access``: a tuned model recites its owner's
training rows), checks the GPU has room next to a training job, and runs the work where the GPU is (one ZeroGPU
call on a ZeroGPU Space). ``user`` None is the command line, the machine's own.
"""

from __future__ import annotations

from garage import access, catalog, device
from garage.errors import GarageError
from garage.evaluation.evaluate import evaluate as run_evaluation
from garage.infer import compare
from garage.infer.engine import GenSettings, get_engine
from garage.jobs import service
from garage.jobs.worker import get_worker
from garage.offline_models import TINY_NAME

EVALUATE_SECONDS = 300  # GPU seconds an evaluation asks for on ZeroGPU


def usable_run(run_id: str | None, user: str | None):
    """The run ``user`` may chat with (with weights), or None for the base model alone."""
    if not run_id:
        return None
    return service.run_for(run_id, user, "use")


def check_gpu_room(base_model: str) -> None:
    """Chatting never breaks a training job: if the GPU lacks room while a job trains, say when it frees up."""
    if not device.has_gpu():
        return
    import torch  # only where a GPU is, and the worker has loaded torch already

    worker = get_worker()
    if worker.current is None or get_engine().holds(base_model):
        return
    free, _ = torch.cuda.mem_get_info()
    need = catalog.resolve(base_model).params_b * 2.2 * 2**30  # bf16 weights + KV cache margin
    if need > free:
        status = worker.store.get(worker.current).status()
        eta = f" in about {status['eta']:.0f} s" if status.get("eta") else " when it finishes"
        raise GarageError(f"The GPU is busy training run {worker.current} and has {free / 2**30:.1f} GiB free; "
                          f"{base_model} needs about {need / 2**30:.1f} GiB. It frees up{eta}.")


def stream(prompt: str, run_id: str | None, user: str | None, **kwargs):
    """Compare's stream for ``user``: (base text, tuned text) while both grow; returns the two Answers."""
    run = usable_run(run_id, user)
    check_gpu_room(run.config().model if run is not None else TINY_NAME)
    return (yield from compare.stream_on_device(prompt, run, **kwargs))


def chat(prompt: str, run_id: str | None, user: str | None, *, system_prompt: str = "",
         settings: GenSettings | None = None) -> dict:
    """Both full answers for one prompt."""
    run = usable_run(run_id, user)
    check_gpu_room(run.config().model if run is not None else TINY_NAME)
    return device.call(compare.chat_compare, prompt, run, system_prompt=system_prompt, settings=settings,
                       seconds=60)


def eval_examples(run_id: str, user: str | None, n: int = 5) -> list[dict]:
    """Base answer, tuned answer and reference for ``n`` of the run's eval rows (greedy)."""
    if not run_id:
        raise GarageError("Pick a fine-tuned run to compare on its eval rows.")
    return device.call(compare.eval_examples, usable_run(run_id, user), int(n))


def evaluate(run_or_model: str, user: str | None, dataset: str = "", n: int = 50) -> dict:
    """Accuracy of a run's base and tuned model (or of a model alone) on a held-out set; a named dataset is the
    caller's, and a run's report is written into it."""
    if not run_or_model:
        raise GarageError("Pick a fine-tuned run to evaluate.")
    try:
        target = get_worker().store.get(run_or_model)
    except GarageError:
        target = run_or_model  # a model name: evaluated alone
    else:
        access.require("use", target, user)
    return device.call(run_evaluation, target, dataset or None, int(n), owner=user or "local",
                       seconds=EVALUATE_SECONDS)
