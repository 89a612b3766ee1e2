"""The app's GPU work on a ZeroGPU Space, run in its own process (``spaces`` patches torch process-wide): called by
tests/test_zerogpu.py, prints one JSON line of what happened.

Real: the ``spaces`` package (its decorator, scheduling over HTTP, the forked worker, pickling both ways) against
tests/fake_zerogpu.py. Not real: the two calls that move tensors onto the GPU (``spaces.zero.torch.init`` / ``move``)
are no-ops, because this machine has none; the work then runs on the worker's CPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_zerogpu import FakeZeroGPU  # noqa: E402


VISITOR_TOKEN = "e30." + "eyJ1c2VyIjoidmlzaXRvciJ9" + ".c2ln"  # a JWT as ZeroGPU's X-IP-Token header carries one


def visitor_request():
    """The gr.Request of a visitor's click on Start, as Gradio hands it to the handler."""
    import gradio as gr
    from starlette.requests import Request

    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(b"x-ip-token", VISITOR_TOKEN.encode())]}
    return gr.Request(request=Request(scope))


def main(data: str) -> dict:
    with FakeZeroGPU() as device:
        scratch = Path(os.environ["GARAGE_HOME"]) / "zerogpu"
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "cgroup").write_text("0::/garage-test\n")  # the container's cgroup, as a Space has one
        os.environ.update(SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL=device.url,
                          ZEROGPU_PROC_SELF_CGROUP_PATH=str(scratch / "cgroup"),
                          ZEROGPU_OFFLOAD_DIR=str(scratch / "tensors"))
        import spaces  # noqa: F401  first, as app.py does
        import spaces.zero.torch as zero_torch

        zero_torch.init = lambda *args, **kwargs: None
        zero_torch.move = lambda *args, **kwargs: None
        from garage import device as garage_device  # decorated on import, as app.py imports it at start-up
        from garage.infer.compare import stream_on_device
        from garage.config import TrainConfig
        from garage.jobs import service
        from garage.jobs.worker import get_worker
        from garage.ui.app import build_app, queued

        out = {"decorated": all(hasattr(f, "zerogpu") for f in (garage_device._on_gpu, garage_device._stream_on_gpu))}
        worker = get_worker()
        base = dict(model="tiny-gemma-3", dataset=data, learning_rate=2e-3, max_steps=4, chunk_steps=2,
                    per_device_train_batch_size=4, eval_fraction=0.0, gradient_checkpointing=False,
                    max_seq_length=128, save_steps=2)
        good = service.start_training(TrainConfig(**base), "local", request=visitor_request())
        bad = worker.submit(TrainConfig(**{**base, "dataset": data + ".missing"}), "local")
        assert worker.wait_idle(600), "the runs did not end in 600 s"
        for name, run_id in (("good", good), ("bad", bad)):
            status = worker.store.get(run_id).status()
            out[name] = {"state": status["state"], "step": status.get("step"), "reason": status.get("reason")}
        out["pieces_scheduled"] = len(device.calls("/schedule"))
        out["schedule"] = {k: device.calls("/schedule")[0].get(k) for k in ("cgroupPath", "durationSeconds", "token")}
        scheduled = len(device.calls("/schedule"))
        stream = stream_on_device("What colour is the sky?", worker.store.get(good), settings=None)
        texts = []
        try:
            while True:
                texts.append(next(stream))
        except StopIteration as done:
            base_answer, tuned_answer = done.value
        out["compare"] = {"streamed": len(texts), "base_tokens": base_answer.tokens,
                          "tuned_tokens": tuned_answer.tokens if tuned_answer else None,
                          "scheduled": len(device.calls("/schedule")) - scheduled}
        released = len(device.calls("/release"))
        early = stream_on_device("What colour is the sky?", worker.store.get(good), settings=None)
        next(early)
        early.close()  # the user pressed Stop after the first words: the GPU call ends, its GPU goes back
        deadline = time.time() + 30
        while len(device.calls("/release")) == released and time.time() < deadline:
            time.sleep(0.1)
        out["stopped_compare_released"] = len(device.calls("/release")) > released
        from garage.hub.export import merged_dir

        merged = merged_dir(worker.store.get(good))  # export's merge, in a GPU call
        out["merged"] = (merged / "config.json").exists()
        from garage.hub.examples import answer_examples

        examples, note = garage_device.call(answer_examples, worker.store.get(good), 2, 8)  # a pushed card's answers
        out["card_examples"] = {"answered": len(examples), "note": note}
        device.quota_left = 30  # a visitor out of GPU quota: the next piece is refused
        refused = worker.submit(TrainConfig(**base), "local")
        assert worker.wait_idle(300), "the refused run did not end"
        status = worker.store.get(refused).status()
        out["refused"] = {"state": status["state"], "reason": status.get("reason")}
        out["unsloth_in_main_process"] = "unsloth" in sys.modules
        out["queue_max_size"] = queued(build_app())._queue.max_size
        out["released"] = len(device.calls("/release"))
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
